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

// testWatchAbort: a watched key written by another client between WATCH
// and EXEC aborts the transaction with ErrTxAborted; nothing queued is
// applied and Watch does not retry.
func testWatchAbort(t *testing.T, s *suite) {
	c1, c2 := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	k := tag(p, "k")
	do(t, c2, backend.K("SET", k, "start"))
	calls := 0
	_, err := c1.Watch(ctx(t), []string{k}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		calls++
		rs, err := tx.Do(ctx, backend.K("GET", k))
		if err != nil {
			return nil, err
		}
		wantStr(t, "GET inside the transaction", rs[0], "start")
		if _, err := c2.Do(ctx, backend.K("SET", k, "other")); err != nil {
			return nil, err
		}
		return []backend.Cmd{backend.K("SET", k, "mine")}, nil
	})
	wantErrIs(t, "Watch with a conflicting write", err, backend.ErrTxAborted)
	if calls != 1 {
		t.Errorf("TxFunc called %d times, want 1: Watch must not retry", calls)
	}
	rs := do(t, c2, backend.K("GET", k))
	wantStr(t, "value after the aborted transaction", rs[0], "other")
}

// testWatchCommit: without conflict, Watch returns the replies of the
// queued commands, in order, and applies them; tx reads see the data.
func testWatchCommit(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	k, k2, h := tag(p, "k"), tag(p, "k2"), tag(p, "h")
	do(t, c, backend.K("SET", k, "5"), backend.K("HSET", h, "f", "v"))
	rs, err := c.Watch(ctx(t), []string{k, k2}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		rs, err := tx.Do(ctx, backend.K("GET", k), backend.K("GET", k2), backend.K("HGETALL", h))
		if err != nil {
			return nil, err
		}
		if len(rs) != 3 {
			return nil, errorf("tx.Do of 3 commands returned %d replies", len(rs))
		}
		wantStr(t, "tx GET", rs[0], "5")
		wantNil(t, "tx GET missing", rs[1])
		if m, err := rs[2].AsStringMap(); err != nil || m["f"] != "v" {
			t.Errorf("tx HGETALL: %v, %v", m, err)
		}
		return []backend.Cmd{
			backend.K("INCRBY", k, "10"),
			backend.K("SET", k2, "x"),
			backend.K("GET", k2),
			backend.K("HGETALL", h),
		}, nil
	})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if len(rs) != 4 {
		t.Fatalf("Watch returned %d replies, want 4: %v", len(rs), rs)
	}
	wantInt(t, "EXEC INCRBY", rs[0], 15)
	wantStr(t, "EXEC SET", rs[1], "OK")
	wantStr(t, "EXEC GET", rs[2], "x")
	if m, err := rs[3].AsStringMap(); err != nil || m["f"] != "v" {
		t.Errorf("EXEC HGETALL: %v, %v", m, err)
	}
	rs = do(t, c, backend.K("GET", k))
	wantStr(t, "value after the transaction", rs[0], "15")
}

// testWatchFnError: an error of the TxFunc is returned unchanged and
// nothing it returned is applied; the connection is not left watching.
func testWatchFnError(t *testing.T, s *suite) {
	c, other := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	k := tag(p, "k")
	boom := errors.New("backendtest: boom")
	_, err := c.Watch(ctx(t), []string{k}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		return []backend.Cmd{backend.K("SET", k, "written")}, boom
	})
	if err != boom {
		t.Errorf("Watch returned %v, want the TxFunc's error unchanged", err)
	}
	rs := do(t, c, backend.K("EXISTS", k))
	wantInt(t, "EXISTS after a failed TxFunc", rs[0], 0)
	checkNoDanglingWatch(t, c, other, k, tag(p, "next"), func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		return nil, boom
	})
}

// testWatchNoCommands: a TxFunc returning no commands ends the transaction
// with no replies and no error; the connection is not left watching.
func testWatchNoCommands(t *testing.T, s *suite) {
	c, other := s.client(t), s.client(t)
	p := redistest.Prefix(t)
	k := tag(p, "k")
	rs, err := c.Watch(ctx(t), []string{k}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		_, err := tx.Do(ctx, backend.K("GET", k))
		return nil, err
	})
	if err != nil || len(rs) != 0 {
		t.Errorf("Watch with no commands: %v, %v; want no replies and no error", rs, err)
	}
	checkNoDanglingWatch(t, c, other, k, tag(p, "next"), func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		return nil, nil
	})
}

// checkNoDanglingWatch: after a Watch on k that ended without EXEC (fn),
// and another client's write to k, a later transaction on another key of
// the same node must commit. An adapter that returns the connection to its
// pool still watching k aborts it: EXEC sees k changed.
func checkNoDanglingWatch(t *testing.T, c, other backend.Client, k, next string, fn backend.TxFunc) {
	t.Helper()
	for i := range 5 {
		c.Watch(ctx(t), []string{k}, fn)
		do(t, other, backend.K("SET", k, strconv.Itoa(i)))
		_, err := c.Watch(ctx(t), []string{next}, func(context.Context, backend.Tx) ([]backend.Cmd, error) {
			return []backend.Cmd{backend.K("SET", next, strconv.Itoa(i))}, nil
		})
		if err != nil {
			t.Fatalf("transaction on %s after a Watch on %s without EXEC: %v (a connection left watching %s?)", next, k, err, k)
		}
	}
}

// testWatchConcurrent: read-modify-write increments from many goroutines of
// one client, retried on ErrTxAborted, lose no update. An adapter that runs
// WATCH..EXEC on a shared connection lets one goroutine's EXEC unwatch
// another's keys, and increments get lost.
func testWatchConcurrent(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	k := tag(p, "counter")
	cx := ctx(t)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				for attempt := 0; ; attempt++ {
					if attempt == 1000 {
						t.Error("1000 aborted transactions in a row")
						return
					}
					_, err := c.Watch(cx, []string{k}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
						rs, err := tx.Do(ctx, backend.K("GET", k))
						if err != nil {
							return nil, err
						}
						n := int64(0)
						if !rs[0].IsNil() {
							if n, err = rs[0].AsInt(); err != nil {
								return nil, err
							}
						}
						return []backend.Cmd{backend.K("SET", k, strconv.FormatInt(n+1, 10))}, nil
					})
					if err == nil {
						break
					}
					if !errors.Is(err, backend.ErrTxAborted) {
						t.Errorf("Watch: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	rs := do(t, c, backend.K("GET", k))
	wantStr(t, "counter after concurrent transactions", rs[0], strconv.Itoa(workers*each))
}
