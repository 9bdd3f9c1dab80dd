package goredis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// Channel subscriptions (backend.ChannelSubscriber).
//
// go-redis's PubSub.Subscribe writes SUBSCRIBE and returns; the server's
// confirmation comes later, as a *redis.Subscription, to the goroutine that
// reads the connection. So Add leaves a waiter per channel before writing
// and the reader wakes it with the confirmation. Remove likewise waits for
// the server's unsubscribe reply: a connection delivers in order, so once
// the reader has that reply, every earlier message of the channel went to
// the handler and no later one comes.
//
// A subscription spreads its channels over "homes", each one go-redis
// PubSub (one connection) with its reading goroutine: one home for classic
// pub/sub (on a cluster SUBSCRIBE works on any node, the bus brings every
// PUBLISH), one for sharded pub/sub on a standalone server, and one per
// master for sharded pub/sub on a cluster, holding the channels of the
// slots that master serves (channelmove.go follows the slots).
// The handler runs on the home's reader: calls for one channel are
// sequential and in order, homes run in parallel.

// ErrShardedUnsupported reports a server without sharded pub/sub
// (SSUBSCRIBE, Redis 7+), such as the embedded server.
var ErrShardedUnsupported = errors.New("backend/goredis: the server has no sharded pub/sub (SSUBSCRIBE needs Redis 7 or later): use classic channels")

// SubscribeChannels implements backend.ChannelSubscriber. With sharded it
// first asks the server whether it knows SSUBSCRIBE, and fails with
// ErrShardedUnsupported if not. Add and Remove must not be called from h:
// they wait for the goroutine that runs it.
func (c *Client) SubscribeChannels(ctx context.Context, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	if h == nil {
		return nil, errors.New("backend/goredis: SubscribeChannels with a nil handler")
	}
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if sharded {
		if err := c.checkSharded(ctx); err != nil {
			return nil, err
		}
	}
	s := &channelSub{
		c:       c,
		sharded: sharded,
		perNode: sharded && c.cluster != nil,
		h:       h,
		chans:   make(map[string]*channel),
		homes:   make(map[string]*home),
		toMove:  make(map[string]struct{}),
		resend:  make(map[*home]struct{}),
		kick:    make(chan struct{}, 1),
	}
	s.workCtx, s.stopWork = context.WithCancel(c.tag(context.Background()))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		s.stopWork()
		return nil, backend.ErrClosed
	}
	c.subs[s] = struct{}{}
	s.wg.Go(s.work)
	return s, nil
}

// checkSharded asks the server whether it knows SSUBSCRIBE: COMMAND INFO
// answers one description, or nil for an unknown command. The embedded
// server answers its whole fixed command table whatever is asked, and knows
// no sharded pub/sub either. A server that refuses COMMAND (an ACL) is
// given the benefit of the doubt: Add then reports what SSUBSCRIBE does.
func (c *Client) checkSharded(ctx context.Context) error {
	r, err := c.Do(ctx, backend.C("COMMAND", nil, "INFO", "SSUBSCRIBE"))
	if err != nil {
		return fmt.Errorf("backend/goredis: SubscribeChannels: asking for SSUBSCRIBE: %w", err)
	}
	if r[0].Error() != nil {
		return nil
	}
	if len(r[0].Elems) != 1 || r[0].Elems[0].IsNil() {
		return ErrShardedUnsupported
	}
	return nil
}

// chanState is where a channel's subscription stands on its home.
type chanState uint8

const (
	pending   chanState = iota // subscribe sent (or to be sent again), not confirmed yet
	confirmed                  // the server confirmed it on the home's connection
	failed                     // the server refused it, or sending failed: Add sends it again
)

// channel is one channel added to a subscription.
type channel struct {
	home    *home
	slot    int // its cluster slot (per-master homes only; 0 otherwise)
	state   chanState
	waiters []chan error // Adds waiting for the confirmation
	batch   *batch       // the resubscription it is part of, if any
}

// batch is channels subscribed again after they were lost (a reconnect, a
// slot that moved): Resubscribed counts it once, when its last channel is
// confirmed, so that a message published after the count changed reaches
// every one of them.
type batch struct{ left, confirmed int }

// home is one go-redis PubSub of a subscription and its reader.
type home struct {
	addr    string // the master's address for per-master homes, else ""
	ps      *redis.PubSub
	n       int                        // channels homed here
	leaving map[string][]chan struct{} // Removes waiting for the server's unsubscribe reply
	busy    string                     // channel whose handler call is running
	idle    chan struct{}              // closed when that call returns, if a Remove waits for it
	dropped bool                       // closed on purpose: its reader's ErrClosed is no failure
	dead    bool                       // its PubSub was closed under it: its channels move
	down    atomic.Pointer[error]      // why its channels are not all live; nil while they are
	done    chan struct{}              // closed when the reader returned
}

// channelSub is a backend.ChannelSubscription.
type channelSub struct {
	c       *Client
	sharded bool // SSUBSCRIBE rather than SUBSCRIBE
	perNode bool // sharded on a cluster: one home per master
	h       backend.Handler

	closing  atomic.Bool   // Close began: no more handler calls
	resubs   atomic.Uint64 // Resubscribed
	once     sync.Once
	kick     chan struct{}   // wakes the worker
	workCtx  context.Context // the worker's and the readers' backoffs, canceled by Close
	stopWork context.CancelFunc
	wg       sync.WaitGroup // the worker

	// sendMu orders the commands written with the state changes they
	// follow: a Remove's UNSUBSCRIBE cannot overtake the SUBSCRIBE of the
	// Add before it. Taken before mu; writes only, no waiting for replies.
	sendMu sync.Mutex

	mu          sync.Mutex
	closed      bool
	chans       map[string]*channel
	homes       map[string]*home    // by master address ("" for the single home)
	toMove      map[string]struct{} // channels the server dropped: rebalance subscribes them again
	resend      map[*home]struct{}  // homes whose channels must be sent again, slot by slot
	moveBatch   *batch              // the channels toMove lost, counted together
	checkOwners bool                // a master's connection failed: rebalance checks the slot owners
	retry       int                 // consecutive rebalances that left work behind
	timer       *time.Timer         // the next retry of rebalance, if any
}

var (
	_ backend.ChannelSubscriber = (*Client)(nil)
	_ backend.SubscriptionState = (*channelSub)(nil)
	_ backend.Resubscriber      = (*channelSub)(nil)
)

// checkChannels refuses an empty channel name: nothing publishes there,
// it is a caller's bug.
func checkChannels(op string, channels []string) error {
	if slices.Contains(channels, "") {
		return fmt.Errorf("backend/goredis: %s: empty channel name", op)
	}
	return nil
}

// plan is the channels to send per home, per slot: a cluster refuses an
// SSUBSCRIBE whose channels are in different slots (CROSSSLOT).
type plan map[*home]map[int][]string

func (p plan) add(h *home, slot int, ch string) {
	if p[h] == nil {
		p[h] = make(map[int][]string)
	}
	p[h][slot] = append(p[h][slot], ch)
}

// Add implements backend.ChannelSubscription.
func (s *channelSub) Add(ctx context.Context, channels ...string) error {
	if err := checkChannels("Add", channels); err != nil {
		return err
	}
	ctx = s.c.tag(ctx)
	type waiter struct {
		ch string
		w  chan error
	}
	s.sendMu.Lock()
	owners, err := s.owners(ctx, channels)
	if err != nil {
		s.sendMu.Unlock()
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.sendMu.Unlock()
		return backend.ErrClosed
	}
	p := plan{}
	var waits []waiter
	for _, ch := range channels {
		st := s.chans[ch]
		switch {
		case st == nil:
			slot := 0
			if s.perNode {
				slot = backend.KeySlot(ch)
			}
			st = &channel{home: s.homeFor(ctx, owners[slot]), slot: slot}
			st.home.n++
			s.chans[ch] = st
			p.add(st.home, st.slot, ch)
		case st.state == failed:
			st.state = pending
			p.add(st.home, st.slot, ch)
		case st.state == confirmed:
			continue
		}
		w := make(chan error, 1)
		st.waiters = append(st.waiters, w)
		waits = append(waits, waiter{ch, w})
	}
	s.mu.Unlock()
	failedSend := s.send(ctx, p, true)
	s.sendMu.Unlock()

	drop := func(from []waiter) {
		s.mu.Lock()
		for _, w := range from {
			if st := s.chans[w.ch]; st != nil {
				st.waiters = slices.DeleteFunc(st.waiters, func(x chan error) bool { return x == w.w })
			}
		}
		s.mu.Unlock()
	}
	if failedSend != nil {
		drop(waits)
		return s.c.closedErr(fmt.Errorf("backend/goredis: subscribing: %w", annotate(ctx, failedSend)))
	}
	var first error
	for i, w := range waits {
		select {
		case err := <-w.w:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			drop(waits[i:])
			return fmt.Errorf("backend/goredis: waiting for the server to confirm %d channels: %w", len(waits)-i, ctx.Err())
		}
	}
	return first
}

// owners returns the master of each channel's slot, for per-master homes;
// nil otherwise.
func (s *channelSub) owners(ctx context.Context, channels []string) (map[int]*redis.Client, error) {
	if !s.perNode {
		return nil, nil
	}
	owners := make(map[int]*redis.Client)
	for _, ch := range channels {
		slot := backend.KeySlot(ch)
		if owners[slot] != nil {
			continue
		}
		node, err := s.c.cluster.MasterForKey(ctx, ch)
		if err != nil {
			return nil, s.c.closedErr(wrapErr(ctx, err))
		}
		owners[slot] = node
	}
	return owners, nil
}

// homeFor returns the home on node (nil: the subscription's single home),
// opening it if needed. s.mu is held.
func (s *channelSub) homeFor(ctx context.Context, node *redis.Client) *home {
	addr := ""
	if node != nil {
		addr = node.Options().Addr
	}
	if h := s.homes[addr]; h != nil {
		return h
	}
	h := &home{addr: addr, leaving: make(map[string][]chan struct{}), done: make(chan struct{})}
	// No channel yet: go-redis connects on the first write or read.
	switch {
	case node != nil:
		h.ps = node.SSubscribe(ctx)
	case s.sharded:
		h.ps = s.c.rc.SSubscribe(ctx)
	default:
		h.ps = s.c.rc.Subscribe(ctx)
	}
	s.homes[addr] = h
	go s.read(h)
	return h
}

// sendAttempts bounds the writes of one command: after a broken
// connection go-redis dials again and resubscribes what it knew, but not
// the channels of the write that failed, so these are written again.
const sendAttempts = 3

// send writes p's subscribe (or unsubscribe) commands, one per home and
// slot, and returns the first failure to write. s.sendMu is held.
func (s *channelSub) send(ctx context.Context, p plan, subscribe bool) error {
	var first error
	for h, slots := range p {
		for _, chans := range slots {
			var err error
			for attempt := 1; attempt <= sendAttempts; attempt++ {
				err = s.write(ctx, h.ps, subscribe, chans)
				if err == nil || isServerError(err) || errors.Is(err, redis.ErrClosed) || ctx.Err() != nil {
					break
				}
			}
			if err != nil {
				s.c.maybeReload(err)
				if subscribe {
					s.markFailed(h, chans)
				}
				if first == nil {
					first = err
				}
			}
		}
	}
	return first
}

func (s *channelSub) write(ctx context.Context, ps *redis.PubSub, subscribe bool, chans []string) error {
	switch {
	case subscribe && s.sharded:
		return ps.SSubscribe(ctx, chans...)
	case subscribe:
		return ps.Subscribe(ctx, chans...)
	case s.sharded:
		return ps.SUnsubscribe(ctx, chans...)
	default:
		return ps.Unsubscribe(ctx, chans...)
	}
}

// markFailed marks chans of h that are still pending as failed: their
// subscribe was not written, so nothing will confirm them.
func (s *channelSub) markFailed(h *home, chans []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range chans {
		if st := s.chans[ch]; st != nil && st.home == h && st.state == pending {
			st.state = failed
		}
	}
}

// errRemoved ends the wait of an Add whose channel a concurrent Remove took.
var errRemoved = errors.New("backend/goredis: channel removed while it was being added")

// Remove implements backend.ChannelSubscription.
func (s *channelSub) Remove(ctx context.Context, channels ...string) error {
	if err := checkChannels("Remove", channels); err != nil {
		return err
	}
	ctx = s.c.tag(ctx)
	type leave struct {
		h  *home
		ch string
		w  chan struct{}
	}
	s.sendMu.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.sendMu.Unlock()
		return backend.ErrClosed
	}
	p := plan{}
	var waits []leave
	for _, ch := range channels {
		st := s.chans[ch]
		if st == nil {
			continue
		}
		delete(s.chans, ch)
		st.home.n--
		for _, w := range st.waiters {
			w <- errRemoved
		}
		s.leaveBatch(st)
		w := make(chan struct{})
		st.home.leaving[ch] = append(st.home.leaving[ch], w)
		waits = append(waits, leave{st.home, ch, w})
		p.add(st.home, st.slot, ch)
	}
	s.mu.Unlock()
	err := s.send(ctx, p, false)
	s.sendMu.Unlock()

	release := func(from []leave) {
		s.mu.Lock()
		for _, l := range from {
			ws := slices.DeleteFunc(l.h.leaving[l.ch], func(x chan struct{}) bool { return x == l.w })
			if len(ws) == 0 {
				delete(l.h.leaving, l.ch)
			} else {
				l.h.leaving[l.ch] = ws
			}
		}
		s.mu.Unlock()
	}
	if err != nil && !isServerError(err) {
		// Not written: go-redis forgot the channels before writing, so the
		// connection it dials next will not have them; there is no reply to
		// wait for.
		release(waits)
		if errors.Is(err, redis.ErrClosed) || s.closing.Load() {
			return backend.ErrClosed
		}
		if ctx.Err() != nil {
			return fmt.Errorf("backend/goredis: unsubscribing: %w", ctx.Err())
		}
		waits = nil
	}
	for i, l := range waits {
		select {
		case <-l.w:
		case <-ctx.Done():
			release(waits[i:])
			return fmt.Errorf("backend/goredis: waiting for the server to unsubscribe %d channels: %w", len(waits)-i, ctx.Err())
		}
	}
	if err := s.waitIdle(ctx, channels); err != nil {
		return err
	}
	if s.closing.Load() {
		return backend.ErrClosed
	}
	return nil
}

// waitIdle waits until no handler call for one of channels is running.
func (s *channelSub) waitIdle(ctx context.Context, channels []string) error {
	for {
		var idle chan struct{}
		s.mu.Lock()
		for _, h := range s.homes {
			if h.busy != "" && slices.Contains(channels, h.busy) {
				if h.idle == nil {
					h.idle = make(chan struct{})
				}
				idle = h.idle
				break
			}
		}
		s.mu.Unlock()
		if idle == nil {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("backend/goredis: waiting for the handler of a removed channel: %w", ctx.Err())
		}
	}
}

// Channels implements backend.ChannelSubscription.
func (s *channelSub) Channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.chans)
}

// Pattern implements backend.SubscriptionState: there is none.
func (s *channelSub) Pattern() string { return "" }

// Alive returns nil while every home's connection is up and the server
// has confirmed its channels on it again after the last loss, else why
// not: messages published in between are lost.
func (s *channelSub) Alive() error {
	if s.closing.Load() {
		return errors.New("backend/goredis: subscription closed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.homes {
		if p := h.down.Load(); p != nil && h.n > 0 { // a home without channels loses nothing
			where := ""
			if h.addr != "" {
				where = " on " + h.addr
			}
			return fmt.Errorf("backend/goredis: channel subscription down%s: %w", where, *p)
		}
	}
	return nil
}

// Resubscribed counts the resubscriptions after a lost connection, a slot
// moved or a master replaced: messages published in between were lost.
func (s *channelSub) Resubscribed() uint64 { return s.resubs.Load() }

// Close implements backend.Subscription: it unsubscribes, closes every
// home's connection and waits for their readers, thus for the handler's
// last call, and for the worker. Idempotent; not from the handler.
func (s *channelSub) Close() error {
	s.once.Do(func() {
		s.closing.Store(true)
		s.stopWork()
		s.wg.Wait()
		s.sendMu.Lock()
		s.mu.Lock()
		s.closed = true
		if s.timer != nil {
			s.timer.Stop()
		}
		for _, st := range s.chans {
			for _, w := range st.waiters {
				w <- backend.ErrClosed
			}
			st.waiters = nil
		}
		homes := make([]*home, 0, len(s.homes))
		for _, h := range s.homes {
			for _, ws := range h.leaving {
				for _, w := range ws {
					close(w)
				}
			}
			clear(h.leaving)
			h.dropped = true
			homes = append(homes, h)
		}
		s.mu.Unlock()
		s.sendMu.Unlock()
		for _, h := range homes {
			s.closeHome(h, h.n > 0)
		}
		s.c.mu.Lock()
		delete(s.c.subs, s)
		s.c.mu.Unlock()
	})
	return nil
}

// closeHome unsubscribes everything on h if asked, closes its connection
// and waits for its reader.
func (s *channelSub) closeHome(h *home, unsubscribe bool) {
	if unsubscribe {
		ctx, cancel := context.WithTimeout(s.c.tag(context.Background()), unsubscribeTimeout)
		_ = s.write(ctx, h.ps, false, nil) // none named: all
		cancel()
	}
	_ = h.ps.Close() // interrupts a blocked Receive
	<-h.done
}
