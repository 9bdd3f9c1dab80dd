// Package backendtest is the conformance suite of the backend port: one test
// body that every backend.Client implementation runs against every kind of
// server. An adapter that passes it is a supported backend (docs/DESIGN.md §6).
//
// An adapter's test, in this module or in another, describes each server
// it runs against with a [Target]:
//
//	func TestBackend(t *testing.T) {
//		backendtest.Run(t, backendtest.Target{
//			Name:  "standalone",
//			Addrs: []string{"127.0.0.1:6379"},
//			NewClient: func(t testing.TB) backend.Client {
//				return newMyClient(t, "127.0.0.1:6379")
//			},
//		})
//	}
//
// examples/custombackend runs it on the embedded server; the adapters of
// this module run it on a standalone server, a 3-master cluster and the
// embedded server.
//
// Each subtest checks something a broken adapter gets wrong: reply order
// and types in a pipeline spread over cluster slots, cross-slot refusal,
// NOSCRIPT fallback, WATCH on a dedicated connection, pub/sub delivery and
// unsubscription, channel subscriptions (classic and sharded) that follow
// reconnects and slot moves, context deadlines, Close. Keys carry redistest.Prefix, so
// the suite shares servers with other tests without flushing them.
package backendtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// Factory returns a new client connected to the target Run was given. Each
// call must return a distinct client (tests use two to race each other).
// The suite closes every client it gets.
type Factory func(t testing.TB) backend.Client

// Target is the server the suite runs against and how to get clients of
// the adapter under test connected to it.
//
// Besides the adapter's clients, the suite opens plain connections of its
// own to Addrs (to check what a pipeline wrote, flush the script cache,
// publish from every node, kill subscriber connections), without
// authentication: point it at a test server without a password. Keys carry
// a prefix unique to the test, so the server may be shared with other
// tests; nothing is flushed but the script cache.
type Target struct {
	// Name describes the server in failure messages, e.g. "cluster".
	// Optional.
	Name string
	// Addrs are host:port of every node the suite addresses directly:
	// the one address of a standalone server, every master of a cluster.
	// Required.
	Addrs []string
	// Cluster says Addrs are the masters of a Redis Cluster: the suite
	// then also checks that a pipeline or a pattern subscription spans
	// every master.
	Cluster bool
	// Embedded says the server is package embedded's (miniredis) in this
	// process: the suite skips what it cannot do (kill a client's
	// connection) and does not count the server's own goroutines as
	// leaked by the adapter.
	Embedded bool
	// NewClient returns a new client of the adapter, connected to the
	// server. Required.
	NewClient Factory
}

const (
	// wait bounds every wait for something that should happen: a message
	// delivered, a call returning. Generous: it fails broken adapters, not
	// slow machines.
	wait = 5 * time.Second
	// quiet is how long the suite waits to see that nothing happens, e.g.
	// no message after unsubscribing.
	quiet = 200 * time.Millisecond
)

type suite struct {
	target    Target
	srv       *redistest.Server // the suite's own plain connections to target
	newClient Factory

	mu      sync.Mutex
	clients []backend.Client
}

// client returns a new client from the factory, closed when the test ends.
func (s *suite) client(t testing.TB) backend.Client {
	t.Helper()
	c := s.newClient(t)
	if c == nil {
		t.Fatal("backendtest: the factory returned a nil client")
	}
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *suite) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		c.Close()
	}
}

// Run runs the conformance suite against target, with clients from
// target.NewClient, as subtests of t. After the subtests, with every
// client closed, it fails t if goroutines started during Run are still
// running: an adapter must stop its goroutines (readers, subscription
// dispatchers, pool reapers) on Close. So Run must not run in parallel
// with other tests of the binary that start goroutines.
func Run(t *testing.T, target Target) {
	t.Helper()
	if len(target.Addrs) == 0 || target.NewClient == nil {
		t.Fatal("backendtest: Target.Addrs and Target.NewClient are required")
	}
	if target.Name == "" {
		target.Name = target.Addrs[0]
	}
	ignore := []goleak.Option{goleak.IgnoreCurrent()}
	if target.Embedded {
		ignore = append(ignore, embeddedServerGoroutines...)
	}
	srv := &redistest.Server{Name: target.Name, Addrs: target.Addrs, Cluster: target.Cluster, Embedded: target.Embedded}
	s := &suite{target: target, srv: srv, newClient: target.NewClient}
	// Cleanups run last-registered first: close the clients, then look for
	// leaks.
	t.Cleanup(func() { checkGoroutines(t, ignore) })
	t.Cleanup(s.closeAll)

	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"PipelineReplies", testPipelineReplies},
		{"PipelineOrderAcrossSlots", testPipelineOrder},
		{"PipelineConcurrent", testPipelineConcurrent},
		{"CrossSlot", testCrossSlot},
		{"DoFlat", testDoFlat},
		{"ScriptNoscriptFallback", testScriptFallback},
		{"ScriptRealAfterFlush", testScriptReal},
		{"ScriptReplies", testScriptReplies},
		{"ScriptsAcrossSlots", testScriptsAcrossSlots},
		{"WatchAbort", testWatchAbort},
		{"WatchCommit", testWatchCommit},
		{"WatchFnError", testWatchFnError},
		{"WatchNoCommands", testWatchNoCommands},
		{"WatchConcurrent", testWatchConcurrent},
		{"PubSub", testPubSub},
		{"PubSubFromScript", testPubSubFromScript},
		{"PubSubAcrossSlots", testPubSubAcrossSlots},
		{"PubSubIndependentSubscriptions", testPubSubIndependent},
		{"SubscriptionCloseWaitsForHandler", testSubscriptionCloseWaits},
		{"Resubscribed", testResubscribed},
		{"Channels", testChannels},
		{"ContextExpired", testContextExpired},
		{"ContextDeadlineBlocking", testContextBlocking},
		{"Close", testClose},
		{"CloseWhileBusy", testCloseWhileBusy},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, s) })
	}
}

// embeddedServerGoroutines are goroutines of the in-process miniredis
// server, not of the client under test: a server keeps a BLPOP the client
// gave up on (see testContextBlocking) blocked until its own timeout, as
// Redis does, and serves a connection a moment after the client closed it.
// Names as of miniredis v2.40.
var embeddedServerGoroutines = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).ServeConn.func1"),
	goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2.blocking.func2"),
	goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2.setCondTimer"),
}

// checkGoroutines fails t if goroutines other than ignored ones remain,
// retrying for a while since a closed client's goroutines end
// asynchronously.
func checkGoroutines(t *testing.T, ignore []goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := goleak.Find(ignore...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("backendtest: goroutines still running %v after every client was closed: %v", wait, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctx returns a context for one subtest: canceled when it ends, and
// bounded, so a hung adapter fails the test instead of the test binary.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// do runs cmds and fails the test if Do returns an error.
func do(t *testing.T, c backend.Pipeliner, cmds ...backend.Cmd) []backend.Reply {
	t.Helper()
	rs, err := c.Do(ctx(t), cmds...)
	if err != nil {
		t.Fatalf("Do %v: %v", lines(cmds), err)
	}
	if len(rs) != len(cmds) {
		t.Fatalf("Do of %d commands returned %d replies", len(cmds), len(rs))
	}
	return rs
}

func lines(cmds []backend.Cmd) [][]string {
	out := make([][]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.Line()
	}
	return out
}

// thirds returns one key per third of the slot space, prefix:<n>: on the
// test cluster one per master. Keys within two slots of a third's edge are
// passed over, so the thirds match the masters' ranges exactly.
func thirds(prefix string) []string {
	keys := make([]string, 3)
	found := 0
	for n := 0; found < 3; n++ {
		k := prefix + ":" + strconv.Itoa(n)
		slot := backend.KeySlot(k)
		i := slot * 3 / 16384
		if keys[i] != "" || slot%5461 <= 2 || slot%5461 >= 5459 {
			continue
		}
		keys[i] = k
		found++
	}
	return keys
}

// checkSpread fails the test if keys do not land on every master of a
// cluster target, which would make a cross-node test prove nothing.
func (s *suite) checkSpread(t *testing.T, keys []string) {
	t.Helper()
	if !s.target.Cluster {
		return
	}
	nodes := map[int]bool{}
	for _, k := range keys {
		nodes[s.nodeOf(t, k)] = true
	}
	if len(nodes) != len(s.target.Addrs) {
		t.Fatalf("backendtest: keys %q cover %d of %d nodes", keys, len(nodes), len(s.target.Addrs))
	}
}

// nodeOf returns the index in Addrs of the cluster master serving key: the
// one that does not redirect a read of it. Asking the nodes, rather than
// knowing their slot ranges, works for any cluster a Target names.
func (s *suite) nodeOf(t *testing.T, key string) int {
	t.Helper()
	for i := range s.target.Addrs {
		if r := s.srv.DoNode(t, i, "EXISTS", key); !backend.IsRedisError(r.Err, "MOVED") {
			return i
		}
	}
	t.Fatalf("backendtest: every node of %v redirects key %q: Target.Addrs must list every master", s.target.Addrs, key)
	return -1
}

// tag returns a key sharing the hash slot of every other tag(prefix, ...)
// key.
func tag(prefix, name string) string { return "{" + prefix + "}:" + name }

// within runs fn and fails the test if it has not returned within wait.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("%s did not return within %v", what, wait)
	}
}

func wantKind(t *testing.T, what string, r backend.Reply, k backend.Kind) {
	t.Helper()
	if r.Kind != k {
		t.Errorf("%s: reply kind %d, want %d: %v", what, r.Kind, k, r)
	}
}

func wantStr(t *testing.T, what string, r backend.Reply, want string) {
	t.Helper()
	if r.Kind != backend.KindString || r.Str != want {
		t.Errorf("%s: %v, want string %q", what, r, want)
	}
}

func wantInt(t *testing.T, what string, r backend.Reply, want int64) {
	t.Helper()
	if r.Kind != backend.KindInt || r.Int != want {
		t.Errorf("%s: %v, want integer %d", what, r, want)
	}
}

func wantNil(t *testing.T, what string, r backend.Reply) {
	t.Helper()
	if !r.IsNil() {
		t.Errorf("%s: %v, want nil", what, r)
	}
}

func wantErrIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

// mustNotCall is a TxFunc for calls that must fail before running it.
func mustNotCall(t *testing.T, what string) backend.TxFunc {
	return func(context.Context, backend.Tx) ([]backend.Cmd, error) {
		t.Errorf("%s: TxFunc called", what)
		return nil, errors.New("backendtest: TxFunc must not be called")
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf("backendtest: "+format, args...) }
