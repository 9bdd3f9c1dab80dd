package presence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luacall"
)

// reapBatch is how many rooms one pipeline of reap scripts covers, and
// reapPerRoom how many candidate conns one script call examines, so one
// call never blocks Redis for long.
const (
	reapBatch   = 64
	reapPerRoom = 256
)

func (s *Service) reapLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.ReaperInterval)
	defer t.Stop()
	passes := 0
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(s.cfg.ReaperInterval, 5*time.Second))
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		n, err := s.Reap(ctx)
		if passes++; err == nil && passes%userRepairEvery == 0 {
			if fixed, err := s.RepairUsers(ctx); err != nil && !s.closed.Load() {
				s.log.Warn("presence: user index repair failed", "err", err, "removed", fixed)
			}
		}
		cancel()
		if err != nil && s.closed.Load() {
			return
		}
		if err != nil {
			s.log.Warn("presence: reaper pass failed", "err", err, "removed", n)
		} else if n > 0 {
			s.log.Debug("presence: reaper removed expired connections", "removed", n)
		}
	}
}

// Reap runs one reaper pass now and returns how many conns it removed: in
// every active room, conns whose hash expired and whose last heartbeat is
// older than the lookback are removed as by Leave, with a leave event each.
// Each room is handled by one script in the room's slot, so reapers on many
// nodes may run at once: each conn is removed, and its leave published,
// exactly once, and a conn that heartbeats meanwhile is never removed.
func (s *Service) Reap(ctx context.Context) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	total := 0
	defer func() {
		s.ctr.reaped.Add(uint64(total))
		if h := s.cfg.Hooks.Reaped; h != nil && total > 0 {
			h(total)
		}
	}()
	err := s.eachBatch(ctx, s.keys.ActiveRooms(), "reaper", func(rooms []string) error {
		removed, err := s.reapRooms(ctx, rooms)
		total += removed
		return err
	})
	return total, err
}

// eachBatch SSCANs the set key, 500 members per page, and calls fn with
// them reapBatch at a time, until fn fails or the scan ends.
func (s *Service) eachBatch(ctx context.Context, key, what string, fn func([]string) error) error {
	cursor := "0"
	for {
		r, err := s.client.Do(ctx, backend.K("SSCAN", key, cursor, "COUNT", "500"))
		if err != nil {
			return err
		}
		if err := r[0].Error(); err != nil {
			return err
		}
		page, err := r[0].AsArray()
		if err != nil || len(page) != 2 {
			return fmt.Errorf("presence: %s: unexpected SSCAN reply %v", what, r[0])
		}
		cursor, _ = page[0].AsString()
		members, _ := page[1].AsStrings()
		for len(members) > 0 {
			n := min(len(members), reapBatch)
			if err := fn(members[:n]); err != nil {
				return err
			}
			members = members[n:]
		}
		if cursor == "0" {
			return nil
		}
	}
}

func (s *Service) reapRooms(ctx context.Context, rooms []string) (int, error) {
	k := s.keys
	now := s.nowMs()
	nowS := strconv.FormatInt(now, 10)
	cutoff := strconv.FormatInt(now-s.cfg.ReaperLookback.Milliseconds(), 10)
	total := 0
	for round := 0; len(rooms) > 0 && round < 64; round++ {
		evals := make([]backend.Eval, len(rooms))
		for i, room := range rooms {
			evals[i] = luacall.Reap{
				Conns: k.Conns(room), Members: k.Members(room), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room),
				UserConns: k.UserConns(room), Gone: k.Gone(room), Seq: k.Seq(room),
				Room: room, NowMs: nowS, CutoffMs: cutoff, Events: k.RoomEvents(room), ConnPrefix: k.ConnPrefix(room),
				Limit: strconv.Itoa(reapPerRoom), Pub: s.publishCmd(),
			}.Eval()
		}
		replies, err := s.scripts.RunMany(ctx, evals...)
		if err != nil {
			return total, err
		}
		var more []string
		reaped := userRemovals{}
		for i, r := range replies {
			rep, err := luacall.DecodeReap(r)
			if err != nil {
				return total, fmt.Errorf("presence: reaper: room %q: %w", rooms[i], err)
			}
			total += int(rep.Removed)
			reaped.addReaped(rooms[i], rep.Reaped)
			switch {
			case rep.More && rep.Removed > 0:
				more = append(more, rooms[i])
			case rep.Remaining == 0:
				if err := s.dropIfEmpty(ctx, rooms[i]); err != nil {
					return total, err
				}
			}
		}
		if _, err := s.removeUserEntries(ctx, reaped); err != nil {
			return total, fmt.Errorf("presence: reaper: user index: %w", err)
		}
		rooms = more
	}
	return total, nil
}

// dropIfEmpty removes room from active_rooms, then looks again: active_rooms
// lives in another slot than the room, so no script can do both atomically.
// A join adds its conn (script) before it adds the room (SADD); if that
// SADD landed before our SREM, its conn is visible to our second look and we
// put the room back; if after, the room is back anyway.
func (s *Service) dropIfEmpty(ctx context.Context, room string) error {
	if _, err := s.client.Do(ctx, backend.K("SREM", s.keys.ActiveRooms(), room)); err != nil {
		return err
	}
	return s.lookAgain(ctx, room)
}

// lookAgain is dropIfEmpty's second half, after its SREM.
func (s *Service) lookAgain(ctx context.Context, room string) error {
	k := s.keys
	r, err := s.client.Do(ctx, backend.K("SCARD", k.Conns(room)))
	if n, nerr := r0Int(r, err); nerr != nil || n > 0 {
		// Not known to be empty: put it back. An empty room in the list
		// costs one script call per pass; a live room missing from it would
		// never be reaped.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, err := s.client.Do(ctx, backend.K("SADD", k.ActiveRooms(), room))
		return errors.Join(nerr, err)
	}
	return nil
}

func r0Int(r []backend.Reply, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	return r[0].AsInt()
}
