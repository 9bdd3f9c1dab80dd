package rueidis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendtest"
	rb "github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luasrc"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// TestBackend runs the port's conformance suite on every kind of server.
func TestBackend(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			backendtest.Run(t, backendtest.Target{
				Name: s.Name, Addrs: s.Addrs, Cluster: s.Cluster, Embedded: s.Embedded,
				NewClient: func(t testing.TB) backend.Client {
					return newClient(t, s, rb.Options{})
				},
			})
		})
	}
}

// newClient connects to s with opt (Addrs filled in from s)
// and closes the client when the test ends.
func newClient(t testing.TB, s *redistest.Server, opt rb.Options) *rb.Client {
	t.Helper()
	if opt.URL == "" && opt.Addrs == nil {
		opt.Addrs = s.Addrs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rb.New(ctx, opt)
	if err != nil {
		t.Fatalf("New(%s): %v", s.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func do(t *testing.T, c backend.Pipeliner, cmds ...backend.Cmd) []backend.Reply {
	t.Helper()
	rs, err := c.Do(testCtx(t), cmds...)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	return rs
}

// TestNewFromURL: a redis:// URL with credentials and a db for a
// standalone server, and one with addr= seeds for a cluster.
func TestNewFromURL(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		s := redistest.NewStandalone(t) // private: it gets a password
		if r := s.Do(t, "CONFIG", "SET", "requirepass", "s3cret"); r.Str != "OK" {
			t.Fatalf("CONFIG SET requirepass: %v", r)
		}
		ctx := testCtx(t)
		if c, err := rb.New(ctx, rb.Options{URL: "redis://" + s.Addr()}); err == nil {
			c.Close()
			t.Fatal("New without the password succeeded")
		}
		c := newClient(t, s, rb.Options{URL: "redis://:s3cret@" + s.Addr() + "/3", ClientName: "url-test"})
		if c.Cluster() {
			t.Error("a standalone server gave a cluster client")
		}
		rs := do(t, c, backend.K("SET", "url:k", "v"), backend.Cmd{Name: "CLIENT", Pre: []string{"GETNAME"}})
		if rs[1].Str != "url-test" {
			t.Errorf("CLIENT GETNAME: %v", rs[1])
		}
		// The key went to db 3.
		c0 := newClient(t, s, rb.Options{URL: "redis://:s3cret@" + s.Addr() + "/0"})
		if r := do(t, c0, backend.K("EXISTS", "url:k")); r[0].Int != 0 {
			t.Error("the key of a /3 client is in db 0")
		}
		if r := do(t, c, backend.K("EXISTS", "url:k")); r[0].Int != 1 {
			t.Error("the key is not in db 3")
		}
	})
	t.Run("cluster", func(t *testing.T) {
		s := redistest.Cluster(t)
		url := "redis://" + s.Addrs[0] + "?addr=" + s.Addrs[1] + "&addr=" + s.Addrs[2]
		c := newClient(t, s, rb.Options{URL: url})
		if !c.Cluster() {
			t.Fatal("a cluster URL gave a standalone client")
		}
		p := redistest.Prefix(t)
		rs := do(t, c, backend.K("SET", p+":a", "1"), backend.K("SET", p+":b", "2"), backend.K("GET", p+":a"))
		if rs[2].Str != "1" {
			t.Errorf("GET: %v", rs[2])
		}
	})
	t.Run("bad", func(t *testing.T) {
		for _, opt := range []rb.Options{{}, {URL: "http://localhost"}, {URL: "redis://h:1/notadb"}} {
			if c, err := rb.New(context.Background(), opt); err == nil {
				c.Close()
				t.Errorf("New(%+v) succeeded", opt)
			} else if !strings.HasPrefix(err.Error(), "backend/rueidis: ") {
				t.Errorf("New(%+v): error %q lacks the package prefix", opt, err)
			}
		}
	})
}

// TestCrossSlotNoPanic: rueidis's cluster client panics on a command whose
// keys span slots; the adapter returns ErrCrossSlot instead, for Do, for a
// transaction's reads and for its queued commands.
func TestCrossSlotNoPanic(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			c := newClient(t, s, rb.Options{})
			if s.Cluster {
				panicked := func() (p any) {
					defer func() { p = recover() }()
					c.Raw().B().Arbitrary("DEL").Keys("{a}", "{b}").Build()
					return nil
				}()
				if panicked == nil {
					t.Log("rueidis no longer panics on cross-slot keys")
				}
			}
			ctx := testCtx(t)
			_, err := c.Do(ctx, backend.C("MGET", []string{"{a}1", "{b}1"}))
			if !errors.Is(err, backend.ErrCrossSlot) {
				t.Errorf("Do: %v, want ErrCrossSlot", err)
			}
			_, err = c.Watch(ctx, []string{"{a}1"}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
				_, err := tx.Do(ctx, backend.K("GET", "{b}1"))
				if !errors.Is(err, backend.ErrCrossSlot) {
					t.Errorf("Tx.Do of another slot: %v, want ErrCrossSlot", err)
				}
				return []backend.Cmd{backend.K("SET", "{b}1", "x")}, nil
			})
			if !errors.Is(err, backend.ErrCrossSlot) {
				t.Errorf("Watch queuing another slot: %v, want ErrCrossSlot", err)
			}
		})
	}
}

// TestRefusedCommands: commands that would change the state of the shared
// connection, and names rueidis's builder panics on, are errors.
func TestRefusedCommands(t *testing.T) {
	c := newClient(t, redistest.Embedded(t), rb.Options{})
	for _, cmd := range []backend.Cmd{
		{Name: "MULTI"}, {Name: "exec"}, backend.K("WATCH", "k"), {Name: "SUBSCRIBE", Args: []string{"ch"}},
		{Name: "psubscribe", Args: []string{"*"}}, {Name: "SELECT", Args: []string{"1"}}, {Name: ""},
	} {
		_, err := c.Do(testCtx(t), backend.K("SET", "k", "v"), cmd)
		if err == nil {
			t.Errorf("Do(%v) succeeded", cmd.Line())
		} else if cmd.Name != "" && !errors.Is(err, rb.ErrConnCommand) {
			t.Errorf("Do(%v): %v, want ErrConnCommand", cmd.Line(), err)
		}
	}
}

// TestPreloadEveryMaster: New loads every luasrc script on every master.
func TestPreloadEveryMaster(t *testing.T) {
	s := redistest.Cluster(t)
	redistest.FlushScripts(t, s)
	newClient(t, s, rb.Options{})
	args := []string{"SCRIPT", "EXISTS"}
	for _, sc := range luasrc.All {
		args = append(args, sc.SHA1)
	}
	for i, addr := range s.Addrs {
		r := s.DoNode(t, i, args...)
		if len(r.Elems) != len(luasrc.All) {
			t.Fatalf("SCRIPT EXISTS on %s: %v", addr, r)
		}
		for j, e := range r.Elems {
			if e.Int != 1 {
				t.Errorf("node %s lacks script %s", addr, luasrc.All[j].Name)
			}
		}
	}
}

// TestPreloadChecksSHA1: a script whose generated SHA1 is stale fails New.
func TestPreloadChecksSHA1(t *testing.T) {
	s := redistest.Embedded(t)
	bad := &luasrc.Script{Name: "bad", Source: "return 1", SHA1: strings.Repeat("0", 40)}
	c, err := rb.New(testCtx(t), rb.Options{Addrs: s.Addrs, Preload: []*luasrc.Script{bad}})
	if err == nil {
		c.Close()
		t.Fatal("New succeeded with a stale SHA1")
	}
	if !strings.Contains(err.Error(), "go generate") {
		t.Errorf("error does not say how to fix it: %v", err)
	}
}

// TestReplyShapes: every RESP3 type arrives in the shape the same command
// has under RESP2, in Do and in a transaction.
func TestReplyShapes(t *testing.T) {
	s := redistest.Standalone(t)
	p := redistest.Prefix(t)
	z, h := "{"+p+"}:z", "{"+p+"}:h"
	const resp3 = "if redis.setresp then redis.setresp(3) end; "
	cmds := []backend.Cmd{
		backend.K("ZADD", z, "1", "a", "2.5", "b"),
		backend.K("HSET", h, "f1", "v1", "f2", "v2"),
		backend.K("HGETALL", h),                         // map
		backend.K("ZRANGE", z, "0", "-1", "WITHSCORES"), // [[m s] ...]
		backend.K("ZPOPMIN", z+"x", "2"),                // empty
		backend.K("ZRANDMEMBER", z, "-2", "WITHSCORES"), // [[m s] ...]
		backend.K("HRANDFIELD", h, "-1", "WITHVALUES"),  // [[f v]]
		backend.K("ZSCORE", z, "b"),                     // double
		backend.K("SMEMBERS", p+":none"),                // set
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return {double=3.25}", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return true", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return false", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return {map={k='v', n=1}}", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return {big_number='1234567890123456789012345'}", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return {verbatim_string={format='txt', string='hi: there'}}", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{resp3 + "return {set={x=true}}", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{"return redis.error_reply('ERR with the code')", "0"}},
		backend.Cmd{Name: "EVAL", Pre: []string{"return redis.error_reply('MYCODE custom')", "0"}},
	}
	want := map[int]string{
		2: `[f1 v1 f2 v2]`, 3: `[a 1 b 2.5]`, 4: `[]`, 7: `2.5`, 8: `[]`,
		9: `3.25`, 10: `1`, 11: `0`, 12: `[k v n 1]`, 13: `1234567890123456789012345`, 14: `hi: there`, 15: `[x]`,
		16: `error: ERR with the code`, 17: `error: MYCODE custom`,
	}
	shape := func(i int, r backend.Reply) string {
		if i == 5 || i == 6 { // random members: the shape is the flat length
			return fmt.Sprintf("array of %d", len(r.Elems))
		}
		if i == 2 || i == 12 { // maps: compare as maps, order is not part of the shape
			m, err := r.AsStringMap()
			if err != nil {
				return err.Error()
			}
			keys := slices.Sorted(maps.Keys(m))
			var out []string
			for _, k := range keys {
				out = append(out, k, m[k])
			}
			return fmt.Sprint(out)
		}
		return render(r)
	}
	got := map[bool][]string{}
	for _, resp2 := range []bool{false, true} {
		c := newClient(t, s, rb.Options{AlwaysRESP2: resp2})
		do(t, c, backend.K("DEL", z, h))
		rs := do(t, c, cmds...)
		tx, err := c.Watch(testCtx(t), []string{z}, func(context.Context, backend.Tx) ([]backend.Cmd, error) {
			return []backend.Cmd{cmds[2], cmds[3], cmds[7]}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			got[resp2] = append(got[resp2], shape(i, r))
		}
		for i, r := range tx {
			got[resp2] = append(got[resp2], "tx "+shape([]int{2, 3, 7}[i], r))
		}
	}
	for i := range got[false] {
		if got[false][i] != got[true][i] {
			t.Errorf("reply %d: RESP3 %s, RESP2 %s", i, got[false][i], got[true][i])
		}
		if w, ok := want[i]; ok && got[false][i] != w {
			t.Errorf("reply %d (%v): %s, want %s", i, cmds[i].Line()[:1], got[false][i], w)
		}
	}
	if r := got[false][5]; r != "array of 4" {
		t.Errorf("ZRANDMEMBER -2 WITHSCORES: %s, want 4 flat elements", r)
	}
	if r := got[false][6]; r != "array of 2" {
		t.Errorf("HRANDFIELD -1 WITHVALUES: %s, want 2 flat elements", r)
	}
}

// render prints a reply compactly: strings bare, arrays in brackets.
func render(r backend.Reply) string {
	switch r.Kind {
	case backend.KindNil:
		return "<nil>"
	case backend.KindInt:
		return fmt.Sprint(r.Int)
	case backend.KindString:
		return r.Str
	case backend.KindError:
		var re *backend.RedisError
		if errors.As(r.Err, &re) {
			return "error: " + re.Msg
		}
		return "error (not a RedisError): " + r.Err.Error()
	}
	parts := make([]string, len(r.Elems))
	for i, e := range r.Elems {
		parts[i] = render(e)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// TestClusterMixedPipeline: a pipeline mixing keyless commands with keys
// on every master (rueidis panics on that) runs, in order.
func TestClusterMixedPipeline(t *testing.T) {
	s := redistest.Cluster(t)
	c := newClient(t, s, rb.Options{})
	p := redistest.Prefix(t)
	var cmds []backend.Cmd
	var want []string
	for i := range 12 {
		k := fmt.Sprintf("%s:%d", p, i)
		cmds = append(cmds, backend.K("SET", k, fmt.Sprint(i)), backend.Cmd{Name: "PING", Args: []string{fmt.Sprint("p", i)}}, backend.K("GET", k))
		want = append(want, "OK", fmt.Sprint("p", i), fmt.Sprint(i))
	}
	cmds = append(cmds, backend.Cmd{Name: "PUBLISH", Args: []string{p, "x"}})
	rs := do(t, c, cmds...)
	for i, w := range want {
		if rs[i].Str != w {
			t.Errorf("reply %d: %v, want %q", i, rs[i], w)
		}
	}
	if rs[len(rs)-1].Kind != backend.KindInt {
		t.Errorf("PUBLISH: %v", rs[len(rs)-1])
	}
}

// TestWatchLeavesConnectionClean: a transaction that ends without EXEC
// unwatches its keys before its connection goes back to the pool, so a later
// transaction on that connection is not aborted by them.
func TestWatchLeavesConnectionClean(t *testing.T) {
	s := redistest.Standalone(t)
	c := newClient(t, s, rb.Options{})
	p := redistest.Prefix(t)
	a, b := p+":a", p+":b"
	stop := errors.New("stop")
	for _, fn := range []backend.TxFunc{
		func(context.Context, backend.Tx) ([]backend.Cmd, error) { return nil, stop },
		func(context.Context, backend.Tx) ([]backend.Cmd, error) { return nil, nil },
	} {
		if _, err := c.Watch(testCtx(t), []string{a}, fn); err != nil && err != stop {
			t.Fatal(err)
		}
		_, err := c.Watch(testCtx(t), []string{b}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
			s.Do(t, "SET", a, "changed") // a was watched by the previous call only
			return []backend.Cmd{backend.K("SET", b, "mine")}, nil
		})
		if err != nil {
			t.Errorf("transaction after one that did not EXEC: %v", err)
		}
	}
}

// TestWatchAfterConnectionsKilled: a pooled connection that died while
// idle (a Redis restart, a proxy timeout) costs Watch a retry, not an error.
func TestWatchAfterConnectionsKilled(t *testing.T) {
	s := redistest.NewStandalone(t)
	c := newClient(t, s, rb.Options{})
	p := redistest.Prefix(t)
	incr := func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		return []backend.Cmd{backend.K("INCR", p)}, nil
	}
	for i := range 3 {
		if _, err := c.Watch(testCtx(t), []string{p}, incr); err != nil {
			t.Fatalf("Watch before kill %d: %v", i, err)
		}
		// Every connection but redistest's own; the pool does not notice
		// until its next idle PING, a second later.
		if r := s.Do(t, "CLIENT", "KILL", "TYPE", "normal"); r.Kind != backend.KindInt || r.Int < 1 {
			t.Fatalf("CLIENT KILL: %v", r)
		}
		if _, err := c.Watch(testCtx(t), []string{p}, incr); err != nil {
			t.Errorf("Watch right after the kill: %v", err)
		}
	}
}

// TestSubscriptionReconnects: a subscription whose connection is killed
// subscribes again and keeps delivering.
func TestSubscriptionReconnects(t *testing.T) {
	checkLeaks(t)
	s := redistest.NewStandalone(t)
	c := newClient(t, s, rb.Options{Logger: slog.New(slog.DiscardHandler)})
	got := make(chan backend.Message, 100)
	sub, err := c.PSubscribe(testCtx(t), "rc:*", func(m backend.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if r := s.Do(t, "CLIENT", "KILL", "TYPE", "pubsub"); r.Kind != backend.KindInt || r.Int < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; ; n++ {
		if err := c.Publish(testCtx(t), "rc:x", fmt.Sprint(n)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no message after the subscription's connection was killed")
		}
	}
}

// TestSubscriptionCloseWhileReconnecting: Close of a subscription that
// cannot get its connection back returns promptly and leaves nothing
// running.
func TestSubscriptionCloseWhileReconnecting(t *testing.T) {
	checkLeaks(t)
	s := redistest.NewStandalone(t)
	c := newClient(t, s, rb.Options{Logger: slog.New(slog.DiscardHandler)})
	sub, err := c.PSubscribe(testCtx(t), "rc:*", func(backend.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	// New connections now fail (NOAUTH); c's shared connection stays
	// authenticated, so it can kill the subscription's.
	do(t, c, backend.Cmd{Name: "CONFIG", Args: []string{"SET", "requirepass", "x"}})
	if rs := do(t, c, backend.Cmd{Name: "CLIENT", Args: []string{"KILL", "TYPE", "pubsub"}}); rs[0].Int < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v", rs[0])
	}
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	start := time.Now()
	sub.Close()
	c.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close while reconnecting took %v", d)
	}
}

// TestEmbeddedDetected: told nothing, New notices that the server lacks
// CLIENT TRACKING and cluster support (though it answers CLUSTER SLOTS) and
// falls back to a standalone client with settings that work, pub/sub
// included.
func TestEmbeddedDetected(t *testing.T) {
	s := redistest.Embedded(t)
	ctx := testCtx(t)
	c, err := rb.New(ctx, rb.Options{Addrs: s.Addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Cluster() {
		t.Error("the embedded server was taken for a cluster")
	}
	got := make(chan backend.Message, 1)
	sub, err := c.PSubscribe(ctx, "emb:*", func(m backend.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := c.Publish(ctx, "emb:1", "x"); err != nil {
		t.Fatal(err)
	}
	if rs := do(t, c, backend.K("SET", "emb:k", "v"), backend.K("GET", "emb:k")); rs[1].Str != "v" {
		t.Errorf("GET: %v", rs[1])
	}
	select {
	case m := <-got:
		if m.Channel != "emb:1" || m.Payload != "x" || m.Pattern != "emb:*" {
			t.Errorf("message %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
}

// TestOneSeedCluster: the check that tells the embedded server from a
// cluster keeps a real cluster reached through one seed a cluster client,
// and a standalone server a standalone one.
func TestOneSeedCluster(t *testing.T) {
	for _, tc := range []struct {
		s    *redistest.Server
		want bool
	}{{redistest.Cluster(t), true}, {redistest.Standalone(t), false}} {
		t.Run(tc.s.Name, func(t *testing.T) {
			c := newClient(t, tc.s, rb.Options{Addrs: tc.s.Addrs[:1]})
			if c.Cluster() != tc.want {
				t.Errorf("Cluster() = %v through the seed %s, want %v", c.Cluster(), tc.s.Addr(), tc.want)
			}
			p := redistest.Prefix(t)
			if rs := do(t, c, backend.K("SET", p+":a", "1"), backend.K("SET", p+":b", "2")); rs[0].Err != nil || rs[1].Err != nil {
				t.Errorf("SET on keys of different slots: %v", rs)
			}
		})
	}
}

// TestNewHonoursContext: New returns when its context ends, even while
// rueidis is still dialing.
func TestNewHonoursContext(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := rb.New(ctx, rb.Options{Addrs: []string{"127.0.0.1:1"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("New with a canceled context: %v", err)
	}
	_, err := rb.New(context.Background(), rb.Options{Addrs: []string{"127.0.0.1:1"}, DialTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("New of a closed port: %v", err)
	}
	// rueidis returns a client with the error when it is told the server is
	// standalone: New must close it.
	single := func(co *rueidis.ClientOption) { co.ForceSingleClient = true }
	if _, err := rb.New(context.Background(), rb.Options{Addrs: []string{"127.0.0.1:1"}, Customize: single}); err == nil {
		t.Error("New(ForceSingleClient) of a closed port succeeded")
	}
}

// TestNewFromClient: the adapter over a caller's rueidis client leaves it
// open on Close.
func TestNewFromClient(t *testing.T) {
	s := redistest.Embedded(t)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: s.Addrs, DisableCache: true, AlwaysRESP2: true, ForceSingleClient: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c := rb.NewFromClient(rc)
	if err := c.LoadScripts(testCtx(t), luasrc.All...); err != nil {
		t.Fatal(err)
	}
	do(t, c, backend.K("SET", "nfc", "1"))
	c.Close()
	if _, err := c.Do(testCtx(t), backend.K("GET", "nfc")); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Do after Close: %v", err)
	}
	if v, err := rc.Do(testCtx(t), rc.B().Get().Key("nfc").Build()).ToString(); err != nil || v != "1" {
		t.Errorf("the caller's client after Close: %q, %v", v, err)
	}
}

// checkLeaks fails t if goroutines started from now on are still running
// after the test and its cleanups registered later. It waits up to 5s: a
// closed rueidis cluster client's topology refresh goroutine sleeps up to a
// second before it notices. Only for tests whose servers are their own.
func checkLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := goleak.Find(ignore)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Error(err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
