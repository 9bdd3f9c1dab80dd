package socketio_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.Open selects rueidis or goredis by name
	"github.com/realtime-message/presence/internal/chandouble"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// nodeConfig is one server node's configuration.
type nodeConfig struct {
	Backend   string // rueidis (default) or goredis
	Heartbeat string
	Metadata  string
	Prefix    string // key prefix; nodes sharing one see each other
	TTL       time.Duration
	Reaper    time.Duration // reaper interval; 0 = disabled
	Lookback  time.Duration
	Options   socketio.Options
	MaxMsg    int64
	// Wrap, when set, wraps the backend client the service runs on.
	Wrap func(backend.Client) backend.Client
	// DisableUserIndex turns the service's user index off.
	DisableUserIndex bool
	// PubSub is Config.PubSub; with channels or sharded, a client without
	// backend.ChannelSubscriber gets the test double's.
	PubSub string
}

// node is one in-process presence server: service, Socket.IO server,
// binding and HTTP server on a loopback port.
type node struct {
	t       testing.TB
	svc     *presence.Service
	io      *socket.Server
	binding *socketio.Binding
	http    *http.Server
	url     string
	stopped bool
}

func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startNode(t testing.TB, srv *redistest.Server, nc nodeConfig) *node {
	t.Helper()
	if nc.Prefix == "" {
		nc.Prefix = redistest.Prefix(t)
	}
	cfg := presence.Config{
		Backend:        nc.Backend,
		Addrs:          srv.Addrs,
		Heartbeat:      nc.Heartbeat,
		Metadata:       nc.Metadata,
		KeyPrefix:      nc.Prefix,
		TTL:            nc.TTL,
		ReaperInterval: -1,
		ReaperLookback: nc.Lookback,
		Logger:         quietLogger(t),

		DisableUserIndex: nc.DisableUserIndex,
	}
	if nc.Reaper > 0 {
		cfg.ReaperInterval = nc.Reaper
	}
	cfg.PubSub = nc.PubSub
	if nc.PubSub == presence.PubSubChannels || nc.PubSub == presence.PubSubSharded {
		wrap := nc.Wrap
		nc.Wrap = func(c backend.Client) backend.Client {
			if wrap != nil {
				c = wrap(c)
			}
			return chandouble.Wrap(c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var svc *presence.Service
	var err error
	if nc.Wrap == nil {
		svc, err = presence.Open(ctx, cfg)
	} else {
		var bc backend.Client
		if bc, err = presence.NewClient(ctx, cfg); err == nil {
			t.Cleanup(func() { bc.Close() })
			svc, err = presence.New(nc.Wrap(bc), cfg)
		}
	}
	if err != nil {
		t.Fatalf("presence service: %v", err)
	}
	io := socket.NewServer(nil, socketio.ServerOptions(nc.MaxMsg))
	if nc.Options.Logger == nil {
		nc.Options.Logger = quietLogger(t)
	}
	b, err := socketio.Bind(ctx, io, svc, nc.Options)
	if err != nil {
		svc.Close()
		t.Fatalf("Bind: %v", err)
	}
	url, hs := siotest.Listen(t, io)
	n := &node{t: t, svc: svc, io: io, binding: b, http: hs, url: url}
	t.Cleanup(func() { n.stop() })
	return n
}

// stop shuts the node down gracefully, as the server does on SIGTERM.
func (n *node) stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.binding.Shutdown(ctx); err != nil {
		n.t.Errorf("binding shutdown: %v", err)
	}
	n.io.Close(nil)
	n.http.Close()
	n.svc.Flush(ctx)
	n.svc.Close()
}

// kill stops the node without telling Redis anything, as a crash would:
// the sockets are cut and the service closed before any leave.
func (n *node) kill() {
	n.stopped = true
	n.svc.Close() // closed first: the disconnect cleanups fail
	n.http.Close()
	n.io.Close(nil)
}

// client is a test Socket.IO client bound to a test.
type client struct {
	t testing.TB
	c *siotest.Client
}

// dial connects a client and waits for the connection.
func dial(t testing.TB, url string, opts ...siotest.Options) *client {
	t.Helper()
	c, err := tryDial(t, url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tryDial(t testing.TB, url string, opts ...siotest.Options) (*client, error) {
	t.Helper()
	var o siotest.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	c, err := siotest.Dial(context.Background(), url, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c}, nil
}

func (c *client) id() string { return c.c.ID() }

// close disconnects the client, as socket.disconnect() does.
func (c *client) close() { c.c.Close() }

// call emits event with args and an ack callback, and returns the ack.
func (c *client) call(event string, args ...any) map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.c.CallMap(ctx, event, args...)
	if err != nil {
		c.t.Fatalf("%s: %v", event, err)
	}
	return got
}

// ok calls and requires {ok:true}.
func (c *client) ok(event string, args ...any) map[string]any {
	c.t.Helper()
	a := c.call(event, args...)
	if a["ok"] != true {
		c.t.Fatalf("%s %v: ack %v, want ok:true", event, args, a)
	}
	return a
}

// fail calls and requires {ok:false, error, code: wantCode}, with
// retryable:true exactly for the codes a client may retry as is.
func (c *client) fail(wantCode, event string, args ...any) map[string]any {
	c.t.Helper()
	a := c.call(event, args...)
	if a["ok"] != false {
		c.t.Fatalf("%s %v: ack %v, want ok:false", event, args, a)
	}
	if msg, _ := a["error"].(string); msg == "" {
		c.t.Fatalf("%s: ack %v has no error message", event, a)
	}
	if a["code"] != wantCode {
		c.t.Fatalf("%s: ack %v, want code %s", event, a, wantCode)
	}
	retryable := map[string]bool{"RATE_LIMITED": true, "OVERLOADED": true, "TIMEOUT": true, "UNAVAILABLE": true, "SHUTTING_DOWN": true}
	if got, _ := a["retryable"].(bool); got != retryable[wantCode] {
		c.t.Fatalf("%s: ack %v: retryable %v, want %v", event, a, got, retryable[wantCode])
	}
	return a
}

// waitEvent waits for a received event named name whose payload matches.
func (c *client) waitEvent(name string, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	return c.waitEventFor(10*time.Second, name, match)
}

func (c *client) waitEventFor(d time.Duration, name string, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := c.c.WaitEvent(ctx, name, match)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// noEvent requires that no matching event arrives within d.
func (c *client) noEvent(d time.Duration, name string, match func(map[string]any) bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := c.c.WaitEvent(ctx, name, match); err == nil {
		c.t.Fatalf("unexpected %s event %v", name, m)
	}
}

// presenceEvent matches a presence:event of type typ for conn.
func presenceEvent(typ, connID string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == typ && m["connId"] == connID }
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

// jsonEq compares two values by their JSON encoding.
func jsonEq(t testing.TB, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("got %s, want %s", g, w)
	}
}
