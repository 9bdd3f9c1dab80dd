package presence

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/realtime-message/presence/backend"
)

// MaxRoomsPage bounds the page ActiveRooms returns, so a caller (the
// dashboard, an operator's script) cannot make one call walk a set of
// millions of rooms.
const MaxRoomsPage = 500

// RoomCount is one room of the active-rooms index with its counts as
// stored: conns that expired but were not reaped yet still count, until
// the reaper's next pass.
type RoomCount struct {
	Room  string `json:"room"`
	Conns int64  `json:"conns"`
	Users int64  `json:"users"`
}

// ActiveRooms returns a page of the rooms the reaper watches (the
// active-rooms index, a set) with their counts, and the cursor of the next
// page: "0" when the walk is over. Start with cursor "" or "0". It walks
// the index with SSCAN, never KEYS, so it never blocks Redis for long;
// as with any SSCAN walk, a room present for the whole walk is returned
// at least once, rooms added or removed meanwhile may or may not be, and
// a room may repeat across pages. count (at most MaxRoomsPage) is the
// page size asked of Redis, not an exact one: a small set comes back in
// one page. The rooms of a page are sorted by name.
func (s *Service) ActiveRooms(ctx context.Context, cursor string, count int) ([]RoomCount, string, error) {
	if err := s.checkOpen(); err != nil {
		return nil, "", err
	}
	if cursor == "" {
		cursor = "0"
	}
	if strings.Trim(cursor, "0123456789") != "" || len(cursor) > 20 {
		return nil, "", invalid("rooms cursor %q is not a cursor ActiveRooms returned", cursor)
	}
	if count < 1 || count > MaxRoomsPage {
		return nil, "", invalid("rooms page size %d: want 1 to %d", count, MaxRoomsPage)
	}
	key := s.keys.ActiveRooms()
	var rooms []string
	// SSCAN may answer an empty page with a cursor to go on; a few more
	// calls give the caller something to show, bounded so one call stays
	// short whatever the set looks like.
	for range 16 {
		r, err := s.client.Do(ctx, backend.K("SSCAN", key, cursor, "COUNT", fmt.Sprint(count)))
		if err == nil {
			err = r[0].Error()
		}
		if err != nil {
			return nil, "", fmt.Errorf("presence: active rooms: %w", err)
		}
		page, err := r[0].AsArray()
		if err != nil || len(page) != 2 {
			return nil, "", fmt.Errorf("presence: active rooms: unexpected SSCAN reply %v", r[0])
		}
		cursor, _ = page[0].AsString()
		got, _ := page[1].AsStrings()
		rooms = append(rooms, got...)
		if cursor == "0" || len(rooms) >= count {
			break
		}
	}
	slices.Sort(rooms)
	rooms = slices.Compact(rooms)
	if len(rooms) == 0 {
		return []RoomCount{}, cursor, nil
	}
	// One pipeline for every room's counts: each command has one key, so
	// the rooms' different cluster slots are fine.
	cmds := make([]backend.Cmd, 0, 2*len(rooms))
	for _, room := range rooms {
		cmds = append(cmds, backend.K("SCARD", s.keys.Conns(room)), backend.K("SCARD", s.keys.Members(room)))
	}
	r, err := s.client.Do(ctx, cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	if err != nil {
		return nil, "", fmt.Errorf("presence: active rooms: %w", err)
	}
	out := make([]RoomCount, len(rooms))
	for i, room := range rooms {
		out[i].Room = room
		out[i].Conns, _ = r[2*i].AsInt()
		out[i].Users, _ = r[2*i+1].AsInt()
	}
	return out, cursor, nil
}

// ChannelLocks returns the held locks of a channel, sorted by name. Locks
// are found through the channel's lock index, which the lock scripts keep
// (locks of another deployment's older version, written without it, are
// not seen); a lock that expired is not returned.
func (s *Service) ChannelLocks(ctx context.Context, ch Channel) ([]Lock, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := s.checkChannel(ch); err != nil {
		return nil, err
	}
	r, err := s.client.Do(ctx, backend.K("HKEYS", s.keys.LockIndex(ch.Type, ch.Name)))
	if err == nil {
		err = r[0].Error()
	}
	if err != nil {
		return nil, fmt.Errorf("presence: channel locks: %w", err)
	}
	names, err := r[0].AsStrings()
	if err != nil {
		return nil, fmt.Errorf("presence: channel locks: unexpected reply %v", r[0])
	}
	if len(names) == 0 {
		return []Lock{}, nil
	}
	slices.Sort(names)
	now := s.cfg.Now()
	cmds := make([]backend.Cmd, 0, 2*len(names))
	for _, n := range names {
		k := s.keys.Lock(ch.Type, ch.Name, n)
		cmds = append(cmds, backend.K("GET", k), backend.K("PTTL", k))
	}
	r, err = s.client.Do(ctx, cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	if err != nil {
		return nil, fmt.Errorf("presence: channel locks: %w", err)
	}
	out := []Lock{}
	for i, n := range names {
		if r[2*i].IsNil() {
			continue
		}
		owner, err1 := r[2*i].AsString()
		left, err2 := r[2*i+1].AsInt()
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("presence: channel locks: unexpected replies %v %v", r[2*i], r[2*i+1])
		}
		if left == -2 { // expired between GET and PTTL
			continue
		}
		l := Lock{Name: n, Owner: owner}
		if left >= 0 {
			l.ExpiresAt = now.Add(time.Duration(left) * time.Millisecond)
		}
		out = append(out, l)
	}
	return out, nil
}
