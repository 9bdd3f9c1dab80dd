package backendtest

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// promptly bounds how long a call with a done context may take. Generous:
// it tells "honours the context" from "waits for the server" (5s below).
const promptly = 3 * time.Second

// testContextExpired: every method given an expired or canceled context
// fails promptly with an error wrapping the context's error.
func testContextExpired(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	k := p + ":k"
	do(t, c, backend.K("SET", k, "v")) // connected

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()

	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"expired", expired, context.DeadlineExceeded},
		{"canceled", canceled, context.Canceled},
	} {
		check := func(method string, call func() error) {
			t.Helper()
			start := time.Now()
			var err error
			within(t, method, func() { err = call() })
			if !errors.Is(err, tc.want) {
				t.Errorf("%s with a %s context: %v, want an error wrapping %v", method, tc.name, err, tc.want)
			}
			if d := time.Since(start); d > promptly {
				t.Errorf("%s with a %s context took %v", method, tc.name, d)
			}
		}
		check("Do", func() error {
			_, err := c.Do(tc.ctx, backend.K("GET", k))
			return err
		})
		check("Do of a write", func() error {
			_, err := c.Do(tc.ctx, backend.K("SET", k, "written"))
			return err
		})
		check("Watch", func() error {
			_, err := c.Watch(tc.ctx, []string{tag(p, "w")}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				if _, err := tx.Do(ctx, backend.K("GET", tag(p, "w"))); err != nil {
					return nil, err
				}
				return []backend.Cmd{backend.K("SET", tag(p, "w"), "written")}, nil
			})
			return err
		})
		check("Publish", func() error { return c.Publish(tc.ctx, p+":ch", "x") })
		check("PSubscribe", func() error {
			sub, err := c.PSubscribe(tc.ctx, p+":*", func(backend.Message) {})
			if sub != nil {
				t.Errorf("PSubscribe with a %s context returned a Subscription and %v", tc.name, err)
				sub.Close()
			}
			return err
		})
	}
	rs := do(t, c, backend.K("GET", k), backend.K("EXISTS", tag(p, "w")))
	wantStr(t, "value after writes with done contexts", rs[0], "v")
	wantInt(t, "EXISTS after a Watch with done contexts", rs[1], 0)
}

// testContextBlocking: a deadline that expires while the server is still
// working (BLPOP waiting 5s) ends the call promptly with
// context.DeadlineExceeded, and the client's later replies stay matched to
// their commands.
func testContextBlocking(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	do(t, c, backend.K("PING", p)) // connected
	for _, timeout := range []time.Duration{time.Millisecond, 50 * time.Millisecond} {
		cx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		var err error
		within(t, "BLPOP with a deadline", func() {
			_, err = c.Do(cx, backend.K("BLPOP", p+":list", "5"))
		})
		cancel()
		if d := time.Since(start); d > promptly {
			t.Errorf("BLPOP with a %v deadline took %v", timeout, d)
		}
		wantErrIs(t, "BLPOP with a "+timeout.String()+" deadline", err, context.DeadlineExceeded)
	}
	// A connection the adapter gave up on must not serve later commands:
	// its pending BLPOP reply would be read as theirs.
	do(t, c, backend.K("RPUSH", p+":list", "late"))
	for i := range 20 {
		k := p + ":" + strconv.Itoa(i)
		rs := do(t, c, backend.K("SET", k, strconv.Itoa(i)), backend.K("GET", k))
		wantStr(t, "SET after an abandoned BLPOP", rs[0], "OK")
		wantStr(t, "GET after an abandoned BLPOP", rs[1], strconv.Itoa(i))
	}
}
