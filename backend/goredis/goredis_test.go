package goredis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendtest"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luasrc"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// TestBackend runs the port's conformance suite on every kind of server,
// with clients built as users build them: New with the server's addresses,
// the mode detected.
func TestBackend(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			backendtest.Run(t, backendtest.Target{
				Name: s.Name, Addrs: s.Addrs, Cluster: s.Cluster, Embedded: s.Embedded,
				NewClient: func(t testing.TB) backend.Client {
					return newClient(t, s, Options{})
				},
			})
		})
	}
}

// testTimeout bounds every call a test makes.
const testTimeout = 10 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newClient connects to s as a user would (mode detected from the
// addresses), with opt's other fields, and closes the client when the test
// ends.
func newClient(t testing.TB, s *redistest.Server, opt Options) *Client {
	t.Helper()
	opt.Addrs = s.Addrs
	c, err := New(testContext(t), opt)
	if err != nil {
		t.Fatalf("New(%s): %v", s.Name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if (c.cluster != nil) != s.Cluster {
		t.Fatalf("New(%s): cluster client = %v", s.Name, c.cluster != nil)
	}
	return c
}

// testScript returns a script that is in no cache yet: its source names
// the test, so its SHA1 is new.
func testScript(t testing.TB, body string) *luasrc.Script {
	src := "-- " + t.Name() + " " + redistest.Prefix(t) + "\n" + body
	sum := sha1.Sum([]byte(src))
	return &luasrc.Script{Name: "test", Source: src, SHA1: hex.EncodeToString(sum[:])}
}

// mustDo runs cmds and fails the test on an error of Do.
func mustDo(t testing.TB, c backend.Pipeliner, cmds ...backend.Cmd) []backend.Reply {
	t.Helper()
	r, err := c.Do(testContext(t), cmds...)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(r) != len(cmds) {
		t.Fatalf("Do: %d replies for %d commands", len(r), len(cmds))
	}
	return r
}

// checkLeaks fails the test if goroutines started during it are still
// running when it ends, after the cleanups registered later (closing
// clients) have run.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}
