package rueidis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// subscriptionBuffer is how many messages a subscription holds between the
// connection's reader and its handler. When it is full the reader waits,
// TCP pushes back, and the server's pub/sub output-buffer limit
// (client-output-buffer-limit pubsub) decides, as for any slow subscriber.
const subscriptionBuffer = 1024

// Resubscription backoff after a subscription's connection is lost.
const (
	resubscribeMin     = 50 * time.Millisecond
	resubscribeMax     = 2 * time.Second
	resubscribeTimeout = 10 * time.Second // per attempt
)

// Publish sends payload on channel. In a cluster the cluster bus delivers
// a PUBLISH to subscribers on every node; it is sent to the node that owns
// the channel name's slot, so that the messages of one channel from one
// client keep their order (sent to whichever node, a later PUBLISH made on
// the subscriber's own node would overtake an earlier one still crossing
// the bus).
func (c *Client) Publish(ctx context.Context, channel, payload string) error {
	if c.closed.Load() {
		return backend.ErrClosed
	}
	// Keys only routes: on the wire this is PUBLISH channel payload.
	cmd := c.rc.B().Arbitrary("PUBLISH").Keys(channel).Args(payload).Build()
	return c.resultErr(ctx, c.rc.Do(ctx, cmd))
}

// PSubscribe subscribes to pattern on a dedicated connection of its own and
// returns once the server has confirmed the subscription. ctx bounds only
// this confirmation, not the life of the subscription.
//
// Messages are handed to h one at a time, in order, on a goroutine of the
// subscription. If the connection is lost the subscription reconnects and
// subscribes again, with backoff, until it is closed; messages published
// meanwhile are lost, as with any Redis pub/sub.
func (c *Client) PSubscribe(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if h == nil {
		return nil, errors.New("backend/rueidis: PSubscribe needs a handler")
	}
	if pattern == "" {
		return nil, errors.New("backend/rueidis: PSubscribe needs a pattern")
	}
	return c.psubscribe(ctx, pattern, h, c.dedicate)
}

// psubscribe subscribes on connections dedicate takes: any node's for
// PSubscribe, one master's for PSubscribeEachMaster.
func (c *Client) psubscribe(ctx context.Context, pattern string, h backend.Handler, dedicate func(context.Context) (rueidis.DedicatedClient, func(), error)) (backend.Subscription, error) {
	s := &subscription{
		c:        c,
		pattern:  pattern,
		h:        h,
		dedicate: dedicate,
		msgs:     make(chan backend.Message, subscriptionBuffer),
		done:     make(chan struct{}),
	}
	s.life, s.stop = context.WithCancel(context.Background())
	if !c.track(s, s.stop) {
		s.stop()
		return nil, backend.ErrClosed
	}
	var (
		dc   rueidis.DedicatedClient
		lost <-chan error
	)
	err := c.firstAttempt(ctx, s, s.life, s.stop, func(ctx context.Context) (err error) {
		dc, lost, err = s.connect(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	go s.run(dc, lost)
	return s, nil
}

// subscription is one PSubscribe: a dedicated connection, and a goroutine
// that hands messages to the handler and replaces the connection when it
// is lost.
type subscription struct {
	c        *Client
	pattern  string
	h        backend.Handler
	dedicate func(context.Context) (rueidis.DedicatedClient, func(), error)
	msgs     chan backend.Message

	down   atomic.Pointer[error] // why the subscription is not live; nil while it is
	resubs atomic.Uint64         // successful resubscribes

	life context.Context // done once Close (of s or of the client) began
	stop context.CancelFunc
	done chan struct{} // closed when run has returned
}

// Close unsubscribes (by closing the subscription's connection) and waits
// for the last handler call to return. Idempotent; do not call it from the
// handler.
func (s *subscription) Close() error {
	s.stop()
	<-s.done
	return nil
}

// Pattern returns the subscribed pattern.
func (s *subscription) Pattern() string { return s.pattern }

// Alive returns nil while the subscription's connection is up and
// subscribed, else the error that took it down: until resubscribe succeeds
// messages are lost, so a health check reports it.
func (s *subscription) Alive() error {
	if s.life.Err() != nil {
		return errors.New("backend/rueidis: subscription closed")
	}
	if p := s.down.Load(); p != nil {
		return fmt.Errorf("backend/rueidis: subscription down: %w", *p)
	}
	return nil
}

// Resubscribed counts how often the subscription subscribed again after
// losing its connection: messages published in between were not
// delivered, and a caller may want to resynchronise.
func (s *subscription) Resubscribed() uint64 { return s.resubs.Load() }

// connect takes a dedicated connection, installs the hooks and sends
// PSUBSCRIBE. It returns once the server confirmed, with the channel that
// reports the loss of the connection.
func (s *subscription) connect(ctx context.Context) (rueidis.DedicatedClient, <-chan error, error) {
	dc, _, err := s.dedicate(ctx)
	if err != nil {
		return nil, nil, err
	}
	confirmed := make(chan struct{})
	var once sync.Once
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		// Called on the connection's reader goroutine: only queue here.
		OnMessage: func(m rueidis.PubSubMessage) {
			select {
			case s.msgs <- backend.Message{Pattern: m.Pattern, Channel: m.Channel, Payload: m.Message}:
			case <-s.life.Done():
			}
		},
		OnSubscription: func(ps rueidis.PubSubSubscription) {
			if ps.Kind == "psubscribe" && ps.Channel == s.pattern {
				once.Do(func() { close(confirmed) })
			}
		},
	})
	// rueidis returns from PSUBSCRIBE once its confirmation arrived (RESP3
	// and RESP2 alike); waiting for the hook as well costs nothing and does
	// not depend on that.
	if err := s.c.resultErr(ctx, dc.Do(ctx, dc.B().Psubscribe().Pattern(s.pattern).Build())); err != nil {
		dc.Close()
		return nil, nil, err
	}
	select {
	case <-confirmed:
		return dc, lost, nil
	case err := <-lost:
		dc.Close()
		if err == nil {
			err = errors.New("connection closed")
		}
		return nil, nil, s.c.wrapErr(ctx, err)
	case <-ctx.Done():
		dc.Close()
		return nil, nil, s.c.wrapErr(ctx, ctx.Err())
	}
}

// run delivers messages until the subscription is closed, replacing the
// connection whenever it is lost.
func (s *subscription) run(dc rueidis.DedicatedClient, lost <-chan error) {
	defer s.c.untrack(s)
	defer close(s.done)
	for {
		select {
		case <-s.life.Done():
			dc.Close()
			return
		case m := <-s.msgs:
			if s.life.Err() != nil { // closed meanwhile: no more calls
				dc.Close()
				return
			}
			s.h(m)
		case err := <-lost:
			dc.Close()
			if err == nil {
				err = errors.New("connection closed")
			}
			s.down.Store(&err)
			if dc, lost = s.resubscribe(err); dc == nil {
				return
			}
			s.down.Store(nil)
			s.resubs.Add(1)
		}
	}
}

// resubscribe connects again, with backoff, until it succeeds or the
// subscription is closed (then it returns nil).
func (s *subscription) resubscribe(cause error) (rueidis.DedicatedClient, <-chan error) {
	if cause == nil {
		cause = errors.New("connection closed")
	}
	if s.life.Err() != nil {
		return nil, nil
	}
	log := s.c.log.With("pattern", s.pattern)
	log.Warn("backend/rueidis: subscription lost its connection; resubscribing", "err", cause)
	delay := resubscribeMin
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.life, resubscribeTimeout)
		dc, lost, err := s.connect(ctx)
		cancel()
		if err == nil {
			log.Info("backend/rueidis: subscription restored", "attempts", attempt)
			return dc, lost
		}
		if s.life.Err() != nil {
			return nil, nil
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("backend/rueidis: resubscribe failed", "attempt", attempt, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.life.Done():
			t.Stop()
			return nil, nil
		}
		delay = min(2*delay, resubscribeMax)
	}
}
