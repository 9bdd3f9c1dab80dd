// Package redistest provisions the Redis servers tests run against
// (docs/DESIGN.md §8): a standalone redis-server, a 3-master Redis Cluster, and the
// in-process embedded server, each on a free 127.0.0.1 port.
//
// Real servers are shared by the tests of one test binary: the first test
// that asks starts them, and Main, called from the package's TestMain, stops
// them and removes their directories after the last test. Tests sharing a
// server keep apart by putting Prefix(t) in every key, so nothing needs
// FLUSHALL. NewStandalone and NewCluster start private servers for tests that
// break them (restart, SCRIPT FLUSH races, ...), stopped by t.Cleanup.
//
// Without redis-server on PATH the real-server helpers skip the test, unless
// the environment sets REQUIRE_REDIS=1 (CI does), where they fail it. The
// embedded server never skips.
//
// Under go test -short (the fast mode) only the embedded server runs: the
// real-server helpers skip, whatever REQUIRE_REDIS says, and Targets and
// ForEach offer the embedded server alone.
//
// Typical use:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
//	func TestThing(t *testing.T) {
//		redistest.ForEach(t, func(t *testing.T, s *redistest.Server) {
//			key := redistest.Prefix(t) + ":k"
//			...
//		})
//	}
package redistest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/realtime-message/presence/embedded"
)

// Kind is the kind of a test server.
type Kind uint8

// Server kinds, in the order Targets returns them.
const (
	KindStandalone Kind = iota // one redis-server
	KindCluster                // a Redis Cluster of three masters, no replicas
	KindEmbedded               // package embedded (miniredis), in process
)

// Kinds returns every kind, in the order of Targets.
func Kinds() []Kind { return []Kind{KindStandalone, KindCluster, KindEmbedded} }

// String returns the kind's name, also the Name of its servers:
// "standalone", "cluster" or "embedded".
func (k Kind) String() string {
	switch k {
	case KindStandalone:
		return "standalone"
	case KindCluster:
		return "cluster"
	case KindEmbedded:
		return "embedded"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Server is a running test server. Tests must not change its fields.
type Server struct {
	Name     string   // Kind.String(), fit for a subtest name
	Kind     Kind     // what the server is
	Addrs    []string // host:port of every node; for a cluster, every master
	Cluster  bool     // Kind == KindCluster: connect with a cluster client
	Embedded bool     // Kind == KindEmbedded: miniredis, in this process

	// For a cluster, slots[i] is the first slot of Addrs[i]; node i owns
	// slots[i] up to slots[i+1]-1.
	slots []int
	procs []*proc
	emb   *embedded.Server
	dir   string // removed on stop when owned
}

// Addr returns the first node's address: the only one of a standalone or
// embedded server, a seed node of a cluster.
func (s *Server) Addr() string { return s.Addrs[0] }

// NodeForSlot returns the index in Addrs of the node serving a cluster slot
// (see backend.KeySlot); 0 for a server that is not a cluster.
func (s *Server) NodeForSlot(slot int) int {
	n := 0
	for i, first := range s.slots {
		if slot >= first {
			n = i
		}
	}
	return n
}

func (s *Server) stop() error {
	var errs []string
	for _, p := range s.procs {
		if err := p.stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if s.emb != nil {
		s.emb.Close()
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("redistest: stop %s: %s", s.Name, strings.Join(errs, "; "))
	}
	return nil
}

// lazy is one shared server, started on first use and stopped by Main.
type lazy struct {
	mu      sync.Mutex
	srv     *Server
	err     error
	tried   bool
	stopped bool
}

var (
	mainRunning atomic.Bool
	standalone  lazy
	cluster     lazy
)

func (l *lazy) get(t testing.TB, k Kind, start func(dir string) (*Server, error)) *Server {
	t.Helper()
	requireRedis(t)
	if !mainRunning.Load() {
		t.Fatalf("redistest: shared %s server: call redistest.Main(m) from TestMain, so the server is stopped after the tests", k)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		t.Fatalf("redistest: shared %s server requested after Main stopped it", k)
	}
	if !l.tried {
		l.tried = true
		dir, err := os.MkdirTemp("", "redistest-"+k.String()+"-")
		if err == nil {
			l.srv, err = start(dir)
			if err != nil {
				os.RemoveAll(dir)
			}
		}
		l.err = err
	}
	if l.err != nil {
		t.Fatalf("redistest: shared %s server: %v", k, l.err)
	}
	return l.srv
}

func (l *lazy) stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.srv == nil {
		return nil
	}
	err := l.srv.stop()
	l.srv = nil
	return err
}

// Main runs the tests of a package, then stops the shared servers the tests
// started, removes their directories, and exits with the tests' code. Call
// it from TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	mainRunning.Store(true)
	code := m.Run()
	for _, l := range []*lazy{&standalone, &cluster} {
		if err := l.stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// RequireEnv is the environment variable that turns a missing redis-server
// from a skip into a failure.
const RequireEnv = "REQUIRE_REDIS"

// Available reports whether redis-server is on PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

func requireRedis(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("redistest: -short runs the embedded server only; run without -short for redis-server and the cluster")
	}
	if Available() {
		return
	}
	msg := "redistest: redis-server not on PATH: install Redis 7 (e.g. apt-get install redis-server) to run this test"
	if os.Getenv(RequireEnv) == "1" {
		t.Fatal(msg + " (" + RequireEnv + "=1 makes this a failure)")
	}
	t.Skip(msg + ", or set " + RequireEnv + "=1 to fail instead of skipping")
}

// Standalone returns the test binary's shared redis-server, starting it on
// first use. Needs Main in TestMain.
func Standalone(t testing.TB) *Server {
	t.Helper()
	return standalone.get(t, KindStandalone, startStandalone)
}

// NewStandalone starts a private redis-server, stopped when the test ends.
func NewStandalone(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, startStandalone)
}

// startPrivate starts a server owned by one test and stops it at its end.
func startPrivate(t testing.TB, start func(dir string) (*Server, error)) *Server {
	t.Helper()
	requireRedis(t)
	s, err := start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Cluster returns the test binary's shared 3-master Redis Cluster, starting
// it on first use; it is ready when returned (every node reports
// cluster_state:ok and agrees on who serves every slot). Needs Main in
// TestMain.
func Cluster(t testing.TB) *Server {
	t.Helper()
	return cluster.get(t, KindCluster, startCluster)
}

// NewCluster starts a private 3-master Redis Cluster, stopped when the test
// ends.
func NewCluster(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, startCluster)
}

// Embedded starts an embedded server (package embedded) for this test,
// closed when the test ends. It is cheap, so each call gets its own.
func Embedded(t testing.TB) *Server {
	t.Helper()
	e, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Name: KindEmbedded.String(), Kind: KindEmbedded, Addrs: []string{e.Addr()}, Embedded: true, emb: e}
	t.Cleanup(e.Close)
	return s
}

// Get returns a server of kind k: Standalone, Cluster or Embedded.
func Get(t testing.TB, k Kind) *Server {
	t.Helper()
	switch k {
	case KindStandalone:
		return Standalone(t)
	case KindCluster:
		return Cluster(t)
	case KindEmbedded:
		return Embedded(t)
	}
	t.Fatalf("redistest: unknown kind %v", k)
	return nil
}

// Targets returns a server of every kind: standalone, cluster, embedded.
// Under -short, or without redis-server on PATH, it returns only the
// embedded server and logs why, rather than skip the calling test (without
// -short, REQUIRE_REDIS=1 fails it instead). ForEach reports the missing
// kinds as skipped subtests.
func Targets(t testing.TB) []*Server {
	t.Helper()
	if testing.Short() {
		t.Logf("redistest: -short: testing the embedded server only")
		return []*Server{Embedded(t)}
	}
	if !Available() {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("redistest: redis-server not on PATH and %s=1", RequireEnv)
		}
		t.Logf("redistest: redis-server not on PATH: testing the embedded server only (install Redis 7, or set %s=1 to fail)", RequireEnv)
		return []*Server{Embedded(t)}
	}
	return []*Server{Standalone(t), Cluster(t), Embedded(t)}
}

// ForEach runs fn as a subtest per kind, named after the kind; a kind that
// cannot run skips its own subtest only.
func ForEach(t *testing.T, fn func(t *testing.T, s *Server)) {
	t.Helper()
	for _, k := range Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			fn(t, Get(t, k))
		})
	}
}

var prefixSeq atomic.Uint64

// Prefix returns a key prefix unique to this call in this test binary, made
// of the test's last name element (at most 12 letters and digits), the
// process id and a sequence number, joined by '-': e.g. "Pipeline-1x3f-7".
// It has no '{', '}' or ':', so it can go inside a hash tag or before a
// ":suffix".
func Prefix(t testing.TB) string {
	name := t.Name()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range name {
		if b.Len() == 12 {
			break
		}
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		b.WriteString("t")
	}
	return b.String() + "-" + strconv.FormatInt(int64(os.Getpid()), 36) + "-" + strconv.FormatUint(prefixSeq.Add(1), 36)
}

// StartStandalone starts a private redis-server outside any test, for
// programs such as bench/cmd/presence-bench: a free 127.0.0.1 port, no
// persistence, a temporary directory. The caller must Stop it.
func StartStandalone() (*Server, error) {
	if !Available() {
		return nil, errors.New("redistest: redis-server is not on PATH (install Redis 7)")
	}
	dir, err := os.MkdirTemp("", "redistest-standalone-")
	if err != nil {
		return nil, err
	}
	s, err := startStandalone(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// StartCluster starts a 3-master Redis Cluster in a temporary directory,
// outside any test, for programs such as the benchmarks; the caller stops
// it with Stop.
func StartCluster() (*Server, error) {
	if !Available() {
		return nil, errors.New("redistest: redis-server is not on PATH (install Redis 7)")
	}
	dir, err := os.MkdirTemp("", "redistest-cluster-")
	if err != nil {
		return nil, err
	}
	s, err := startCluster(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Stop kills a server StartStandalone or StartCluster started, waits for it and removes
// its directory.
func (s *Server) Stop() error { return s.stop() }

// Pid returns the process id of the first node's redis-server, or 0 for the
// embedded server (it runs in this process).
func (s *Server) Pid() int {
	if len(s.procs) == 0 {
		return 0
	}
	return s.procs[0].cmd.Process.Pid
}
