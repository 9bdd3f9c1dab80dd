// Package compat checks the Go server against the official JavaScript
// client: testdata/compat.cjs drives socket.io-client 4.x (from npm,
// installed into a cache directory on first use) through docs/PROTOCOL.md
// against two in-process server nodes sharing one Redis.
//
// TestJSClientExample runs examples/js-client/main.js against one server
// node, so the example users start from keeps working.
//
// Without node and npm (or when the install fails) the tests skip, unless
// REQUIRE_NODE=1 (CI), where they fail.
//
//	go test ./test/compat -run TestSocketIOClientCompat -v
package compat

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// clientVersion is the socket.io-client the existing SDKs ship with.
const clientVersion = "4.8.1"

func TestMain(m *testing.M) { redistest.Main(m) }

// requireNode skips (or, with REQUIRE_NODE=1, fails) the test.
func requireNode(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("REQUIRE_NODE") == "1" {
		t.Fatalf(format+" (REQUIRE_NODE=1 makes this a failure)", args...)
	}
	t.Skipf(format+"; set REQUIRE_NODE=1 to fail instead", args...)
}

// nodeModules installs socket.io-client into the cache directory
// (PRESENCE_NODE_CACHE, default <user cache>/presence-compat) unless it is
// there, and returns its node_modules.
func nodeModules(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireNode(t, "%s not on PATH: install Node.js (20+) and npm to run the socket.io-client compatibility test", tool)
		}
	}
	dir := os.Getenv("PRESENCE_NODE_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "presence-compat")
	}
	dir = filepath.Join(dir, "socket.io-client@"+clientVersion)
	mods := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "socket.io-client", "package.json")); err == nil {
		return mods
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error",
		"socket.io-client@"+clientVersion)
	out, err := cmd.CombinedOutput()
	if err != nil {
		requireNode(t, "npm install socket.io-client@%s into %s failed: %v\n%s", clientVersion, dir, err, out)
	}
	t.Logf("installed socket.io-client@%s into %s", clientVersion, dir)
	return mods
}

// TestSocketIOClientCompat runs testdata/compat.cjs with socket.io-client
// over WebSocket, long-polling, and polling upgraded to WebSocket, against
// two nodes on the embedded Redis and on a real one.
func TestSocketIOClientCompat(t *testing.T) {
	mods := nodeModules(t)
	script, err := filepath.Abs(filepath.Join("testdata", "compat.cjs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range redistest.Targets(t) {
		if srv.Cluster {
			continue // standalone and embedded suffice here; the Go suites cover the cluster
		}
		t.Run(srv.Name, func(t *testing.T) {
			prefix := redistest.Prefix(t)
			cfg := presence.Config{Addrs: srv.Addrs, KeyPrefix: prefix}
			a, b := siotest.StartServer(t, cfg, socketio.Options{}), siotest.StartServer(t, cfg, socketio.Options{})
			for _, mode := range []string{"websocket", "polling", "upgrade"} {
				t.Run(mode, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
					defer cancel()
					cmd := exec.CommandContext(ctx, "node", script, a, b, mode)
					cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
					out, err := cmd.CombinedOutput()
					if err != nil || !strings.Contains(string(out), "compat ok") {
						t.Fatalf("node compat.cjs %s: %v\n%s", mode, err, out)
					}
				})
			}
		})
	}
}

// TestJSClientExample runs examples/js-client/main.js, the JavaScript
// example of the README, against a server node on each standalone target
// (embedded and, when available, redis-server); it exits 0 only when every
// step behaved as docs/PROTOCOL.md says.
func TestJSClientExample(t *testing.T) {
	mods := nodeModules(t)
	script, err := filepath.Abs(filepath.Join("..", "..", "examples", "js-client", "main.js"))
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range redistest.Targets(t) {
		if srv.Cluster {
			continue
		}
		t.Run(srv.Name, func(t *testing.T) {
			cfg := presence.Config{Addrs: srv.Addrs, KeyPrefix: redistest.Prefix(t)}
			url := siotest.StartServer(t, cfg, socketio.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", script)
			cmd.Env = append(os.Environ(), "NODE_PATH="+mods, "PRESENCE_URL="+url,
				"PRESENCE_ROOM=js-example-"+srv.Name, "PRESENCE_USER=alice", "PRESENCE_TOKEN=")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "left; done") {
				t.Fatalf("node examples/js-client/main.js: %v\n%s", err, out)
			}
			t.Logf("%s", out)
		})
	}
}
