package goredis

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// read is a home's reader: it delivers messages, wakes the Adds and
// Removes waiting for the server's replies, and notices what the server
// took away, until the home is closed.
func (s *channelSub) read(h *home) {
	defer close(h.done)
	ctx := s.c.tag(context.Background()) // no deadline: wait for messages until closed
	failures := 0
	for {
		msg, err := h.ps.Receive(ctx)
		if s.closing.Load() {
			return
		}
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				s.homeClosed(h)
				return
			}
			if isServerError(err) {
				s.refused(h, err)
				continue
			}
			// go-redis has dropped the connection; the next Receive dials
			// again and subscribes what it knows. Back off while that fails.
			failures++
			s.lost(h, err)
			t := time.NewTimer(backoff(failures))
			select {
			case <-s.workCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		failures = 0
		switch m := msg.(type) {
		case *redis.Message:
			s.deliver(h, m)
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				s.subscribed(h, m.Channel)
			case "unsubscribe", "sunsubscribe":
				s.unsubscribed(h, m.Channel)
			}
		}
	}
}

// deliver hands m to the handler if its channel is still subscribed on h:
// after a Remove, or a move to another master, a message still in flight
// on the old connection is not delivered.
func (s *channelSub) deliver(h *home, m *redis.Message) {
	s.mu.Lock()
	st := s.chans[m.Channel]
	ok := st != nil && st.home == h && !s.closing.Load()
	if ok {
		h.busy = m.Channel
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	s.h(backend.Message{Channel: m.Channel, Payload: m.Payload})
	s.mu.Lock()
	h.busy = ""
	if h.idle != nil {
		close(h.idle)
		h.idle = nil
	}
	s.mu.Unlock()
}

// subscribed takes the server's confirmation of ch on h.
func (s *channelSub) subscribed(h *home, ch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.chans[ch]
	if st == nil || st.home != h {
		return // removed or moved since
	}
	if st.state == confirmed {
		// Confirmed twice: go-redis subscribed everything again on a new
		// connection this reader did not see fail (a write found the old
		// one broken and dialed). The other channels' confirmations follow.
		s.joinBatch(st, s.lose(h, st))
	}
	st.state = confirmed
	for _, w := range st.waiters {
		w <- nil
	}
	st.waiters = nil
	if b := st.batch; b != nil {
		b.confirmed++
		s.leaveBatch(st)
	}
	h.down.Store(nil)
}

// unsubscribed takes an unsubscribe reply for ch on h: a Remove's, or,
// for sharded pub/sub, the server's own notice that it dropped the channel
// because its slot is no longer served there (a migration, a failover).
func (s *channelSub) unsubscribed(h *home, ch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ws := h.leaving[ch]; len(ws) > 0 {
		close(ws[0])
		if len(ws) == 1 {
			delete(h.leaving, ch)
		} else {
			h.leaving[ch] = ws[1:]
		}
		return
	}
	st := s.chans[ch]
	if st == nil || st.home != h || !s.sharded {
		return
	}
	if s.moveBatch == nil {
		s.moveBatch = &batch{}
	}
	st.state = pending
	s.joinBatch(st, s.moveBatch)
	s.toMove[ch] = struct{}{}
	s.kickNow()
}

// lost takes a failure of h's connection.
func (s *channelSub) lost(h *home, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.dropped {
		return // closed on purpose
	}
	if h.n > 0 {
		s.c.maybeReload(err)
		h.down.Store(&err)
	}
	// The connection is gone with the replies it owed: a Remove waiting
	// for one is done, since go-redis forgot its channels and does not
	// subscribe them on the next connection.
	for _, ws := range h.leaving {
		for _, w := range ws {
			close(w)
		}
	}
	clear(h.leaving)
	s.lose(h, nil)
	if s.perNode && h.n > 0 {
		// Perhaps the master died: the next rebalance checks who serves
		// these slots now.
		s.checkOwners = true
		s.kickNow()
	}
}

// refused takes an error reply on h: the refusal of a subscribe.
func (s *channelSub) refused(h *home, err error) {
	msg := err.Error()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perNode {
		if slot, ok := movedSlot(msg); ok {
			// Sent to a node that no longer serves the slot: go to the one
			// that does, once the slot map says which (retried, as the map
			// may lag behind).
			for ch, st := range s.chans {
				if st.home == h && st.slot == slot && st.state != confirmed {
					s.toMove[ch] = struct{}{}
				}
			}
			s.retryLater()
			return
		}
		if strings.HasPrefix(msg, "CROSSSLOT") {
			// go-redis resubscribes everything in one SSUBSCRIBE after a
			// reconnect, which a cluster refuses when the channels span
			// slots: send them again slot by slot. (Lost already, unless
			// the reader did not see the old connection fail.)
			s.lose(h, nil)
			s.resend[h] = struct{}{}
			s.kickNow()
			return
		}
	}
	// The reply does not say which channels it refuses: every channel of h
	// still waiting fails.
	again := false
	for _, st := range s.chans {
		if st.home != h || st.state != pending {
			continue
		}
		st.state = failed
		for _, w := range st.waiters {
			w <- &backend.RedisError{Msg: msg}
		}
		st.waiters = nil
		again = again || st.batch != nil
	}
	if again {
		// Channels lost with a connection, refused on the next one (an ACL
		// changed, say): nobody waits for them, so retry later, as a
		// pattern subscription does.
		h.down.Store(&err)
		s.retryLater()
	}
}

// homeClosed takes the end of h's PubSub: on purpose (Close, a rebalance
// dropping an empty home), or because go-redis closed the node client
// under it, after which its channels need another home.
func (s *channelSub) homeClosed(h *home) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.dropped || s.closed {
		return
	}
	h.dead = true
	if s.homes[h.addr] == h {
		delete(s.homes, h.addr)
	}
	for _, ws := range h.leaving {
		for _, w := range ws {
			close(w)
		}
	}
	clear(h.leaving)
	err := error(redis.ErrClosed)
	h.down.Store(&err)
	for ch, st := range s.chans {
		if st.home == h {
			if st.state == confirmed {
				if s.moveBatch == nil {
					s.moveBatch = &batch{}
				}
				s.joinBatch(st, s.moveBatch)
			}
			st.state = pending
			s.toMove[ch] = struct{}{}
		}
	}
	s.kickNow()
}

// lose marks the confirmed channels of h but except as to be confirmed
// again, in one batch, which it returns. s.mu is held.
func (s *channelSub) lose(h *home, except *channel) *batch {
	b := &batch{}
	for _, st := range s.chans {
		if st.home == h && st != except && st.state == confirmed {
			st.state = pending
			s.joinBatch(st, b)
		}
	}
	return b
}

// joinBatch makes st part of b (and of no other). s.mu is held.
func (s *channelSub) joinBatch(st *channel, b *batch) {
	s.leaveBatch(st)
	st.batch = b
	b.left++
}

// leaveBatch takes st out of its batch, which counts as a resubscription
// once none is left and one was confirmed. s.mu is held.
func (s *channelSub) leaveBatch(st *channel) {
	b := st.batch
	if b == nil {
		return
	}
	st.batch = nil
	b.left--
	if b.left == 0 && b.confirmed > 0 {
		s.resubs.Add(1)
	}
}

// movedSlot parses a MOVED reply ("MOVED 3999 127.0.0.1:6381").
func movedSlot(msg string) (int, bool) {
	f := strings.Fields(msg)
	if len(f) != 3 || f[0] != "MOVED" {
		return 0, false
	}
	slot, err := strconv.Atoi(f[1])
	return slot, err == nil
}
