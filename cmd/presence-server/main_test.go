package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// childEnv, when "1", makes the test binary run the server's main instead
// of the tests: the tests start real server processes this way (and signal
// or kill them) without building a separate binary.
const childEnv = "PRESENCE_SERVER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	redistest.Main(m)
}

// proc is a server process started by a test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string // http://127.0.0.1:port
	mu   sync.Mutex
	log  []string
	exit chan int // the exit code, once
	out  strings.Builder
}

var listeningRE = regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)

// serverEnv returns the environment of a child server: the test's, minus
// the server's own variables, plus env.
func serverEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOST" || k == "PORT" || k == "REDIS_URL" || strings.HasPrefix(k, "PRESENCE_") || k == "LOG_LEVEL" || k == "LOG_FORMAT" {
			continue
		}
		out = append(out, kv)
	}
	return append(append(out, childEnv+"=1"), env...)
}

// startServer runs the server on a free loopback port with env (NAME=value)
// and waits until it listens.
func startServer(t *testing.T, env ...string) *proc {
	t.Helper()
	p := &proc{t: t, exit: make(chan int, 1)}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = serverEnv(append([]string{"HOST=127.0.0.1", "PORT=0"}, env...)...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, line)
			p.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		err := p.cmd.Wait()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		p.exit <- code
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		select {
		case <-p.exit:
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			t.Logf("server log:\n%s", strings.Join(p.logLines(), "\n"))
		}
	})
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not listen within 30s; log:\n%s", strings.Join(p.logLines(), "\n"))
	case code := <-p.exit:
		p.exit <- code
		t.Fatalf("server exited with %d before listening; log:\n%s", code, strings.Join(p.logLines(), "\n"))
	}
	return p
}

func (p *proc) logLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// stop sends sig and returns the exit code.
func (p *proc) stop(sig os.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case code := <-p.exit:
		p.exit <- code
		return code
	case <-time.After(30 * time.Second):
		p.t.Fatalf("server did not exit within 30s after %v", sig)
		return -1
	}
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

func call(t *testing.T, c *siotest.Client, event string, args ...any) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := c.CallMap(ctx, event, args...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustOK(t *testing.T, c *siotest.Client, event string, args ...any) map[string]any {
	t.Helper()
	a := call(t, c, event, args...)
	if a["ok"] != true {
		t.Fatalf("%s: %v", event, a)
	}
	return a
}

func waitEvent(t *testing.T, c *siotest.Client, d time.Duration, name string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := c.WaitEvent(ctx, name, match)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func presenceEvent(typ, conn string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == typ && m["connId"] == conn }
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDefaultServer runs the server as `go run ./cmd/presence-server` does
// with nothing configured (but a loopback port): the embedded Redis, said
// in the first log line; /healthz, /metrics, the protocol; and a graceful
// exit on SIGTERM.
func TestDefaultServer(t *testing.T) {
	p := startServer(t)
	first := p.logLines()[0]
	if !strings.Contains(first, "embedded") || !strings.Contains(first, "Redis") {
		t.Fatalf("first log line %q does not say the embedded Redis is used", first)
	}

	code, body := get(t, p.url+"/healthz")
	var h struct {
		Status string `json:"status"`
	}
	if json.Unmarshal([]byte(body), &h); code != 200 || h.Status != "ok" {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	c := dial(t, p.url, siotest.Options{})
	j := mustOK(t, c, "presence:join", map[string]any{"roomId": "r", "userId": "u"})
	epoch := j["self"].(map[string]any)["epoch"]
	mustOK(t, c, "presence:heartbeat", map[string]any{"epoch": epoch, "patchState": map[string]any{"a": 1}})
	mustOK(t, c, "metadata:setChannel", map[string]any{"channelName": "r", "channelType": "t", "data": []any{map[string]any{"key": "k", "value": "v"}}})

	code, body = get(t, p.url+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`presence_heartbeat_duration_seconds_count{outcome="changed",strategy="lua"} 1`,
		`presence_connected_sockets 1`,
		`presence_heartbeat_batch_buffer 0`,
		`presence_heartbeat_batch_size_count 0`,
		`presence_metadata_attempts_total{strategy="lua"} 1`,
		`presence_metadata_conflicts_total{strategy="lua"} 0`,
		`presence_metadata_retries_total{strategy="lua"} 0`,
		`presence_socketio_event_duration_seconds_count{event="presence:join",result="ok"} 1`,
		`presence_redis_errors_total{kind="timeout"} 0`,
		`presence_redis_errors_total{kind="connection"} 0`,
		`presence_redis_errors_total{kind="server"} 0`,
		`presence_redis_pubsub_reconnects_total 0`,
		`presence_script_reloads_total`,
		`presence_reaped_connections_total 0`,
		`presence_socketio_events_total{event="presence:join",result="ok"} 1`,
		`presence_socketio_heartbeats_coalesced_total 0`,
		`presence_socketio_flood_disconnects_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The join's event reached this node, which follows its socket's room.
	received := regexp.MustCompile(`(?m)^presence_pubsub_messages_received_total\{kind="presence"\} [1-9]`)
	for deadline := time.Now().Add(10 * time.Second); !received.MatchString(body) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		_, body = get(t, p.url+"/metrics")
	}
	for _, want := range []*regexp.Regexp{
		received,
		regexp.MustCompile(`(?m)^presence_pubsub_subscriptions\{kind="room"\} [01]$`), // 0 in pattern mode
		regexp.MustCompile(`(?m)^presence_pubsub_subscriptions\{kind="user"\} 0$`),
	} {
		if !want.MatchString(body) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(body, "presence_pubsub"))
		}
	}

	if bi := regexp.MustCompile(`presence_build_info\{backend="rueidis",goversion="go[0-9.]+[^"]*",heartbeat="lua",locks="advisory",metadata="lua",version="[^"]+"\} 1`); !bi.MatchString(body) {
		t.Errorf("/metrics lacks presence_build_info with backend, strategies and versions:\n%s", grepLines(body, "presence_build_info"))
	}

	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	log := strings.Join(p.logLines(), "\n")
	if !strings.Contains(log, "shutdown complete") {
		t.Fatalf("no clean shutdown in the log:\n%s", log)
	}
}

func TestHelpAndBadSettings(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "PRESENCE_AUTH_SECRET") {
		t.Fatalf("-h: %d %s", code, errb.String())
	}
	errb.Reset()
	t.Setenv("PORT", "x")
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "port") {
		t.Fatalf("PORT=x: %d %s", code, errb.String())
	}
}

func TestSettings(t *testing.T) {
	for _, k := range []string{"HOST", "PORT", "REDIS_URL", "PRESENCE_HEARTBEAT", "PRESENCE_TTL_MS", "PRESENCE_AUTH_SECRET", "PRESENCE_HEARTBEAT_RATE"} {
		t.Setenv(k, "")
	}
	s, err := loadSettings(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr != ":3000" || s.Presence.RedisURL != "" || len(s.Presence.Addrs) != 0 || s.AuthSecret != "" {
		t.Fatalf("defaults: %+v", s)
	}
	t.Setenv("HOST", "127.0.0.1")
	t.Setenv("PORT", "4000")
	t.Setenv("REDIS_URL", "127.0.0.1:7000, 127.0.0.1:7001")
	t.Setenv("PRESENCE_HEARTBEAT", "pipeline")
	t.Setenv("PRESENCE_TTL_MS", "1500")
	t.Setenv("PRESENCE_HEARTBEAT_RATE", "-1")
	s, err = loadSettings(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr != "127.0.0.1:4000" || len(s.Presence.Addrs) != 2 || s.Presence.Heartbeat != "pipeline" ||
		s.Presence.TTL != 1500*time.Millisecond || s.HeartbeatRate.PerSecond != -1 {
		t.Fatalf("from env: %+v", s)
	}
	// Flags win.
	s, err = loadSettings([]string{"-port", "4001", "-heartbeat", "batch?window=10ms", "-redis-url", "redis://h:1/0", "-ttl", "2s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr != "127.0.0.1:4001" || s.Presence.Heartbeat != "batch?window=10ms" || s.Presence.RedisURL != "redis://h:1/0" ||
		len(s.Presence.Addrs) != 0 || s.Presence.TTL != 2*time.Second {
		t.Fatalf("from flags: %+v", s)
	}
	t.Setenv("PRESENCE_TTL_MS", "soon")
	if _, err := loadSettings(nil, io.Discard); err == nil {
		t.Fatal("PRESENCE_TTL_MS=soon accepted")
	}

	// One rule for durations: a unit, or an integer of milliseconds, in a
	// variable or a flag alike.
	t.Setenv("PRESENCE_TTL_MS", "30s")
	t.Setenv("PRESENCE_REAPER_INTERVAL_MS", "250ms")
	s, err = loadSettings([]string{"-call-timeout", "1500", "-token-ttl", "2h", "-event-budget", "-1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Presence.TTL != 30*time.Second || s.Presence.ReaperInterval != 250*time.Millisecond ||
		s.CallTimeout != 1500*time.Millisecond || s.TokenTTL != 2*time.Hour || s.EventBudget != -time.Millisecond {
		t.Fatalf("durations: %+v", s)
	}

	// Settings that used to be environment-only have flags.
	s, err = loadSettings([]string{"-heartbeat-rate", "5", "-heartbeat-burst", "7", "-metadata-rate", "-1",
		"-presence-burst", "3", "-cors-origin", "https://a.example"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.HeartbeatRate != (socketio.Rate{PerSecond: 5, Burst: 7}) || s.MetadataRate.PerSecond != -1 ||
		s.PresenceRate.Burst != 3 || s.CORSOrigin != "https://a.example" {
		t.Fatalf("rate and CORS flags: %+v", s)
	}

	// One rule for REDIS_URL, from the environment or -redis-url: one
	// server's URL, or host:port seeds.
	for _, bad := range []string{"redis://h1:1,h2:2", "h1:1,h2"} {
		t.Setenv("REDIS_URL", bad)
		if _, err := loadSettings(nil, io.Discard); err == nil {
			t.Errorf("REDIS_URL=%s accepted", bad)
		}
		t.Setenv("REDIS_URL", "")
		if _, err := loadSettings([]string{"-redis-url", bad}, io.Discard); err == nil {
			t.Errorf("-redis-url %s accepted", bad)
		}
	}
	t.Setenv("REDIS_URL", "rediss://:pw@h:6380/1")
	if s, err := loadSettings(nil, io.Discard); err != nil || s.Presence.RedisURL != "rediss://:pw@h:6380/1" || s.Presence.Addrs != nil {
		t.Fatalf("rediss URL: %+v %v", s.Presence, err)
	}
}

// TestAuthSecret: with PRESENCE_AUTH_SECRET a socket needs a token (as
// -sign-token prints it), and may join only as its token's user; with
// PRESENCE_AUTH_AUDIENCE a token for another audience is refused.
func TestAuthSecret(t *testing.T) {
	const secret = "s3cret-for-tests-only"
	var out, errb strings.Builder
	t.Setenv("PRESENCE_AUTH_SECRET", secret)
	t.Setenv("PRESENCE_AUTH_AUDIENCE", "presence")
	if code := run([]string{"-sign-token", "alice", "-token-ttl", "1h"}, &out, &errb); code != 0 {
		t.Fatalf("-sign-token: %d %s", code, errb.String())
	}
	token := strings.TrimSpace(out.String())

	p := startServer(t, "PRESENCE_AUTH_SECRET="+secret, "PRESENCE_AUTH_AUDIENCE=presence")
	noAud, _ := socketio.SignToken([]byte(secret), "alice", time.Hour)
	if _, err := siotest.Dial(context.Background(), p.url, siotest.Options{Auth: map[string]any{"token": noAud}}); err == nil {
		t.Fatal("dial with a token without aud succeeded")
	}
	if _, err := siotest.Dial(context.Background(), p.url, siotest.Options{}); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("dial without a token: %v, want connect_error unauthorized", err)
	}
	if _, err := siotest.Dial(context.Background(), p.url, siotest.Options{Auth: map[string]any{"token": token + "x"}}); err == nil {
		t.Fatal("dial with a bad token succeeded")
	}
	c := dial(t, p.url, siotest.Options{Auth: map[string]any{"token": token}})
	if a := call(t, c, "presence:join", map[string]any{"roomId": "r", "userId": "bob"}); a["ok"] != false {
		t.Fatalf("join as another user: %v", a)
	}
	mustOK(t, c, "presence:join", map[string]any{"roomId": "r", "userId": "alice"})
	p.stop(syscall.SIGTERM)
}

// redisURL is the REDIS_URL of a test server.
func redisURL(s *redistest.Server) string { return strings.Join(s.Addrs, ",") }

// TestShutdownLeaveReachesOtherNode: two server processes on one Redis; a
// client on each. Events cross nodes; when node A is stopped with SIGTERM,
// the client on node B sees A's socket leave.
func TestShutdownLeaveReachesOtherNode(t *testing.T) {
	for _, srv := range redistest.Targets(t) {
		for _, backend := range []string{"rueidis", "goredis"} {
			t.Run(srv.Name+"/"+backend, func(t *testing.T) {
				t.Parallel()
				env := []string{"REDIS_URL=" + redisURL(srv), "PRESENCE_BACKEND=" + backend, "PRESENCE_KEY_PREFIX=" + redistest.Prefix(t)}
				a := startServer(t, env...)
				b := startServer(t, env...)
				room := "room-" + redistest.Prefix(t)
				ca := dial(t, a.url, siotest.Options{})
				cb := dial(t, b.url, siotest.Options{})
				mustOK(t, cb, "presence:join", map[string]any{"roomId": room, "userId": "bob"})
				ja := mustOK(t, ca, "presence:join", map[string]any{"roomId": room, "userId": "alice"})
				if n := len(ja["snapshot"].([]any)); n != 2 {
					t.Fatalf("alice's snapshot has %d entries, want 2 (bob is on the other node)", n)
				}
				waitEvent(t, cb, 10*time.Second, "presence:event", presenceEvent("join", ca.ID()))
				mustOK(t, ca, "presence:heartbeat", map[string]any{"patchState": map[string]any{"typing": true}})
				waitEvent(t, cb, 10*time.Second, "presence:event", presenceEvent("update", ca.ID()))
				mustOK(t, ca, "metadata:setChannel", map[string]any{"channelName": room, "channelType": "doc", "data": []any{map[string]any{"key": "k", "value": "v"}}})
				waitEvent(t, cb, 10*time.Second, "metadata:event", func(m map[string]any) bool { return m["operation"] == "set" })

				if code := a.stop(syscall.SIGTERM); code != 0 {
					t.Fatalf("node A exited with %d", code)
				}
				waitEvent(t, cb, 10*time.Second, "presence:event", presenceEvent("leave", ca.ID()))
				snap := mustOK(t, cb, "presence:join", map[string]any{"roomId": room, "userId": "bob"})["snapshot"].([]any)
				if len(snap) != 1 {
					t.Fatalf("after node A's shutdown the room has %v", snap)
				}
			})
		}
	}
}

// TestCrashedNodeReaped: node A dies without shutdown (SIGKILL); node B's
// reaper removes A's socket and publishes its leave within TTL + reaper
// interval (+ lookback, which is the TTL here).
func TestCrashedNodeReaped(t *testing.T) {
	const ttl, interval = 600 * time.Millisecond, 200 * time.Millisecond
	for _, srv := range redistest.Targets(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			env := []string{"REDIS_URL=" + redisURL(srv), "PRESENCE_KEY_PREFIX=" + redistest.Prefix(t),
				fmt.Sprintf("PRESENCE_TTL_MS=%d", ttl.Milliseconds()),
				fmt.Sprintf("PRESENCE_REAPER_INTERVAL_MS=%d", interval.Milliseconds()),
				fmt.Sprintf("PRESENCE_REAPER_LOOKBACK_MS=%d", ttl.Milliseconds())}
			a := startServer(t, append(env, "PRESENCE_REAPER_INTERVAL_MS=-1")...)
			b := startServer(t, env...)
			room := "room-" + redistest.Prefix(t)
			ca := dial(t, a.url, siotest.Options{})
			cb := dial(t, b.url, siotest.Options{})
			mustOK(t, cb, "presence:join", map[string]any{"roomId": room, "userId": "bob"})
			mustOK(t, ca, "presence:join", map[string]any{"roomId": room, "userId": "alice"})
			waitEvent(t, cb, 10*time.Second, "presence:event", presenceEvent("join", ca.ID()))

			// Bob keeps heartbeating, as a live client does.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(ttl / 4)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						ctx, cancel := context.WithTimeout(context.Background(), time.Second)
						cb.CallMap(ctx, "presence:heartbeat")
						cancel()
					}
				}
			}()

			killed := time.Now()
			a.stop(syscall.SIGKILL)
			waitEvent(t, cb, 15*time.Second, "presence:event", presenceEvent("leave", ca.ID()))
			took := time.Since(killed)
			t.Logf("leave of the crashed node's socket seen %v after the kill", took.Round(time.Millisecond))
			if bound := 2*ttl + 2*interval + 2*time.Second; took > bound {
				t.Fatalf("leave took %v, more than %v", took, bound)
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestLogDurations: durations read the same in both log formats, "15s",
// not JSON's default of integer nanoseconds.
func TestLogDurations(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b strings.Builder
		newLogger(Settings{LogFormat: format}, &b).Info("x", "took", 15*time.Second, "wait", 1500*time.Microsecond)
		want := map[string][]string{"json": {`"took":"15s"`, `"wait":"1.5ms"`}, "text": {`took=15s`, `wait=1.5ms`}}[format]
		for _, w := range want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s log %q lacks %s", format, b.String(), w)
			}
		}
	}
	// The server's own line with durations, in JSON.
	p := startServer(t, "LOG_FORMAT=json", "PRESENCE_TTL_MS=15000")
	for _, l := range p.logLines() {
		if strings.Contains(l, "presence service ready") {
			if !strings.Contains(l, `"ttl":"15s"`) {
				t.Fatalf("service line %s: want \"ttl\":\"15s\"", l)
			}
			return
		}
	}
	t.Fatalf("no service line in %v", p.logLines())
}

// TestUnknownBackend: a PRESENCE_BACKEND no adapter registered stops the
// server at start-up, naming the adapters it has.
func TestUnknownBackend(t *testing.T) {
	var out, errb strings.Builder
	t.Setenv("PRESENCE_BACKEND", "redix")
	t.Setenv("PORT", "0")
	code := run(nil, &out, &errb)
	if code == 0 {
		t.Fatalf("started with PRESENCE_BACKEND=redix")
	}
	for _, want := range []string{"unknown adapter", "redix", "goredis", "rueidis"} {
		if !strings.Contains(errb.String()+out.String(), want) {
			t.Errorf("exit %d, output does not mention %s:\n%s%s", code, want, errb.String(), out.String())
		}
	}
}
