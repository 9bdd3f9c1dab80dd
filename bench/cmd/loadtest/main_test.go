package main

import (
	"context"
	"log/slog"
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

func startServer(t *testing.T) string {
	srv := redistest.Embedded(t)
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return siotest.StartServer(t, presence.Config{Addrs: srv.Addrs, Embedded: true, ReaperInterval: -1, Logger: log}, socketio.Options{})
}

// TestLoadtest runs a tiny load test (2 rooms × 3 users, 10 heartbeats/s,
// about 2 s) against the in-process server with each client, and checks
// its bookkeeping: every heartbeat acked, every update delivered to the
// room's other members. No speed is checked.
func TestLoadtest(t *testing.T) {
	url := startServer(t)
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
			if !sum.Pass || sum.Connected != 6 || sum.Acks == 0 || sum.UpdatesExpected == 0 || sum.UpdatesMissing != 0 {
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
	t.Setenv("ROOM_COUNT", "0")
	if _, err := configFromEnv(); err == nil {
		t.Error("ROOM_COUNT=0 accepted")
	}
}
