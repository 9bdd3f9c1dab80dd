package backendtest

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// testClose: Close is idempotent, ends active subscriptions, and every
// method afterwards fails with ErrClosed.
func testClose(t *testing.T, s *suite) {
	c, other := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	in := newInbox(t)
	sub := subscribe(t, c, p+":*", in.handle)
	publish(t, other, p+":a", "before")
	in.next("message before Close")

	within(t, "Close with an active subscription", func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	publish(t, other, p+":a", "after")
	in.none("subscription after its client's Close")
	within(t, "Subscription.Close after the client's Close", func() { sub.Close() })

	cx := ctx(t)
	_, err := c.Do(cx, backend.K("GET", p+":k"))
	wantErrIs(t, "Do after Close", err, backend.ErrClosed)
	_, err = c.Watch(cx, []string{p + ":k"}, mustNotCall(t, "Watch after Close"))
	wantErrIs(t, "Watch after Close", err, backend.ErrClosed)
	wantErrIs(t, "Publish after Close", c.Publish(cx, p+":a", "x"), backend.ErrClosed)
	sub2, err := c.PSubscribe(cx, p+":*", in.handle)
	wantErrIs(t, "PSubscribe after Close", err, backend.ErrClosed)
	if sub2 != nil {
		t.Error("PSubscribe after Close returned a Subscription")
		sub2.Close()
	}
	_, err = backend.NewScripts(c).Run(cx, backend.Eval{Script: incrScript(p), Keys: []string{p + ":n"}, Args: []string{"1"}})
	wantErrIs(t, "Scripts.Run after Close", err, backend.ErrClosed)
}

// testCloseWhileBusy: Close while other goroutines run commands,
// transactions and publishes: no panic, every call returns, and calls
// that fail after Close fail with ErrClosed or a context error.
func testCloseWhileBusy(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	cx := ctx(t)
	started := make(chan struct{}, 12)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	loop := func(call func(i int) error) {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := call(i)
				if i == 0 {
					started <- struct{}{}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	for g := range 4 {
		loop(func(i int) error {
			k := p + ":" + strconv.Itoa(g)
			_, err := c.Do(cx, backend.K("SET", k, strconv.Itoa(i)), backend.K("GET", k))
			return err
		})
		loop(func(i int) error {
			k := tag(p, strconv.Itoa(g))
			_, err := c.Watch(cx, []string{k}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				if _, err := tx.Do(ctx, backend.K("GET", k)); err != nil {
					return nil, err
				}
				return []backend.Cmd{backend.K("INCR", k)}, nil
			})
			if errors.Is(err, backend.ErrTxAborted) {
				return nil
			}
			return err
		})
		loop(func(i int) error { return c.Publish(cx, p+":ch", strconv.Itoa(i)) })
	}
	for range 12 {
		<-started
	}
	within(t, "Close while busy", func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	within(t, "calls running during Close", wg.Wait)
	for _, err := range errs {
		// A call caught in flight may fail otherwise; calls made after
		// Close must report ErrClosed, which testClose checks.
		if !errors.Is(err, backend.ErrClosed) {
			t.Logf("call in flight during Close: %v", err)
		}
	}
	if len(errs) != 12 {
		t.Errorf("%d of 12 loops ended with an error after Close", len(errs))
	}
	_, err := c.Do(cx, backend.K("GET", p+":0"))
	wantErrIs(t, "Do after Close", err, backend.ErrClosed)
}
