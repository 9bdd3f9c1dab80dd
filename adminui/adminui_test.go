package adminui_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/adminui"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

func TestMain(m *testing.M) { redistest.Main(m) }

const (
	user     = "admin"
	password = "correct horse"
)

func hash(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// start serves a presence binding with the admin namespace on the
// embedded Redis and returns its URL.
func start(t *testing.T, o adminui.Options, so socketio.Options) string {
	t.Helper()
	return serve(t, &o, so)
}

// serve is start, without the admin namespace when o is nil.
func serve(t testing.TB, o *adminui.Options, so socketio.Options) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := redistest.Embedded(t)
	svc, err := presence.Open(ctx, presence.Config{Addrs: srv.Addrs, KeyPrefix: redistest.Prefix(t), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	io := socket.NewServer(nil, socketio.ServerOptions(0))
	so.Logger = log
	b, err := socketio.Bind(ctx, io, svc, so)
	if err != nil {
		svc.Close()
		t.Fatal(err)
	}
	var a *adminui.Admin
	if o != nil {
		if o.Logger == nil {
			o.Logger = log
		}
		if a, err = adminui.Instrument(io, *o); err != nil {
			t.Fatal(err)
		}
	}
	url, hs := siotest.Listen(t, io)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if a != nil {
			a.Close()
		}
		b.Shutdown(ctx)
		io.Close(nil)
		hs.Close()
		svc.Close()
	})
	return url
}

func login(t *testing.T, url string, auth map[string]any) (*siotest.Client, error) {
	t.Helper()
	c, err := siotest.Dial(context.Background(), url, siotest.Options{Namespace: "/admin", Auth: auth})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func dial(t *testing.T, url string, o siotest.Options) *siotest.Client {
	t.Helper()
	c, err := siotest.Dial(context.Background(), url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitArgs waits for an event whose arguments satisfy match, removes it
// from the client's buffer and returns its arguments.
func waitArgs(t *testing.T, c *siotest.Client, name string, match func(args []json.RawMessage) bool) []json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := c.WaitEventArgs(ctx, name, func(e siotest.Event) bool { return match(e.Args) })
	if err != nil {
		t.Fatal(err)
	}
	return e.Args
}

func str(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// args returns a matcher of the leading string arguments.
func args(want ...string) func([]json.RawMessage) bool {
	return func(a []json.RawMessage) bool {
		if len(a) < len(want) {
			return false
		}
		for i, w := range want {
			if str(a[i]) != w {
				return false
			}
		}
		return true
	}
}

type sock struct {
	ID        string         `json:"id"`
	ClientID  string         `json:"clientId"`
	Transport string         `json:"transport"`
	Nsp       string         `json:"nsp"`
	Data      map[string]any `json:"data"`
	Rooms     []string       `json:"rooms"`
	Handshake struct {
		Address string            `json:"address"`
		Headers map[string]string `json:"headers"`
		Query   map[string]string `json:"query"`
		URL     string            `json:"url"`
	} `json:"handshake"`
}

func TestOptionsRefused(t *testing.T) {
	io := socket.NewServer(nil, socketio.ServerOptions(0))
	defer io.Close(nil)
	h := hash(t, password)
	for name, o := range map[string]adminui.Options{
		"no credentials":           {},
		"no username":              {PasswordHash: h},
		"plain password as hash":   {Username: user, PasswordHash: password},
		"no-auth with credentials": {NoAuth: true, Username: user, PasswordHash: h},
		"unknown mode":             {Username: user, PasswordHash: h, Mode: "debug"},
		"root namespace":           {Username: user, PasswordHash: h, Namespace: "/"},
	} {
		if a, err := adminui.Instrument(io, o); err == nil {
			a.Close()
			t.Errorf("%s: Instrument accepted %+v", name, o)
		}
	}
}

func TestLogin(t *testing.T) {
	url := start(t, adminui.Options{Username: user, PasswordHash: hash(t, password)}, socketio.Options{})

	for name, auth := range map[string]map[string]any{
		"wrong password":     {"username": user, "password": "wrong"},
		"wrong username":     {"username": "root", "password": password},
		"no credentials":     nil,
		"unknown session id": {"sessionId": "0123456789abcdef0123456789abcdef"},
	} {
		_, err := login(t, url, auth)
		var ce *siotest.ConnectError
		if !errors.As(err, &ce) || ce.Message != "invalid credentials" {
			t.Errorf("%s: got %v, want connect_error \"invalid credentials\"", name, err)
		}
	}

	c, err := login(t, url, map[string]any{"username": user, "password": password})
	if err != nil {
		t.Fatal(err)
	}
	session := str(waitArgs(t, c, "session", func([]json.RawMessage) bool { return true })[0])
	if len(session) < 32 {
		t.Fatalf("session id %q: want 128 random bits", session)
	}
	cfg := waitArgs(t, c, "config", func([]json.RawMessage) bool { return true })
	var config struct {
		SupportedFeatures []string `json:"supportedFeatures"`
	}
	if err := json.Unmarshal(cfg[0], &config); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"JOIN", "LEAVE", "DISCONNECT", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"} {
		if !slices.Contains(config.SupportedFeatures, f) {
			t.Errorf("config %v lacks %s", config.SupportedFeatures, f)
		}
	}
	if slices.Contains(config.SupportedFeatures, "EMIT") {
		t.Errorf("config %v offers EMIT, which is not served", config.SupportedFeatures)
	}

	// The UI reconnects with the session id alone.
	again, err := login(t, url, map[string]any{"sessionId": session})
	if err != nil {
		t.Fatalf("login with the session id: %v", err)
	}
	waitArgs(t, again, "config", func([]json.RawMessage) bool { return true })
}

func TestNoAuth(t *testing.T) {
	url := start(t, adminui.Options{NoAuth: true}, socketio.Options{})
	c, err := login(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitArgs(t, c, "config", func([]json.RawMessage) bool { return true })
}

// TestSocketsAndRooms follows a presence client through the admin
// namespace: listed, connected, joined, left, disconnected; its
// credentials hidden.
func TestSocketsAndRooms(t *testing.T) {
	// The connect gate waits CallTimeout+1s for a socket's packets; a
	// large one makes an admin socket whose gate never opened fail the
	// waits below.
	url := start(t, adminui.Options{Username: user, PasswordHash: hash(t, password), StatsInterval: 100 * time.Millisecond},
		socketio.Options{CallTimeout: 30 * time.Second})
	admin, err := login(t, url, map[string]any{"username": user, "password": password})
	if err != nil {
		t.Fatal(err)
	}
	waitArgs(t, admin, "all_sockets", func([]json.RawMessage) bool { return true })

	q := map[string][]string{"token": {"s3cret-token"}}
	c := dial(t, url, siotest.Options{Query: q, Header: map[string][]string{"Authorization": {"Bearer s3cret-token"}}})
	a := waitArgs(t, admin, "socket_connected", func(a []json.RawMessage) bool {
		var s sock
		return json.Unmarshal(a[0], &s) == nil && s.ID == c.ID()
	})
	var s sock
	json.Unmarshal(a[0], &s)
	if s.Nsp != "/" || s.Transport != "websocket" || !slices.Contains(s.Rooms, c.ID()) || s.ClientID == "" {
		t.Errorf("socket_connected %s: want nsp /, websocket, its own room, a client id", a[0])
	}
	if strings.Contains(string(a[0]), "s3cret") {
		t.Errorf("socket_connected shows the client's token: %s", a[0])
	}
	if s.Handshake.Query["token"] != "[redacted]" || s.Handshake.Headers["authorization"] != "[redacted]" {
		t.Errorf("handshake %+v: want the token redacted", s.Handshake)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m, err := c.CallMap(ctx, socketio.EventJoin, map[string]any{"roomId": "room-a", "userId": "alice", "state": map[string]any{"x": 1}}); err != nil || m["ok"] != true {
		t.Fatalf("join: %v %v", m, err)
	}
	waitArgs(t, admin, "room_joined", args("/", "room-a", c.ID()))

	// A UI opened now lists the socket in its rooms.
	late, err := login(t, url, map[string]any{"username": user, "password": password})
	if err != nil {
		t.Fatal(err)
	}
	all := waitArgs(t, late, "all_sockets", func([]json.RawMessage) bool { return true })
	var list []sock
	if err := json.Unmarshal(all[0], &list); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(s sock) bool { return s.ID == c.ID() })
	if i < 0 || !slices.Contains(list[i].Rooms, "room-a") {
		t.Fatalf("all_sockets %s: want %s in room-a", all[0], c.ID())
	}
	if j := slices.IndexFunc(list, func(s sock) bool { return s.ID == late.ID() }); j < 0 || list[j].Nsp != "/admin" {
		t.Errorf("all_sockets %s: want the admin socket %s in /admin", all[0], late.ID())
	}

	// The stats count the connections and the namespaces' sockets.
	type nspStats struct {
		Name         string `json:"name"`
		SocketsCount int    `json:"socketsCount"`
	}
	waitArgs(t, admin, "server_stats", func(a []json.RawMessage) bool {
		var st struct {
			ClientsCount int        `json:"clientsCount"`
			Namespaces   []nspStats `json:"namespaces"`
		}
		return json.Unmarshal(a[0], &st) == nil && st.ClientsCount == 3 &&
			slices.Contains(st.Namespaces, nspStats{"/", 1}) && slices.Contains(st.Namespaces, nspStats{"/admin", 2})
	})

	if m, err := c.CallMap(ctx, socketio.EventLeave, map[string]any{"roomId": "room-a"}); err != nil || m["ok"] != true {
		t.Fatalf("leave: %v %v", m, err)
	}
	waitArgs(t, admin, "room_left", args("/", "room-a", c.ID()))
	c.Close()
	waitArgs(t, admin, "socket_disconnected", args("/", c.ID()))
}

func TestAggregatedCounters(t *testing.T) {
	url := start(t, adminui.Options{NoAuth: true, StatsInterval: 50 * time.Millisecond}, socketio.Options{})
	admin, err := login(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitArgs(t, admin, "config", func([]json.RawMessage) bool { return true })
	c := dial(t, url, siotest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CallMap(ctx, socketio.EventJoin, map[string]any{"roomId": "r", "userId": "u"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"rawConnection": false, "packetsIn": false, "bytesIn": false, "packetsOut": false, "bytesOut": false}
	waitArgs(t, admin, "server_stats", func(a []json.RawMessage) bool {
		var st struct {
			AggregatedEvents []struct {
				Type  string `json:"type"`
				Count int    `json:"count"`
			} `json:"aggregatedEvents"`
		}
		json.Unmarshal(a[0], &st)
		for _, e := range st.AggregatedEvents {
			if _, ok := want[e.Type]; ok && e.Count > 0 {
				want[e.Type] = true
			}
		}
		for _, ok := range want {
			if !ok {
				return false
			}
		}
		return true
	})
}

func TestActions(t *testing.T) {
	url := start(t, adminui.Options{Username: user, PasswordHash: hash(t, password)}, socketio.Options{CallTimeout: 30 * time.Second})
	admin, err := login(t, url, map[string]any{"username": user, "password": password})
	if err != nil {
		t.Fatal(err)
	}
	waitArgs(t, admin, "all_sockets", func([]json.RawMessage) bool { return true })
	c := dial(t, url, siotest.Options{})
	waitArgs(t, admin, "socket_connected", func(a []json.RawMessage) bool { return strings.Contains(string(a[0]), c.ID()) })

	// Sent right after the admin's connect: it must not wait for a gate.
	admin.Emit("join", "/", "vip", c.ID())
	waitArgs(t, admin, "room_joined", args("/", "vip", c.ID()))
	admin.Emit("leave", "/", "vip", c.ID())
	waitArgs(t, admin, "room_left", args("/", "vip", c.ID()))

	// Unknown namespaces are ignored, never created.
	admin.Emit("join", "/nope", "vip", c.ID())
	admin.Emit("_disconnect", "/", false, c.ID())
	waitArgs(t, admin, "socket_disconnected", args("/", c.ID()))
	stats := waitArgs(t, admin, "server_stats", func([]json.RawMessage) bool { return true })
	if strings.Contains(string(stats[0]), `"/nope"`) {
		t.Errorf("server_stats %s: a join to an unknown namespace created it", stats[0])
	}
}

func TestReadOnly(t *testing.T) {
	url := start(t, adminui.Options{NoAuth: true, ReadOnly: true, StatsInterval: 50 * time.Millisecond}, socketio.Options{})
	admin, err := login(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := waitArgs(t, admin, "config", func([]json.RawMessage) bool { return true })
	if strings.Contains(string(cfg[0]), "DISCONNECT") || strings.Contains(string(cfg[0]), "JOIN") {
		t.Errorf("read-only config %s offers actions", cfg[0])
	}
	c := dial(t, url, siotest.Options{})
	waitArgs(t, admin, "socket_connected", func(a []json.RawMessage) bool { return strings.Contains(string(a[0]), c.ID()) })
	admin.Emit("_disconnect", "/", true, c.ID())
	// Two stats ticks later the client is still served.
	for range 2 {
		admin.Events()
		waitArgs(t, admin, "server_stats", func([]json.RawMessage) bool { return true })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m, err := c.CallMap(ctx, socketio.EventJoin, map[string]any{"roomId": "r", "userId": "u"}); err != nil || m["ok"] != true {
		t.Fatalf("read-only admin disconnected the client: %v %v", m, err)
	}
}

func TestMessages(t *testing.T) {
	url := start(t, adminui.Options{NoAuth: true, Messages: true}, socketio.Options{})
	admin, err := login(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitArgs(t, admin, "all_sockets", func([]json.RawMessage) bool { return true })
	c := dial(t, url, siotest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CallMap(ctx, socketio.EventJoin, map[string]any{"roomId": "r", "userId": "u"}); err != nil {
		t.Fatal(err)
	}
	a := waitArgs(t, admin, "event_received", args("/", c.ID()))
	var ev []any
	if err := json.Unmarshal(a[2], &ev); err != nil || len(ev) != 2 || ev[0] != socketio.EventJoin {
		t.Fatalf("event_received %s: want [presence:join, payload] without the ack", a[2])
	}
}

func TestProductionMode(t *testing.T) {
	url := start(t, adminui.Options{NoAuth: true, Mode: adminui.Production}, socketio.Options{})
	admin, err := login(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := waitArgs(t, admin, "config", func([]json.RawMessage) bool { return true })
	if strings.Contains(string(cfg[0]), "ALL_EVENTS") {
		t.Errorf("production config %s claims ALL_EVENTS", cfg[0])
	}
	dial(t, url, siotest.Options{})
	waitArgs(t, admin, "server_stats", func([]json.RawMessage) bool { return true })
	for _, e := range admin.Events() {
		if e.Name == "all_sockets" || e.Name == "socket_connected" {
			t.Errorf("production mode sent %s", e.Name)
		}
	}
}

func TestMaxListedSockets(t *testing.T) {
	url := start(t, adminui.Options{NoAuth: true, MaxListedSockets: 2}, socketio.Options{})
	for range 3 {
		dial(t, url, siotest.Options{})
	}
	admin, err := login(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := waitArgs(t, admin, "all_sockets", func([]json.RawMessage) bool { return true })
	var list []sock
	if err := json.Unmarshal(all[0], &list); err != nil || len(list) != 2 {
		t.Fatalf("all_sockets %s: want 2 sockets", all[0])
	}
}
