package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
)

var dashboardRE = regexp.MustCompile(`dashboard on http://(127\.0\.0\.1:\d+)/dashboard/`)

// startDashboard runs the server with the dashboard on (token tok) on a
// real Redis and returns the server and the dashboard's base URL.
func startDashboard(t *testing.T, tok string) (*proc, string) {
	t.Helper()
	srv := redistest.Standalone(t)
	env := []string{"REDIS_URL=" + redisURL(srv), "PRESENCE_KEY_PREFIX=" + redistest.Prefix(t),
		"PRESENCE_DASHBOARD=1", "PRESENCE_DASHBOARD_ADDR=127.0.0.1:0"}
	if tok != "" {
		env = append(env, "PRESENCE_DASHBOARD_TOKEN="+tok)
	}
	p := startServer(t, env...)
	for _, l := range p.logLines() {
		if m := dashboardRE.FindStringSubmatch(l); m != nil {
			return p, "http://" + m[1] + "/dashboard/"
		}
	}
	t.Fatalf("no dashboard address in the log:\n%s", strings.Join(p.logLines(), "\n"))
	return nil, ""
}

// TestDashboardListener: the dashboard is on its own listener, never the
// public one; its data needs the token; a non-loopback address without a
// token is refused at startup; without -dashboard nothing listens for it.
func TestDashboardListener(t *testing.T) {
	p, dash := startDashboard(t, "tok-123")
	if code, _ := get(t, p.url+"/dashboard/"); code != http.StatusNotFound {
		t.Errorf("public listener serves /dashboard/: %d", code)
	}
	if code, _ := get(t, p.url+"/dashboard/api/rooms"); code != http.StatusNotFound {
		t.Errorf("public listener serves the dashboard API: %d", code)
	}
	if code, _ := get(t, dash+"api/rooms"); code != http.StatusUnauthorized {
		t.Errorf("dashboard API without the token: %d", code)
	}
	req, _ := http.NewRequest("GET", dash+"api/rooms", nil)
	req.Header.Set("Authorization", "Bearer tok-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("dashboard API with the token: %d", resp.StatusCode)
	}
	if code, body := get(t, dash); code != 200 || !strings.Contains(body, "presence dashboard") {
		t.Errorf("dashboard page: %d", code)
	}

	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:0"} {
		var stderr strings.Builder
		_, err := loadSettings([]string{"-dashboard", "-dashboard-addr", addr}, &stderr)
		if err == nil || !strings.Contains(err.Error(), "PRESENCE_DASHBOARD_TOKEN") {
			t.Errorf("-dashboard-addr %s without a token: %v", addr, err)
		}
	}
	t.Setenv("PRESENCE_DASHBOARD_TOKEN", "x")
	if _, err := loadSettings([]string{"-dashboard", "-dashboard-addr", "0.0.0.0:0"}, &strings.Builder{}); err != nil {
		t.Errorf("with a token: %v", err)
	}

	plain := startServer(t)
	for _, l := range plain.logLines() {
		if strings.Contains(l, "dashboard on") {
			t.Errorf("dashboard started without -dashboard: %s", l)
		}
	}
}

// browser starts headless Chromium, closed when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 900),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// waitText waits until the text of the element sel contains every want.
func waitText(t *testing.T, ctx context.Context, sel string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var text string
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		text, err = chromedp.Run(c, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
		cancel()
		ok := err == nil
		for _, w := range want {
			ok = ok && strings.Contains(text, w)
		}
		if ok {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %q, the page shows %q (err %v)", sel, want, text, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDashboardInBrowser loads the dashboard in headless Chromium while
// Socket.IO clients join, heartbeat with patches, edit metadata and take
// a lock, and checks what a person sees: the room and its member counts,
// the members with their states, events as they happen, the channel's
// items and its lock holder, Redis healthy. With UPDATE_SCREENSHOT=1 it
// writes docs/dashboard.png, the README's picture.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	p, dash := startDashboard(t, "tok-123")

	alice := dial(t, p.url, siotest.Options{})
	bob := dial(t, p.url, siotest.Options{})
	carol := dial(t, p.url, siotest.Options{})
	mustOK(t, alice, "presence:join", map[string]any{"roomId": "design-review", "userId": "alice",
		"state": map[string]any{"status": "online", "page": "intro"}})
	mustOK(t, bob, "presence:join", map[string]any{"roomId": "design-review", "userId": "bob",
		"state": map[string]any{"status": "away"}})
	mustOK(t, carol, "presence:join", map[string]any{"roomId": "standup", "userId": "carol"})

	if err := chromedp.Do(ctx, chromedp.Navigate(dash+"#token=tok-123")); err != nil {
		t.Fatal(err)
	}
	// The room list, with member counts.
	row := waitText(t, ctx, `#rooms tr[data-room="design-review"]`, "design-review", "2")
	if f := strings.Fields(row); len(f) != 3 || f[1] != "2" || f[2] != "2" {
		t.Errorf("room row %q, want design-review 2 conns 2 users", row)
	}
	waitText(t, ctx, `#rooms tr[data-room="standup"]`, "standup", "1")
	waitText(t, ctx, "#redis", "Redis ok")
	waitText(t, ctx, "#live", "live")
	waitText(t, ctx, "#sockets", "3")

	// A room's members with their states.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#rooms tr[data-room="design-review"]`))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#members tbody", "alice", "online", "bob", "away", alice.ID())
	mustOK(t, alice, "presence:heartbeat", map[string]any{"patchState": map[string]any{"status": "busy"}})
	waitText(t, ctx, `#members tbody tr[data-conn="`+alice.ID()+`"]`, "busy", "intro")

	// Events as they happen: a join, the update.
	dave := dial(t, p.url, siotest.Options{})
	mustOK(t, dave, "presence:join", map[string]any{"roomId": "design-review", "userId": "dave",
		"state": map[string]any{"status": "online"}})
	waitText(t, ctx, `#events tbody tr[data-type="join"]`, "join", "design-review", "dave")
	waitText(t, ctx, `#events tbody`, "update", "busy")
	waitText(t, ctx, "#members tbody", "dave")
	waitText(t, ctx, `#rooms tr[data-room="design-review"]`, "3")

	// Metadata and a lock: the channel appears among those seen in events.
	mustOK(t, alice, "metadata:setChannel", map[string]any{"channelName": "spec", "channelType": "doc",
		"data":    []any{map[string]any{"key": "title", "value": "Presence v2"}, map[string]any{"key": "owner", "value": "alice"}},
		"options": map[string]any{"addUserId": true}})
	mustOK(t, alice, "metadata:acquireLock", map[string]any{"channelName": "spec", "channelType": "doc",
		"lockName": "edit", "ttlMs": 60000})
	mustOK(t, alice, "metadata:updateChannel", map[string]any{"channelName": "spec", "channelType": "doc",
		"data": []any{map[string]any{"key": "title", "value": "Presence v3"}}, "options": map[string]any{"lockName": "edit"}})
	waitText(t, ctx, `#events tbody tr[data-type="metadata"]`, "metadata", "doc:spec")
	waitText(t, ctx, "#channels-seen", "doc:spec")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#channels-seen .chip`))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#locks tbody", "edit", "alice")
	waitText(t, ctx, "#items tbody", "title", "Presence v3", "owner")
	waitText(t, ctx, "#channel-info", "1 lock(s) held")
	// Heartbeats keep coming, so the screenshot shows a rate.
	for i := range 5 {
		mustOK(t, bob, "presence:heartbeat", map[string]any{"patchState": map[string]any{"cursor": i}})
	}
	waitText(t, ctx, "#events tbody", "cursor")

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot: %d bytes, not a PNG", len(png))
	}
	out := filepath.Join(t.TempDir(), "dashboard.png")
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		out = filepath.Join("..", "..", "docs", "dashboard.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))

	// A page without the token is asked for it and shows no data.
	ctx2, cancel := chromedp.NewContext(ctx)
	defer cancel()
	if err := chromedp.Do(ctx2, chromedp.Navigate(dash), chromedp.WaitVisible(chromedp.CSS("#login"))); err != nil {
		t.Fatal(err)
	}
	hidden, err := chromedp.Run(ctx2, chromedp.Evaluate[bool](`document.getElementById("main").hidden && !document.querySelector("#rooms tbody tr")`))
	if err != nil {
		t.Fatal(err)
	}
	if !hidden {
		t.Error("without the token the page shows data")
	}
}
