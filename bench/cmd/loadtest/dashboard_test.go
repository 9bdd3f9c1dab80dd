package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/dashboard"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// TestDashboardLoad runs a tiny load test with extra rooms and a dashboard
// viewer: the viewer reads events and statuses and its polls succeed, the
// extra rooms are listed while the test runs and gone after it.
func TestDashboardLoad(t *testing.T) {
	srv := redistest.Standalone(t)
	pcfg := presence.Config{Addrs: srv.Addrs, KeyPrefix: redistest.Prefix(t), ReaperInterval: -1}
	url := siotest.StartServer(t, pcfg, socketio.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc, err := presence.Open(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	d := dashboard.New(svc, dashboard.Options{Token: "tk"})
	mux := http.NewServeMux()
	mux.Handle(dashboard.Path, d)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer d.Close()

	cfg := Config{
		TargetURL: url, Rooms: 2, UsersPerRoom: 3, HeartbeatsPerS: 10,
		Duration: 4 * time.Second, RampUp: 300 * time.Millisecond,
		AckTimeout: 5 * time.Second, ReportEvery: time.Second, Patch: true, Client: "raw",
		Dash: dashConfig{ExtraRooms: 7, RedisURL: srv.Addrs[0], KeyPrefix: pcfg.KeyPrefix,
			URL: hs.URL + dashboard.Path, Token: "tk"},
	}
	sum, err := run(ctx, cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	ds := sum.Dashboard
	if !sum.Pass || ds == nil {
		t.Fatalf("summary %+v", sum)
	}
	if ds.ExtraRooms != 7 || ds.PresenceEvents == 0 || ds.StatusFrames == 0 || ds.Polls == 0 || ds.PollErrors != 0 ||
		ds.RoomsListed != 9 || ds.StreamErr != "" {
		t.Errorf("dashboard summary %+v", ds)
	}
	rooms, _, err := svc.ActiveRooms(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rooms {
		if strings.HasPrefix(r.Room, "idle-room-") && r.Conns > 0 {
			t.Errorf("extra room left behind: %+v", r)
		}
	}

	t.Setenv("DASHBOARD_URL", "http://127.0.0.1:1/dashboard")
	if dc, err := dashConfigFromEnv(); err != nil || dc.URL != "http://127.0.0.1:1/dashboard/" {
		t.Errorf("DASHBOARD_URL without its slash: %q %v", dc.URL, err)
	}
	for _, bad := range [][2]string{{"EXTRA_ROOMS", "x"}, {"EXTRA_ROOMS", "-1"}, {"EXTRA_ROOMS", "5"}} {
		t.Setenv("REDIS_URL", "")
		t.Setenv(bad[0], bad[1])
		if _, err := dashConfigFromEnv(); err == nil {
			t.Errorf("%s=%s without REDIS_URL: no error", bad[0], bad[1])
		}
	}
}
