package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// The official Admin UI and the icon font its page loads from a CDN,
// pinned: the test serves both from loopback.
const (
	adminUIPackage = "@socket.io/admin-ui@0.5.1"
	mdiFontPackage = "@mdi/font@7.4.47"
)

// chromiumPath finds Chromium; without it the browser tests skip, unless
// REQUIRE_BROWSER=1 (CI), where they fail.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium not found (apt-get install chromium); REQUIRE_BROWSER=1 makes this a failure")
	}
	t.Skip("chromium not found (apt-get install chromium); set REQUIRE_BROWSER=1 to fail instead")
	return ""
}

// adminUIModules installs the Admin UI and the icon font with npm into
// the cache directory (PRESENCE_NODE_CACHE, default <user
// cache>/presence-compat) unless they are there, and returns its
// node_modules. Without npm the test skips, unless REQUIRE_NODE=1.
func adminUIModules(t *testing.T) string {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("REQUIRE_NODE") == "1" {
			t.Fatalf(format+" (REQUIRE_NODE=1 makes this a failure)", args...)
		}
		t.Skipf(format+"; set REQUIRE_NODE=1 to fail instead", args...)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		fail("npm not on PATH: install Node.js and npm to run the Admin UI test")
	}
	dir := os.Getenv("PRESENCE_NODE_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "presence-compat")
	}
	dir = filepath.Join(dir, strings.NewReplacer("@", "", "/", "-").Replace(adminUIPackage+"+"+mdiFontPackage))
	mods := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "@mdi", "font", "package.json")); err == nil {
		if _, err := os.Stat(filepath.Join(mods, "@socket.io", "admin-ui", "ui", "dist", "index.html")); err == nil {
			return mods
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error",
		"--ignore-scripts", adminUIPackage, mdiFontPackage).CombinedOutput()
	if err != nil {
		fail("npm install %s %s into %s failed: %v\n%s", adminUIPackage, mdiFontPackage, dir, err, out)
	}
	return mods
}

// serveAdminUI serves the package's ui/dist on a loopback port, its page's
// CDN stylesheets replaced by the local icon font (the Roboto font falls
// back to the system's), and returns its URL.
func serveAdminUI(t *testing.T, mods string) string {
	t.Helper()
	dist := filepath.Join(mods, "@socket.io", "admin-ui", "ui", "dist")
	index, err := os.ReadFile(filepath.Join(dist, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	page := strings.Replace(string(index), "https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/materialdesignicons.min.css", "mdi/css/materialdesignicons.min.css", 1)
	page = strings.Replace(page, `<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto:100,300,400,500,700,900">`, "", 1)
	if strings.Contains(page, "https://") {
		t.Fatalf("the UI's index.html loads more from the network than this test replaces:\n%s", page)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})
	mux.Handle("GET /mdi/", http.StripPrefix("/mdi/", http.FileServer(http.Dir(filepath.Join(mods, "@mdi", "font")))))
	mux.Handle("GET /", http.FileServer(http.Dir(dist)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// TestAdminUIInBrowser runs the official Socket.IO Admin UI (the npm
// package's ui/dist) in headless Chromium against the server with
// PRESENCE_ADMIN_UI=1: a wrong password is refused in the UI's login form,
// the right one logs in, and the UI lists the presence clients' sockets
// and rooms, follows a client that joins later, and disconnects a socket
// with its button. PRESENCE_ADMIN_UI_SCREENSHOT=path saves a screenshot
// (docs/admin-ui.png is one).
func TestAdminUIInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	mods := adminUIModules(t)
	ui := serveAdminUI(t, mods)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// The UI is another origin: its long-polling requests, with
	// credentials, need the server's CORS answer.
	p := startServer(t, "PRESENCE_ADMIN_UI=1", "PRESENCE_ADMIN_UI_USER=admin",
		"PRESENCE_ADMIN_UI_PASSWORD_HASH="+string(hash), "PRESENCE_CORS_ORIGIN="+strings.TrimSuffix(ui, "/"))

	alice := dial(t, p.url, siotest.Options{})
	mustOK(t, alice, socketio.EventJoin, map[string]any{"roomId": "lobby", "userId": "alice", "state": map[string]any{"status": "online"}})
	bob := dial(t, p.url, siotest.Options{})
	mustOK(t, bob, socketio.EventJoin, map[string]any{"roomId": "lobby", "userId": "bob"})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		// Loopback only: the page must not need the network.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	field := func(label string) string {
		return fmt.Sprintf(`//div[contains(@class,"v-dialog--active")]//label[normalize-space(.)=%q]/following-sibling::input`, label)
	}
	connect := `//div[contains(@class,"v-dialog--active")]//button[@type="submit"]`
	loginWith := func(password string) []chromedp.Action[chromedp.Void] {
		return []chromedp.Action[chromedp.Void]{
			chromedp.Navigate(ui),
			chromedp.WaitVisible(field("Server URL")),
			chromedp.SendKeys(field("Server URL"), p.url),
			chromedp.SendKeys(field("Username"), "admin"),
			chromedp.SendKeys(field("Password"), password),
			chromedp.Click(connect),
		}
	}
	cell := func(text string) string { return fmt.Sprintf(`//td[normalize-space(.)=%q]`, text) }
	step := func(what string, tasks ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, tasks...); err != nil {
			hctx, hcancel := context.WithTimeout(bctx, 5*time.Second)
			html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("body")))
			hcancel()
			t.Fatalf("%s: %v\npage:\n%.4000s", what, err, html)
		}
	}

	step("a wrong password is refused",
		append(loginWith("wrong"), chromedp.WaitVisible(`//div[contains(@class,"v-dialog--active")]//*[contains(normalize-space(.),"Invalid credentials")]`))...)
	step("the right password logs in",
		append(loginWith("s3cret"), chromedp.WaitNotPresent(chromedp.CSS(`.v-dialog--active`)))...)

	step("the sockets page lists the clients",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sockets/"`),
		chromedp.WaitVisible(cell(alice.ID())),
		chromedp.WaitVisible(cell(bob.ID())))

	// A client that connects and joins now appears live.
	carol := dial(t, p.url, siotest.Options{})
	step("a socket connecting later appears", chromedp.WaitVisible(cell(carol.ID())))
	mustOK(t, carol, socketio.EventJoin, map[string]any{"roomId": "lobby", "userId": "carol"})

	step("the rooms page shows the presence room with its three sockets",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/rooms/"`),
		chromedp.WaitVisible(`//tr[td[normalize-space(.)="lobby"]]/td[normalize-space(.)="3"]`))
	step("the room page lists its sockets",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/n/%2F/rooms/lobby"`),
		chromedp.WaitVisible(cell(alice.ID())),
		chromedp.WaitVisible(cell(carol.ID())))

	// The sockets page's disconnect button ends carol's socket: she leaves
	// presence, which the others see. (The click reaches her row too,
	// which opens her details: disconnected.)
	step("the disconnect button disconnects the socket",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sockets/"`),
		chromedp.WaitVisible(cell(carol.ID())),
		chromedp.Click(fmt.Sprintf(`//tr[td[normalize-space(.)=%q]]//button`, carol.ID())),
		chromedp.WaitVisible(`//span[contains(@class,"v-chip__content") and normalize-space(.)="disconnected"]`))
	waitEvent(t, alice, 10*time.Second, socketio.EventPresence, presenceEvent("leave", carol.ID()))
	step("the disconnected socket leaves the list",
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/sockets/"`),
		chromedp.WaitVisible(cell(bob.ID())),
		chromedp.WaitNotPresent(cell(carol.ID())))

	if path := os.Getenv("PRESENCE_ADMIN_UI_SCREENSHOT"); path != "" {
		step("screenshot",
			chromedp.Evaluate[chromedp.Void](`location.hash = "#/n/%2F/rooms/lobby"`),
			chromedp.WaitVisible(cell(bob.ID())),
			chromedp.Sleep(500*time.Millisecond)) // the page's slide transition
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(png, []byte("\x89PNG")) {
			t.Fatal("screenshot is not a PNG")
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot saved to %s", path)
	}
}
