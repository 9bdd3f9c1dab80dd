package goredis

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// A channel subscription's worker subscribes again what the server
// dropped or refused, and for sharded pub/sub on a cluster keeps each
// channel on the master serving its slot: when the server pushes
// SUNSUBSCRIBE (its slot migrated, or its master was demoted), when an
// SSUBSCRIBE meets MOVED, when a master's connection fails, and every
// masterRefresh in case a master died without a word.

// work runs rebalance when kicked, and periodically for per-master homes,
// until Close.
func (s *channelSub) work() {
	var tick <-chan time.Time
	if s.perNode {
		t := time.NewTicker(masterRefresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		periodic := false
		select {
		case <-s.workCtx.Done():
			return
		case <-s.kick:
		case <-tick:
			periodic = true
		}
		s.rebalance(periodic)
	}
}

// kickNow wakes the worker. Safe with s.mu held.
func (s *channelSub) kickNow() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// retryLater kicks the worker after a backoff growing with consecutive
// retries. s.mu is held.
func (s *channelSub) retryLater() {
	if s.timer != nil || s.closed {
		return
	}
	s.retry++
	s.timer = time.AfterFunc(max(backoff(s.retry), 50*time.Millisecond), func() {
		s.mu.Lock()
		s.timer = nil
		s.mu.Unlock()
		s.kickNow()
	})
}

// rebalance sends again what must be, and moves channels to the master
// serving their slot.
func (s *channelSub) rebalance(periodic bool) {
	ctx, cancel := context.WithTimeout(s.workCtx, reloadTimeout)
	defer cancel()
	s.mu.Lock()
	move, resend := s.toMove, s.resend
	s.toMove, s.resend = make(map[string]struct{}), make(map[*home]struct{})
	s.moveBatch = nil // later notices start another
	check := s.checkOwners || periodic
	s.checkOwners = false
	idle := len(s.chans) == 0
	s.mu.Unlock()

	requeue := func() {
		s.mu.Lock()
		for ch := range move {
			s.toMove[ch] = struct{}{}
		}
		for h := range resend {
			s.resend[h] = struct{}{}
		}
		s.checkOwners = s.checkOwners || check && !periodic
		s.retryLater()
		s.mu.Unlock()
	}
	if s.perNode && !idle && (len(move) > 0 || check) {
		// go-redis reloads its slot map lazily; ForEachMaster reloads it now.
		err := s.c.cluster.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil })
		if err != nil {
			if s.workCtx.Err() == nil {
				requeue()
			}
			return
		}
	}

	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	subs, unsubs := plan{}, plan{}
	owners := make(map[int]*home)
	var moved *batch
	for ch, st := range s.chans {
		_, flagged := move[ch]
		_, again := resend[st.home]
		target := st.home
		if st.home.dead || s.perNode && (flagged || check) {
			if h := s.ownerHome(ctx, ch, st.slot, owners); h != nil {
				target = h
			}
		}
		switch {
		case target.dead:
			s.toMove[ch] = struct{}{} // no owner known yet
		case target != st.home:
			if !st.home.dead {
				unsubs.add(st.home, st.slot, ch)
			}
			st.home.n--
			st.home = target
			target.n++
			if st.state == confirmed {
				// Its old home is no longer its slot's master, and the
				// server said nothing: what it published meanwhile is lost.
				if moved == nil {
					moved = &batch{}
				}
				s.joinBatch(st, moved)
			}
			st.state = pending
			subs.add(target, st.slot, ch)
		case flagged, st.state == failed && st.batch != nil, again && st.state != confirmed:
			st.state = pending
			subs.add(st.home, st.slot, ch)
		}
	}
	var drop []*home
	for addr, h := range s.homes {
		if h.n == 0 && len(h.leaving) == 0 && h.busy == "" && (periodic || h.dead) {
			delete(s.homes, addr)
			h.dropped = true
			drop = append(drop, h)
		}
	}
	if len(s.toMove) > 0 {
		s.retryLater()
	}
	s.mu.Unlock()

	_ = s.send(ctx, unsubs, false) // best effort: the slot left, the server dropped them already
	if err := s.send(ctx, subs, true); err != nil {
		// send marked the unwritten ones failed; those lost before are
		// retried (failed with a batch), and so is a move.
		s.mu.Lock()
		for _, slots := range subs {
			for _, chans := range slots {
				for _, ch := range chans {
					if st := s.chans[ch]; st != nil && st.state == failed {
						s.toMove[ch] = struct{}{}
					}
				}
			}
		}
		s.retryLater()
		s.mu.Unlock()
	} else if len(move) == 0 && len(resend) == 0 {
		s.mu.Lock()
		if s.timer == nil && len(s.toMove) == 0 {
			s.retry = 0
		}
		s.mu.Unlock()
	}
	for _, h := range drop {
		s.closeHome(h, false)
	}
}

// ownerHome returns the home on the master serving slot (ch's), by the
// client's slot map, caching it in owners; nil if the map has no master
// for it. s.mu is held.
func (s *channelSub) ownerHome(ctx context.Context, ch string, slot int, owners map[int]*home) *home {
	if h, ok := owners[slot]; ok {
		return h
	}
	var h *home
	if !s.perNode {
		h = s.homeFor(ctx, nil)
	} else if node, err := s.c.cluster.MasterForKey(ctx, ch); err == nil {
		h = s.homeFor(ctx, node)
	}
	owners[slot] = h
	return h
}
