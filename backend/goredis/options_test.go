package goredis

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luasrc"
)

func TestNewFromURL(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := testContext(t)
			urls := []string{"redis://" + s.Addrs[0]}
			opts := []Options{{URL: urls[0]}}
			if s.Cluster {
				// Every seed named, as redis.ParseClusterURL reads them.
				opts = append(opts, Options{URL: "redis://" + s.Addrs[0] + "?addr=" + strings.Join(s.Addrs[1:], "&addr=")})
				// Seeds in the URL and in Addrs.
				opts = append(opts, Options{URL: urls[0], Addrs: s.Addrs[1:]})
			}
			for _, opt := range opts {
				u := opt.URL
				c, err := New(ctx, opt)
				if err != nil {
					t.Fatalf("New(%s): %v", u, err)
				}
				if (c.cluster != nil) != s.Cluster {
					t.Errorf("New(%s): cluster client = %v, want %v", u, c.cluster != nil, s.Cluster)
				}
				key := "{" + redistest.Prefix(t) + "}:k"
				r := mustDo(t, c, backend.K("SET", key, "v"), backend.K("GET", key))
				if r[1].Str != "v" {
					t.Errorf("New(%s): GET = %v", u, r[1])
				}
				if err := c.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
}

func TestNewURLDatabase(t *testing.T) {
	s := redistest.Standalone(t)
	ctx := testContext(t)
	c, err := New(ctx, Options{URL: "redis://" + s.Addr() + "/3"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := redistest.Prefix(t) + ":db"
	mustDo(t, c, backend.K("SET", key, "three"))
	for db, want := range map[int]string{0: "", 3: "three"} {
		rc := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db})
		got, _ := rc.Get(ctx, key).Result()
		_ = rc.Close()
		if got != want {
			t.Errorf("GET in DB %d = %q, want %q", db, got, want)
		}
	}

	// The DB field wins over the URL's.
	c2, err := New(ctx, Options{URL: "redis://" + s.Addr() + "/3", DB: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if r := mustDo(t, c2, backend.K("GET", key)); !r[0].IsNil() {
		t.Errorf("GET in DB 4 = %v, want nil", r[0])
	}
}

func TestNewModes(t *testing.T) {
	ctx := testContext(t)
	sa := redistest.Standalone(t)
	cl := redistest.Cluster(t)
	// Forced modes agree with the server.
	c, err := New(ctx, Options{Addrs: cl.Addrs[:1], Mode: ModeCluster})
	if err != nil || c.cluster == nil {
		t.Fatalf("ModeCluster with one seed: %v, cluster=%v", err, err == nil && c.cluster != nil)
	}
	c.Close()
	c, err = New(ctx, Options{Addrs: sa.Addrs, Mode: ModeStandalone})
	if err != nil || c.cluster != nil {
		t.Fatalf("ModeStandalone: %v", err)
	}
	c.Close()
	// One cluster node found by probing.
	c, err = New(ctx, Options{Addrs: cl.Addrs[1:2]})
	if err != nil || c.cluster == nil {
		t.Fatalf("ModeAuto on a cluster node: %v", err)
	}
	c.Close()
}

func TestNewErrors(t *testing.T) {
	ctx := testContext(t)
	sa := redistest.Standalone(t)
	cl := redistest.Cluster(t)
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"no address", Options{}, "no server address"},
		{"url and addrs standalone", Options{URL: "redis://" + sa.Addr(), Addrs: sa.Addrs, Mode: ModeStandalone}, "one address"},
		{"bad scheme", Options{URL: "http://" + sa.Addr()}, "scheme"},
		{"bad addr", Options{Addrs: []string{"localhost"}}, "address"},
		{"bad mode", Options{Addrs: sa.Addrs, Mode: 7}, "Mode"},
		{"bad protocol", Options{Addrs: sa.Addrs, Protocol: 4}, "Protocol"},
		{"standalone with seeds", Options{Addrs: cl.Addrs, Mode: ModeStandalone}, "one address"},
		{"cluster with DB", Options{Addrs: cl.Addrs, DB: 2}, "DB 2"},
		{"probed cluster with DB", Options{URL: "redis://" + cl.Addr() + "/2"}, "DB 2"},
		{"stale script", Options{Addrs: sa.Addrs, Preload: []*luasrc.Script{{Name: "stale", Source: "return 1", SHA1: "0000"}}}, "go generate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(ctx, tc.opt)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			// The adapters prefix their errors alike: backend/<adapter>.
			if !strings.HasPrefix(err.Error(), "backend/goredis: ") {
				t.Errorf("error %q lacks the prefix backend/goredis:", err)
			}
		})
	}
}

func TestNewUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	for _, mode := range []Mode{ModeAuto, ModeStandalone, ModeCluster} {
		timeouts := []time.Duration{100 * time.Millisecond}
		if mode == ModeAuto {
			// How long go-redis takes to give up by itself (it dials five
			// times per attempt and retries the command).
			timeouts = append(timeouts, 5*time.Second)
		}
		for _, timeout := range timeouts {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			c, err := New(ctx, Options{Addrs: []string{addr}, Mode: mode})
			d := time.Since(start)
			cancel()
			if err == nil {
				c.Close()
				t.Errorf("%v: New succeeded against a closed port", mode)
				continue
			}
			t.Logf("%v, %v deadline: failed after %v: %v", mode, timeout, d, err)
			if d > timeout+100*time.Millisecond {
				t.Errorf("%v: New took %v, past its %v deadline", mode, d, timeout)
			}
		}
	}
}

func TestNewAuth(t *testing.T) {
	s := redistest.NewStandalone(t)
	ctx := testContext(t)
	for _, cmd := range [][]string{
		{"ACL", "SETUSER", "presence", "on", ">secret", "~*", "&*", "+@all"},
		{"CONFIG", "SET", "requirepass", "topsecret"},
	} {
		if r := s.Do(t, cmd...); r.Str != "OK" {
			t.Fatalf("%v: %v", cmd, r)
		}
	}
	for _, tc := range []struct {
		name string
		opt  Options
		ok   bool
	}{
		{"no password", Options{Addrs: s.Addrs}, false},
		{"wrong password", Options{Addrs: s.Addrs, Password: "nope"}, false},
		{"password", Options{Addrs: s.Addrs, Password: "topsecret"}, true},
		{"user", Options{Addrs: s.Addrs, Username: "presence", Password: "secret"}, true},
		{"user in URL", Options{URL: "redis://presence:secret@" + s.Addr()}, true},
		{"fields win over URL", Options{URL: "redis://presence:wrong@" + s.Addr(), Password: "secret"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(ctx, tc.opt)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want success %v", err, tc.ok)
			}
			if err != nil {
				return
			}
			defer c.Close()
			if r := mustDo(t, c, backend.C("PING", nil)); r[0].Str != "PONG" {
				t.Errorf("PING: %v", r[0])
			}
		})
	}
}
