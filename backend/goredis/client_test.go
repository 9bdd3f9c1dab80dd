package goredis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luasrc"
)

func TestCrossSlot(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			c := newClient(t, s, Options{})
			ctx := testContext(t)
			p := redistest.Prefix(t)
			a, b := "{"+p+"a}:k", "{"+p+"b}:k"
			if backend.KeySlot(a) == backend.KeySlot(b) {
				t.Fatal("test keys share a slot")
			}
			mustDo(t, c, backend.K("SET", a, "1"))
			// One bad command fails the whole pipeline before anything is sent.
			_, err := c.Do(ctx, backend.K("DEL", a), backend.C("DEL", []string{a, b}))
			if !errors.Is(err, backend.ErrCrossSlot) {
				t.Fatalf("Do: %v, want ErrCrossSlot", err)
			}
			if r := mustDo(t, c, backend.K("GET", a)); r[0].Str != "1" {
				t.Errorf("GET after refused pipeline = %v: something was sent", r[0])
			}
			// EVALSHA keys are checked too.
			e := backend.Eval{Script: luasrc.All[0], Keys: []string{a, b}}
			if _, err := c.Do(ctx, e.Cmd()); !errors.Is(err, backend.ErrCrossSlot) {
				t.Errorf("EVALSHA: %v, want ErrCrossSlot", err)
			}
			// WATCH keys, and queued commands against the watched slot.
			_, err = c.Watch(ctx, []string{a, b}, func(context.Context, backend.Tx) ([]backend.Cmd, error) {
				t.Error("fn called with cross-slot watch keys")
				return nil, nil
			})
			if !errors.Is(err, backend.ErrCrossSlot) {
				t.Errorf("Watch: %v, want ErrCrossSlot", err)
			}
			_, err = c.Watch(ctx, []string{a}, func(context.Context, backend.Tx) ([]backend.Cmd, error) {
				return []backend.Cmd{backend.K("DEL", a), backend.K("SET", b, "x")}, nil
			})
			if !errors.Is(err, backend.ErrCrossSlot) {
				t.Errorf("Watch queuing another slot: %v, want ErrCrossSlot", err)
			}
			_, err = c.Watch(ctx, []string{a}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				_, err := tx.Do(ctx, backend.C("MGET", []string{a, b}))
				return nil, err
			})
			if !errors.Is(err, backend.ErrCrossSlot) {
				t.Errorf("Tx.Do: %v, want ErrCrossSlot", err)
			}
			if r := mustDo(t, c, backend.K("GET", a), backend.K("EXISTS", b)); r[0].Str != "1" || r[1].Int != 0 {
				t.Errorf("after refused transactions: GET a = %v, EXISTS b = %v", r[0], r[1])
			}
		})
	}
}

func TestReplyKinds(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			c := newClient(t, s, Options{})
			k := "{" + redistest.Prefix(t) + "}:"
			r := mustDo(t, c,
				backend.K("SET", k+"s", "v"),                                   // 0 status
				backend.K("GET", k+"s"),                                        // 1 bulk
				backend.K("GET", k+"missing"),                                  // 2 nil
				backend.K("INCR", k+"n"),                                       // 3 int
				backend.K("HGETALL", k+"missing"),                              // 4 empty array
				backend.K("LPUSH", k+"s", "x"),                                 // 5 WRONGTYPE
				backend.C("NOSUCHCOMMAND", nil),                                // 6 unknown command
				backend.K("HMGET", k+"h", "a", "b"),                            // 7 array of nils
				backend.K("SET", k+"e", ""),                                    // 8
				backend.K("GET", k+"e"),                                        // 9 empty string
				backend.C("PUBLISH", nil, k+"chan", "x"),                       // 10 keyless
				backend.K("EXPIRE", k+"s", "100", "NX"),                        // 11
				backend.K("TTL", k+"s"),                                        // 12
				backend.K("EVAL", "return {1, 'a', false, {err='boom'}}", "0"), // 13 mixed array (EVAL with no keys)
			)
			check := func(i int, kind backend.Kind, what string) {
				t.Helper()
				if r[i].Kind != kind {
					t.Errorf("reply %d (%s) = %v, want kind %d", i, what, r[i], kind)
				}
			}
			check(0, backend.KindString, "SET")
			check(1, backend.KindString, "GET")
			check(2, backend.KindNil, "GET missing")
			check(3, backend.KindInt, "INCR")
			check(4, backend.KindArray, "HGETALL missing")
			check(5, backend.KindError, "WRONGTYPE")
			check(6, backend.KindError, "unknown command")
			check(7, backend.KindArray, "HMGET")
			check(9, backend.KindString, "GET empty")
			check(10, backend.KindInt, "PUBLISH")
			if r[0].Str != "OK" || r[1].Str != "v" || r[3].Int != 1 || len(r[4].Elems) != 0 || r[9].Str != "" {
				t.Errorf("values: %v", r[:10])
			}
			if !backend.IsRedisError(r[5].Err, "WRONGTYPE") {
				t.Errorf("WRONGTYPE reply: %v", r[5].Err)
			}
			if re := (*backend.RedisError)(nil); !errors.As(r[5].Err, &re) || !strings.HasPrefix(re.Msg, "WRONGTYPE ") {
				t.Errorf("RedisError.Msg is not the server's text: %#v", r[5].Err)
			}
			if len(r[7].Elems) != 2 || !r[7].Elems[0].IsNil() || !r[7].Elems[1].IsNil() {
				t.Errorf("HMGET of nothing = %v", r[7])
			}
			if s.Embedded {
				return // miniredis lacks EXPIRE NX and error tables in scripts
			}
			if arr := r[13].Elems; len(arr) != 4 || arr[0].Int != 1 || arr[1].Str != "a" || !arr[2].IsNil() ||
				arr[3].Kind != backend.KindError || !strings.Contains(arr[3].Err.Error(), "boom") {
				t.Errorf("script array = %v", r[13])
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			c := newClient(t, s, Options{})
			k := "{" + redistest.Prefix(t) + "}:list"
			for _, n := range []int{1, 2} {
				cmds := []backend.Cmd{backend.K("BLPOP", k, "0")}
				if n == 2 {
					cmds = append([]backend.Cmd{backend.K("LLEN", k)}, cmds...)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				start := time.Now()
				_, err := c.Do(ctx, cmds...)
				d := time.Since(start)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%d commands: Do past deadline: %v, want DeadlineExceeded", n, err)
				}
				if d > 3*time.Second {
					t.Errorf("%d commands: Do returned %v after its 100ms deadline", n, d)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := c.Do(ctx, backend.K("GET", k)); !errors.Is(err, context.Canceled) {
				t.Errorf("Do with canceled context: %v", err)
			}
			if err := c.Publish(ctx, k, "x"); !errors.Is(err, context.Canceled) {
				t.Errorf("Publish with canceled context: %v", err)
			}
			// The client is still fine.
			if r := mustDo(t, c, backend.K("LPUSH", k, "x")); r[0].Int != 1 {
				t.Errorf("LPUSH after timeouts: %v", r[0])
			}
		})
	}
}

func TestClosed(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			ctx := testContext(t)
			delivered := make(chan struct{}, 100)
			if _, err := c.PSubscribe(ctx, redistest.Prefix(t)+":*", func(backend.Message) { delivered <- struct{}{} }); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			k := "{x}:k"
			if _, err := c.Do(ctx, backend.K("GET", k)); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("Do: %v", err)
			}
			if _, err := c.Watch(ctx, []string{k}, nil); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("Watch: %v", err)
			}
			if err := c.Publish(ctx, k, "x"); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("Publish: %v", err)
			}
			if _, err := c.PSubscribe(ctx, "*", func(backend.Message) {}); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("PSubscribe: %v", err)
			}
			if err := c.LoadScripts(ctx, luasrc.All...); !errors.Is(err, backend.ErrClosed) {
				t.Errorf("LoadScripts: %v", err)
			}
		})
	}
}

// TestCloseDuringUse closes the client under concurrent callers: they get
// ErrClosed (or succeed if they were first), never hang or panic.
func TestCloseDuringUse(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			checkLeaks(t)
			c := newClient(t, s, Options{})
			k := "{" + redistest.Prefix(t) + "}:n"
			errc := make(chan error, 8)
			for range 8 {
				go func() {
					for {
						_, err := c.Do(context.Background(), backend.K("INCR", k), backend.K("GET", k))
						if err != nil {
							errc <- err
							return
						}
					}
				}()
			}
			time.Sleep(20 * time.Millisecond)
			c.Close()
			for range 8 {
				if err := <-errc; !errors.Is(err, backend.ErrClosed) {
					t.Errorf("Do during Close: %v, want ErrClosed", err)
				}
			}
		})
	}
}

// TestClusterRouting checks that every command reaches the master of its
// slot at once: no node answers MOVED, whatever go-redis's COMMAND cache
// holds, for plain commands, EVALSHA, transactions and keyless commands.
func TestClusterRouting(t *testing.T) {
	s := redistest.Cluster(t)
	before := movedCounts(t, s)
	c := newClient(t, s, Options{})
	ctx := testContext(t)
	p := redistest.Prefix(t)
	script := testScript(t, "return redis.call('INCR', KEYS[1])")
	if err := c.LoadScripts(ctx, script); err != nil {
		t.Fatal(err)
	}
	var cmds []backend.Cmd
	for i := range 30 {
		k := fmt.Sprintf("{%s%d}:k", p, i)
		cmds = append(cmds,
			backend.K("SET", k, "1"),
			backend.Eval{Script: script, Keys: []string{k}}.Cmd(),
			backend.Cmd{Name: "OBJECT", Pre: []string{"ENCODING"}, Keys: []string{k}}, // key not first
			backend.C("PUBLISH", nil, k, "x"),
		)
	}
	r := mustDo(t, c, cmds...)
	for i, x := range r {
		if x.Kind == backend.KindError {
			t.Errorf("%v: %v", cmds[i].Line(), x.Err)
		}
	}
	for i := range 30 {
		if r[4*i+1].Int != 2 {
			t.Errorf("EVALSHA INCR = %v", r[4*i+1])
		}
		if r[4*i+2].Str != "int" {
			t.Errorf("OBJECT ENCODING = %v", r[4*i+2])
		}
	}
	// One command at a time, and in a transaction.
	for i := range 6 {
		k := fmt.Sprintf("{%s%d}:k", p, i)
		mustDo(t, c, backend.Eval{Script: script, Keys: []string{k}}.Cmd())
		_, err := c.Watch(ctx, []string{k}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
			r, err := tx.Do(ctx, backend.K("GET", k))
			if err != nil {
				return nil, err
			}
			return []backend.Cmd{backend.K("SET", k, r[0].Str+"0")}, nil
		})
		if err != nil {
			t.Errorf("Watch %s: %v", k, err)
		}
	}
	after := movedCounts(t, s)
	for i := range s.Addrs {
		if after[i] != before[i] {
			t.Errorf("node %s answered MOVED %d times", s.Addrs[i], after[i]-before[i])
		}
	}
}

// movedCounts returns how many MOVED replies each node has sent.
func movedCounts(t *testing.T, s *redistest.Server) []int {
	out := make([]int, len(s.Addrs))
	for i := range s.Addrs {
		info := s.DoNode(t, i, "INFO", "errorstats").Str
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "errorstat_MOVED:count="); ok {
				out[i], _ = strconv.Atoi(rest)
			}
		}
	}
	return out
}

// TestPreloadCluster checks that New loads every luasrc script on every
// master, and that pipelined EVALSHA on all masters then runs without a
// NOSCRIPT reply.
func TestPreloadCluster(t *testing.T) {
	s := redistest.Cluster(t)
	redistest.FlushScripts(t, s)
	shas := []string{"SCRIPT", "EXISTS"}
	for _, sc := range luasrc.All {
		shas = append(shas, sc.SHA1)
	}
	for i := range s.Addrs {
		r := s.DoNode(t, i, shas...)
		for j, e := range r.Elems {
			if e.Int != 0 {
				t.Fatalf("node %d knows %s after SCRIPT FLUSH", i, luasrc.All[j].Name)
			}
		}
	}
	c := newClient(t, s, Options{})
	for i := range s.Addrs {
		r := s.DoNode(t, i, shas...)
		if len(r.Elems) != len(luasrc.All) {
			t.Fatalf("node %d: SCRIPT EXISTS = %v", i, r)
		}
		for j, e := range r.Elems {
			if e.Int != 1 {
				t.Errorf("node %s lacks script %s after New", s.Addrs[i], luasrc.All[j].Name)
			}
		}
	}

	// Pipelined EVALSHA of a preloaded script, on every master, is never
	// answered NOSCRIPT. Plain Do, not backend.Scripts: no EVAL fallback.
	redistest.FlushScripts(t, s)
	script := testScript(t, "return KEYS[1]")
	if err := c.LoadScripts(testContext(t), script); err != nil {
		t.Fatal(err)
	}
	p := redistest.Prefix(t)
	var cmds []backend.Cmd
	nodes := map[int]bool{}
	for i := 0; len(nodes) < len(s.Addrs) || len(cmds) < 12; i++ {
		k := fmt.Sprintf("{%s%d}:k", p, i)
		nodes[s.NodeForSlot(backend.KeySlot(k))] = true
		cmds = append(cmds, backend.Eval{Script: script, Keys: []string{k}}.Cmd())
	}
	for i, r := range mustDo(t, c, cmds...) {
		if r.Kind != backend.KindString || r.Str != cmds[i].Keys[0] {
			t.Errorf("EVALSHA %d: %v", i, r)
		}
	}
}

// TestScriptsFallback runs backend.Scripts over the adapter after SCRIPT
// FLUSH: one EVAL per affected call, then EVALSHA works again.
func TestScriptsFallback(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			c := newClient(t, s, Options{})
			script := testScript(t, "return ARGV[1]")
			if err := c.LoadScripts(testContext(t), script); err != nil {
				t.Fatal(err)
			}
			redistest.FlushScripts(t, s)
			sc := backend.NewScripts(c)
			p := redistest.Prefix(t)
			evals := make([]backend.Eval, 6)
			for i := range evals {
				evals[i] = backend.Eval{Script: script, Keys: []string{fmt.Sprintf("{%s%d}", p, i)}, Args: []string{strconv.Itoa(i)}}
			}
			for round := range 2 {
				r, err := sc.RunMany(testContext(t), evals...)
				if err != nil {
					t.Fatal(err)
				}
				for i, x := range r {
					if x.Str != strconv.Itoa(i) {
						t.Errorf("round %d call %d: %v", round, i, x)
					}
				}
			}
			if n := sc.Reloads(); n != uint64(len(evals)) {
				t.Errorf("Reloads = %d, want %d", n, len(evals))
			}
		})
	}
}
