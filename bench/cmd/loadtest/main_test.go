package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

func TestMain(m *testing.M) { redistest.Main(m) }

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startServer(t *testing.T, opts socketio.Options) string {
	srv := redistest.Embedded(t)
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return siotest.StartServer(t, presence.Config{Addrs: srv.Addrs, ReaperInterval: -1, Logger: log}, opts)
}

// TestLoadtest runs a tiny load test (2 rooms × 3 users, 10 heartbeats/s,
// about 2 s) against the in-process server with each client, and checks
// its bookkeeping: every heartbeat acked, every update delivered to the
// room's other members. No speed is checked.
func TestLoadtest(t *testing.T) {
	url := startServer(t, socketio.Options{})
	for _, client := range []string{"socketio", "raw"} {
		t.Run(client, func(t *testing.T) {
			cfg := Config{
				TargetURL: url, Rooms: 2, UsersPerRoom: 3, HeartbeatsPerS: 10,
				Duration: 1500 * time.Millisecond, RampUp: 300 * time.Millisecond,
				AckTimeout: 5 * time.Second, ReportEvery: 500 * time.Millisecond, Patch: true, Client: client,
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sum, err := run(ctx, cfg, logWriter{t})
			if err != nil {
				t.Fatal(err)
			}
			if !sum.Pass || sum.Connected != 6 || sum.Acks == 0 || sum.UpdatesExpected == 0 || sum.UpdatesMissing != 0 || len(sum.ErrorsByCode) != 0 {
				t.Fatalf("summary %+v", sum)
			}
			// Each member sees the joins after its own, and every update
			// of its room (its own included).
			if sum.Events < sum.UpdatesExpected {
				t.Errorf("%d events received, fewer than the %d updates expected", sum.Events, sum.UpdatesExpected)
			}
		})
	}
}

// TestErrorsByCode runs clients over the server's per-socket heartbeat
// limit: the refusals are counted under their code.
func TestErrorsByCode(t *testing.T) {
	url := startServer(t, socketio.Options{HeartbeatRate: socketio.Rate{PerSecond: 2, Burst: 2}})
	cfg := Config{
		TargetURL: url, Rooms: 1, UsersPerRoom: 2, HeartbeatsPerS: 20,
		Duration: 1500 * time.Millisecond, RampUp: 200 * time.Millisecond,
		AckTimeout: 5 * time.Second, ReportEvery: 500 * time.Millisecond, Patch: true, Client: "raw",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := run(ctx, cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Pass || sum.Acks == 0 || sum.Errors == 0 || sum.ErrorsByCode["RATE_LIMITED"] != sum.Errors || sum.UpdatesMissing != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if got := failCode(ack{}); got != "none" {
		t.Errorf("failCode of an ack without code = %q", got)
	}
}

// floodConfig is a tiny load test with a flood beside it: 2,000/s for
// 0.8 s, at most 1,600 heartbeats.
func floodConfig(url string) Config {
	return Config{
		TargetURL: url, Rooms: 1, UsersPerRoom: 2, HeartbeatsPerS: 5,
		Duration: 2000 * time.Millisecond, RampUp: 300 * time.Millisecond,
		AckTimeout: 2 * time.Second, ReportEvery: 500 * time.Millisecond, Patch: true, Client: "raw",
		FloodRate: 2000, FloodDuration: 800 * time.Millisecond,
	}
}

// TestFlood runs the flood beside a tiny load test: bounded in count (the
// budget; the test's own deadline bounds its time), every heartbeat sent accounted for (most refused by the rate
// limit), and the main clients, under their own limits, unharmed.
func TestFlood(t *testing.T) {
	url := startServer(t, socketio.Options{HeartbeatRate: socketio.Rate{PerSecond: 50, Burst: 50}, DisconnectAfterRefused: -1})
	cfg := floodConfig(url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := run(ctx, cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	f := sum.Flood
	if f == nil {
		t.Fatalf("no flood in %+v", sum)
	}
	var refused int64
	for _, n := range f.AcksByCode {
		refused += n
	}
	if f.Budget != 1600 || f.Sent == 0 || f.Sent > f.Budget || f.AckedOK == 0 || f.AcksByCode["RATE_LIMITED"] == 0 ||
		f.AckedOK+refused+f.Timeouts+f.NoAck != f.Sent {
		t.Errorf("flood %+v", f)
	}
	if f.Disconnected || f.MainAcks == 0 || f.CalmAcks == 0 || f.MainErrors+f.MainTimeouts != 0 {
		t.Errorf("flood %+v", f)
	}
	if !sum.Pass || sum.Clients != 2 {
		t.Errorf("main clients: %+v", sum)
	}
}

func TestReadRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	mb, err := readRSS(os.Getpid())
	if err != nil || mb <= 0 {
		t.Fatalf("readRSS(self) = %v, %v", mb, err)
	}
	r := startRSS(os.Getpid())
	time.Sleep(300 * time.Millisecond)
	if start, peak := r.stop(); start <= 0 || peak < start {
		t.Errorf("start %v, peak %v", start, peak)
	}
	if start, peak := startRSS(0).stop(); start != 0 || peak != 0 {
		t.Errorf("no pid: start %v, peak %v", start, peak)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("ROOM_COUNT", "3")
	t.Setenv("USERS_PER_ROOM", "4")
	t.Setenv("HEARTBEATS_PER_SEC", "2.5")
	t.Setenv("TEST_DURATION_MS", "2000")
	t.Setenv("RAMP_UP_MS", "100")
	c, err := configFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.Rooms != 3 || c.UsersPerRoom != 4 || c.HeartbeatsPerS != 2.5 || c.Duration != 2*time.Second || c.RampUp != 100*time.Millisecond || !c.Patch || c.TargetURL != "http://127.0.0.1:3000" || c.Client != "socketio" {
		t.Errorf("%+v", c)
	}
	t.Setenv("RAMP_UP_MS", "5000")
	if _, err := configFromEnv(); err == nil {
		t.Error("ramp-up longer than the test accepted")
	}
	t.Setenv("RAMP_UP_MS", "100")
	t.Setenv("LOADTEST_CLIENT", "nope")
	if _, err := configFromEnv(); err == nil {
		t.Error("LOADTEST_CLIENT=nope accepted")
	}
	t.Setenv("LOADTEST_CLIENT", "raw")
	t.Setenv("FLOOD_RATE", "20000")
	if c, err := configFromEnv(); err != nil || c.FloodRate != 20000 || c.FloodDuration != 10*time.Second {
		t.Errorf("FLOOD_RATE=20000: %+v, %v", c, err)
	}
	t.Setenv("FLOOD_DURATION_MS", "0")
	if _, err := configFromEnv(); err == nil {
		t.Error("FLOOD_DURATION_MS=0 accepted")
	}
	t.Setenv("FLOOD_DURATION_MS", "500")
	t.Setenv("ROOM_COUNT", "0")
	if _, err := configFromEnv(); err == nil {
		t.Error("ROOM_COUNT=0 accepted")
	}
}

// TestFloodDisconnected: a server that cuts the flooding socket off is
// reported as such, and the main clients do not notice.
func TestFloodDisconnected(t *testing.T) {
	url := startServer(t, socketio.Options{HeartbeatRate: socketio.Rate{PerSecond: 50, Burst: 50}, DisconnectAfterRefused: 100})
	cfg := floodConfig(url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := run(ctx, cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	f := sum.Flood
	if f == nil || !f.Disconnected || len(f.DisconnectsAtMs) == 0 || f.AcksByCode["RATE_LIMITED"] < 100 {
		t.Fatalf("flood %+v", f)
	}
	if f.MainAcks == 0 || f.MainErrors+f.MainTimeouts != 0 || !sum.Pass {
		t.Errorf("main clients during the flood: %+v / %+v", f, sum)
	}
}
