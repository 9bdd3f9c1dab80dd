package goredis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// unsubscribeTimeout bounds the PUNSUBSCRIBE a subscription sends when it
// closes; closing the connection right after unsubscribes anyway.
const unsubscribeTimeout = time.Second

// PSubscribe implements backend.PubSub. The subscription has its own
// connection (on a cluster, to one node: the cluster bus brings it the
// messages published on every node). It returns once the server confirmed
// the subscription. Afterwards one goroutine reads the connection and calls
// h for each message, in order; after a connection error go-redis
// reconnects and subscribes again (messages published meanwhile are lost,
// as always with pub/sub).
func (c *Client) PSubscribe(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	if h == nil {
		return nil, errors.New("backend/goredis: PSubscribe with a nil handler")
	}
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	return c.psubscribe(ctx, c.rc, pattern, h)
}

// psubscriber is a go-redis client that can subscribe: the client's own,
// or one master's of a cluster.
type psubscriber interface {
	PSubscribe(ctx context.Context, patterns ...string) *redis.PubSub
}

// psubscribe subscribes through rc: any node for PSubscribe, one master
// for PSubscribeEachMaster.
func (c *Client) psubscribe(ctx context.Context, rc psubscriber, pattern string, h backend.Handler) (backend.Subscription, error) {
	ctx = c.tag(ctx)
	ps := rc.PSubscribe(ctx) // no pattern yet: go-redis would drop the error
	// go-redis bounds socket reads by the context's deadline only; closing
	// the PubSub makes a cancellation end the wait for the confirmation too.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	err := ps.PSubscribe(ctx, pattern)
	if err == nil {
		err = awaitConfirmation(ctx, ps, pattern)
	}
	if err == nil && !stop() {
		err = ctx.Err() // canceled just now, and ps closed
	}
	if err != nil {
		_ = ps.Close()
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			// The failure is ours: the cancellation closed ps.
			return nil, fmt.Errorf("backend/goredis: PSubscribe %q: %w", pattern, cerr)
		}
		return nil, c.closedErr(toErr(ctx, err))
	}
	s := &subscription{
		c:       c,
		ps:      ps,
		pattern: pattern,
		h:       h,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		_ = ps.Close()
		return nil, backend.ErrClosed
	}
	c.subs[s] = struct{}{}
	go s.run()
	c.mu.Unlock()
	return s, nil
}

// awaitConfirmation reads until the server confirms the subscription to
// pattern; on a fresh connection nothing else can come first.
func awaitConfirmation(ctx context.Context, ps *redis.PubSub, pattern string) error {
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "psubscribe" && m.Channel == pattern {
				return nil
			}
		case *redis.Message, *redis.Pong:
			// Not expected before the confirmation; nothing to deliver yet.
		default:
			return fmt.Errorf("unexpected %T while subscribing to %q", msg, pattern)
		}
	}
}

// subscription is one pattern subscription with its reading goroutine.
type subscription struct {
	c       *Client
	ps      *redis.PubSub
	pattern string
	h       backend.Handler

	closing atomic.Bool
	once    sync.Once
	down    atomic.Pointer[error] // why the subscription is not live; nil while it is
	resubs  atomic.Uint64         // confirmations after a reconnect
	stop    chan struct{}         // closed when Close begins
	done    chan struct{}         // closed when run has returned
}

// run delivers messages until Close.
func (s *subscription) run() {
	defer close(s.done)
	ctx := s.c.tag(context.Background()) // no deadline: wait for messages until closed
	failures := 0
	for {
		msg, err := s.ps.Receive(ctx)
		if s.closing.Load() {
			return
		}
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			s.down.Store(&err)
			// After a network error go-redis has dropped the connection and
			// will dial and subscribe again on the next Receive. A server
			// error is the refusal of that subscribe (NOPERM while an ACL
			// forbids it, say): go-redis keeps the connection, unsubscribed,
			// and would wait on it forever, so subscribe again ourselves.
			// Either way, back off while it keeps failing.
			failures++
			t := time.NewTimer(backoff(failures))
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-t.C:
			}
			if isServerError(err) {
				_ = s.ps.PSubscribe(ctx, s.pattern) // its failure comes back from Receive
			}
			continue
		}
		failures = 0
		switch m := msg.(type) {
		case *redis.Message:
			s.down.Store(nil)
			s.h(backend.Message{Pattern: m.Pattern, Channel: m.Channel, Payload: m.Payload})
		case *redis.Subscription:
			// After a reconnect go-redis subscribes again; this is the
			// server's confirmation, nothing to deliver.
			if m.Kind == "psubscribe" && m.Channel == s.pattern {
				s.down.Store(nil)
				s.resubs.Add(1)
			}
		}
	}
}

// Pattern returns the subscribed pattern.
func (s *subscription) Pattern() string { return s.pattern }

// Alive returns nil while the subscription's connection is up and the
// server has confirmed the pattern on it, else the error that took it down:
// between a lost connection and the confirmation on the next one, messages
// are lost, so a health check reports it.
func (s *subscription) Alive() error {
	if s.closing.Load() {
		return errors.New("backend/goredis: subscription closed")
	}
	if p := s.down.Load(); p != nil {
		return fmt.Errorf("backend/goredis: subscription down: %w", *p)
	}
	return nil
}

// Resubscribed counts how often the server confirmed the pattern again
// after the connection was lost: messages published in between were not
// delivered, and a caller may want to resynchronise.
func (s *subscription) Resubscribed() uint64 { return s.resubs.Load() }

// backoff returns the wait after the n-th consecutive receive failure:
// none after the first (go-redis has just reconnected), then 50ms doubling
// up to 2s.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := 50 * time.Millisecond << min(n-2, 6)
	return min(d, 2*time.Second)
}

// Close implements backend.Subscription: PUNSUBSCRIBE, close the
// connection, wait for the reading goroutine and thus the last handler
// call. Idempotent; must not be called from the handler itself.
func (s *subscription) Close() error {
	s.once.Do(func() {
		s.closing.Store(true)
		close(s.stop)
		ctx, cancel := context.WithTimeout(context.Background(), unsubscribeTimeout)
		_ = s.ps.PUnsubscribe(ctx, s.pattern)
		cancel()
		_ = s.ps.Close() // interrupts a blocked Receive
		<-s.done
		s.c.mu.Lock()
		delete(s.c.subs, s)
		s.c.mu.Unlock()
	})
	return nil
}
