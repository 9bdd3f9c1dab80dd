package redistest

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
)

func TestMain(m *testing.M) { Main(m) }

func TestTargets(t *testing.T) {
	start := time.Now()
	servers := Targets(t)
	t.Logf("Targets took %v", time.Since(start))
	var names []string
	for _, s := range servers {
		names = append(names, s.Name)
		for i := range s.Addrs {
			if r := s.DoNode(t, i, "PING"); r.Str != "PONG" {
				t.Errorf("%s node %d: PING: %v", s.Name, i, r)
			}
		}
	}
	if testing.Short() || !Available() {
		if got := strings.Join(names, ","); got != "embedded" {
			t.Fatalf("Targets under -short or without redis-server: %s", got)
		}
		t.Skip("-short or redis-server not on PATH: only the embedded target was checked")
	}
	if got := strings.Join(names, ","); got != "standalone,cluster,embedded" {
		t.Fatalf("Targets: %s", got)
	}
	if s := servers[1]; !s.Cluster || s.Embedded || s.Kind != KindCluster || len(s.Addrs) != 3 {
		t.Errorf("cluster server: %+v", s)
	}
	if s := servers[2]; s.Cluster || !s.Embedded || s.Kind != KindEmbedded || len(s.Addrs) != 1 {
		t.Errorf("embedded server: %+v", s)
	}
	// Shared servers are shared.
	if Standalone(t) != servers[0] || Cluster(t) != servers[1] {
		t.Error("Standalone/Cluster returned a new server on the second call")
	}
}

func TestClusterSlots(t *testing.T) {
	s := Cluster(t)
	for i, addr := range s.Addrs {
		// CLUSTER SLOTS: [[start end [ip port id] ...] ...]
		r := s.DoNode(t, i, "CLUSTER", "SLOTS")
		ranges, err := r.AsArray()
		if err != nil || len(ranges) != 3 {
			t.Fatalf("%s: CLUSTER SLOTS %v %v", addr, r, err)
		}
		covered, masters := 0, map[string]bool{}
		for _, rg := range ranges {
			lo, _ := rg.Elems[0].AsInt()
			hi, _ := rg.Elems[1].AsInt()
			covered += int(hi - lo + 1)
			master := fmt.Sprintf("%s:%d", rg.Elems[2].Elems[0].Str, rg.Elems[2].Elems[1].Int)
			masters[master] = true
			if want := s.Addrs[s.NodeForSlot(int(lo))]; master != want || s.NodeForSlot(int(hi)) != s.NodeForSlot(int(lo)) {
				t.Errorf("%s: slots %d-%d served by %s; NodeForSlot says %s", addr, lo, hi, master, want)
			}
		}
		if covered != 16384 || len(masters) != 3 {
			t.Errorf("%s: %d slots covered by %d masters", addr, covered, len(masters))
		}
	}
}

func TestClusterKeySlot(t *testing.T) {
	s := Cluster(t)
	p := Prefix(t)
	keys := []string{"foo", "bar", "", "user1000", "{user1000}.following", "{user1000}.followers", "{}x", "a{b}c", "a{b}c{d}", "{{b}}", "{abc", "{" + p + "}:x", p + ":1", p + ":2", p + ":3", "ключ"}
	nodes := map[int]bool{}
	for _, k := range keys {
		r := s.Do(t, "CLUSTER", "KEYSLOT", k)
		if r.Int != int64(backend.KeySlot(k)) {
			t.Errorf("CLUSTER KEYSLOT %q = %v, backend.KeySlot = %d", k, r, backend.KeySlot(k))
		}
		// Do follows MOVED to the owner; the owner has it, the others redirect.
		if r := s.Do(t, "SET", k, "v-"+k); r.Str != "OK" {
			t.Fatalf("SET %q: %v", k, r)
		}
		owner := s.NodeForSlot(backend.KeySlot(k))
		nodes[owner] = true
		for i := range s.Addrs {
			r := s.DoNode(t, i, "GET", k)
			if i == owner && r.Str != "v-"+k {
				t.Errorf("GET %q on owner %d: %v", k, i, r)
			}
			if i != owner && !backend.IsRedisError(r.Err, "MOVED") {
				t.Errorf("GET %q on node %d, not the owner: %v", k, i, r)
			}
		}
		s.Do(t, "DEL", k)
	}
	if len(nodes) != 3 {
		t.Errorf("keys landed on %d nodes, want 3", len(nodes))
	}
}

func TestStandaloneConfig(t *testing.T) {
	s := Standalone(t)
	for param, want := range map[string]string{"save": "", "appendonly": "no", "bind": "127.0.0.1"} {
		r := s.Do(t, "CONFIG", "GET", param)
		if len(r.Elems) != 2 || r.Elems[1].Str != want {
			t.Errorf("CONFIG GET %s: %v, want %q", param, r, want)
		}
	}
}

func TestFlushScripts(t *testing.T) {
	ForEach(t, func(t *testing.T, s *Server) {
		var shas []string
		for i := range s.Addrs {
			r := s.DoNode(t, i, "SCRIPT", "LOAD", "return 1")
			shas = append(shas, r.Str)
		}
		FlushScripts(t, s)
		for i := range s.Addrs {
			r := s.DoNode(t, i, "SCRIPT", "EXISTS", shas[i])
			if len(r.Elems) != 1 || r.Elems[0].Int != 0 {
				t.Errorf("node %d: script still cached after FlushScripts: %v", i, r)
			}
		}
	})
}

func TestNewStandaloneStops(t *testing.T) {
	requireRedis(t)
	var s *Server
	var dir string
	t.Run("run", func(t *testing.T) {
		s = NewStandalone(t)
		dir = s.procs[0].dir
		if r := s.Do(t, "SET", "k", "v"); r.Str != "OK" {
			t.Fatal(r)
		}
		if s == Standalone(t) {
			t.Fatal("NewStandalone returned the shared server")
		}
	})
	if s == nil {
		t.Fatal("no server")
	}
	select {
	case <-s.procs[0].done: // reaped: no zombie
	default:
		t.Error("process not reaped after the test ended")
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("server still listening after the test ended")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir %s left behind: %v", dir, err)
	}
}

func TestEmbeddedPerCall(t *testing.T) {
	a, b := Embedded(t), Embedded(t)
	if a.Addr() == b.Addr() {
		t.Fatal("Embedded returned the same server twice")
	}
	a.Do(t, "SET", "k", "v")
	if r := b.Do(t, "GET", "k"); !r.IsNil() {
		t.Fatalf("servers share data: %v", r)
	}
}

func TestPrefix(t *testing.T) {
	seen := map[string]bool{}
	var mu sync.Mutex
	t.Run("sub/with odd{chars}:and more", func(t *testing.T) {
		for range 100 {
			p := Prefix(t)
			if strings.ContainsAny(p, "{}: /") || len(p) > 30 {
				t.Fatalf("Prefix %q", p)
			}
			mu.Lock()
			if seen[p] {
				t.Fatalf("Prefix %q repeated", p)
			}
			seen[p] = true
			mu.Unlock()
		}
	})
	t.Log(Prefix(t))
}

// fakeTB records Skip and Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

type stop struct{}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Skip(args ...any)          { f.skipped = fmt.Sprint(args...); panic(stop{}) }
func (f *fakeTB) Fatal(args ...any)         { f.failed = fmt.Sprint(args...); panic(stop{}) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.Fatal(fmt.Sprintf(s, a...)) }

func callFake(fn func(testing.TB)) (f *fakeTB) {
	f = &fakeTB{}
	defer func() {
		if r := recover(); r != nil && r != (stop{}) {
			panic(r)
		}
	}()
	fn(f)
	return f
}

func TestSkipWithoutRedis(t *testing.T) {
	if testing.Short() {
		// The fast mode skips real servers whatever REQUIRE_REDIS says.
		t.Setenv(RequireEnv, "1")
		f := callFake(func(tb testing.TB) { Standalone(tb) })
		if !strings.Contains(f.skipped, "-short") || f.failed != "" {
			t.Errorf("under -short with REQUIRE_REDIS=1: skipped %q failed %q", f.skipped, f.failed)
		}
		return
	}
	t.Setenv("PATH", t.TempDir())
	t.Setenv(RequireEnv, "")
	f := callFake(func(tb testing.TB) { NewStandalone(tb) })
	if !strings.Contains(f.skipped, "redis-server not on PATH") || f.failed != "" {
		t.Errorf("without REQUIRE_REDIS: skipped %q failed %q", f.skipped, f.failed)
	}
	t.Setenv(RequireEnv, "1")
	f = callFake(func(tb testing.TB) { Standalone(tb) })
	if !strings.Contains(f.failed, "REQUIRE_REDIS=1") || f.skipped != "" {
		t.Errorf("with REQUIRE_REDIS=1: skipped %q failed %q", f.skipped, f.failed)
	}
}
