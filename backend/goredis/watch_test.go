package goredis

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// incr is a TxFunc that reads key and writes it plus one.
func incr(key string) backend.TxFunc {
	return func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		r, err := tx.Do(ctx, backend.K("GET", key))
		if err != nil {
			return nil, err
		}
		n := int64(0)
		if !r[0].IsNil() {
			if n, err = r[0].AsInt(); err != nil {
				return nil, err
			}
		}
		return []backend.Cmd{backend.K("SET", key, backend.Itoa(n+1)), backend.K("GET", key)}, nil
	}
}

func TestWatch(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			// One connection, so a WATCH left armed would show in the next
			// transaction.
			c := newClient(t, s, Options{PoolSize: 1})
			other := newClient(t, s, Options{})
			ctx := testContext(t)
			p := redistest.Prefix(t)
			key := "{" + p + "}:n"

			r, err := c.Watch(ctx, []string{key}, incr(key))
			if err != nil || len(r) != 2 || r[0].Str != "OK" || r[1].Str != "1" {
				t.Fatalf("Watch: %v %v", r, err)
			}

			// Another client writes between WATCH and EXEC: aborted, nothing
			// applied, fn called once.
			calls := 0
			_, err = c.Watch(ctx, []string{key}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				calls++
				mustDo(t, other, backend.K("SET", key, "10"))
				return incr(key)(ctx, tx)
			})
			if !errors.Is(err, backend.ErrTxAborted) || calls != 1 {
				t.Fatalf("Watch after a concurrent write: %v, fn called %d times", err, calls)
			}
			if r := mustDo(t, other, backend.K("GET", key)); r[0].Str != "10" {
				t.Errorf("after abort: %v", r[0])
			}

			// fn's error is returned as it is; no commands means no EXEC. In
			// both cases the WATCH must not outlive the call (UNWATCH).
			mine := errors.New("mine")
			_, err = c.Watch(ctx, []string{key}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				mustDo(t, other, backend.K("SET", key, "20"))
				return nil, mine
			})
			if err != mine {
				t.Errorf("fn error: %v", err)
			}
			r, err = c.Watch(ctx, []string{key}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				mustDo(t, other, backend.K("SET", key, "30"))
				return nil, nil
			})
			if r != nil || err != nil {
				t.Errorf("no commands: %v %v", r, err)
			}
			key2 := "{" + p + "}:m"
			if r, err := c.Watch(ctx, []string{key2}, incr(key2)); err != nil || r[1].Str != "1" {
				t.Errorf("Watch after an error and an empty transaction: %v %v", r, err)
			}

			// A command the server rejects at run time is a reply, the
			// others run.
			r, err = c.Watch(ctx, []string{key}, func(context.Context, backend.Tx) ([]backend.Cmd, error) {
				return []backend.Cmd{backend.K("LPUSH", key, "x"), backend.K("INCR", key)}, nil
			})
			if err != nil || r[0].Kind != backend.KindError || !backend.IsRedisError(r[0].Err, "WRONGTYPE") || r[1].Int != 31 {
				t.Errorf("WRONGTYPE inside EXEC: %v %v", r, err)
			}
			// One rejected while queuing: EXECABORT, nothing applied.
			r, err = c.Watch(ctx, []string{key}, func(context.Context, backend.Tx) ([]backend.Cmd, error) {
				return []backend.Cmd{backend.K("INCR", key), backend.K("SET", key)}, nil
			})
			if err != nil || len(r) != 2 || !backend.IsRedisError(r[0].Err, "EXECABORT") || r[1].Kind != backend.KindError {
				t.Errorf("EXECABORT: %v %v", r, err)
			}
			if r := mustDo(t, other, backend.K("GET", key)); r[0].Str != "31" {
				t.Errorf("after EXECABORT: %v", r[0])
			}

			// The Tx is dead after fn.
			var leaked backend.Tx
			c.Watch(ctx, []string{key}, func(_ context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				leaked = tx
				return nil, nil
			})
			if _, err := leaked.Do(ctx, backend.K("GET", key)); err == nil {
				t.Error("Tx.Do after its TxFunc returned succeeded")
			}
			if _, err := c.Watch(ctx, nil, incr(key)); err == nil {
				t.Error("Watch without keys succeeded")
			}
		})
	}
}

// TestWatchDeadline checks that a transaction honours its context, and
// that the connection of a timed-out transaction is not reused with its
// WATCH armed.
func TestWatchDeadline(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			c := newClient(t, s, Options{PoolSize: 1})
			p := redistest.Prefix(t)
			key := "{" + p + "}:n"
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			start := time.Now()
			_, err := c.Watch(ctx, []string{key}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				_, err := tx.Do(ctx, backend.K("BLPOP", "{"+p+"}:list", "0"))
				return nil, err
			})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
				t.Errorf("Watch past its deadline: %v after %v", err, time.Since(start))
			}
			mustDo(t, newClient(t, s, Options{}), backend.K("SET", key, "5"))
			if r, err := c.Watch(testContext(t), []string{"{" + p + "}:m"}, incr("{"+p+"}:m")); err != nil || r[1].Str != "1" {
				t.Errorf("next Watch: %v %v", r, err)
			}
		})
	}
}

// TestWatchConcurrent increments one counter from many goroutines with
// optimistic transactions, retrying aborts: no increment is lost.
func TestWatchConcurrent(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			ctx := testContext(t)
			key := "{" + redistest.Prefix(t) + "}:n"
			const workers, each = 8, 25
			var wg sync.WaitGroup
			var mu sync.Mutex
			aborts := 0
			for range workers {
				wg.Go(func() {
					for range each {
						for {
							_, err := c.Watch(ctx, []string{key}, incr(key))
							if err == nil {
								break
							}
							if !errors.Is(err, backend.ErrTxAborted) {
								t.Error(err)
								return
							}
							mu.Lock()
							aborts++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			r := mustDo(t, c, backend.K("GET", key))
			if r[0].Str != strconv.Itoa(workers*each) {
				t.Errorf("counter = %v, want %d", r[0], workers*each)
			}
			t.Logf("%d aborts for %d increments", aborts, workers*each)
		})
	}
}
