package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin"
	"github.com/realtime-message/presence/dashboard"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func newService(t *testing.T) *presence.Service {
	t.Helper()
	srv := redistest.Standalone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := presence.Open(ctx, presence.Config{Addrs: srv.Addrs, KeyPrefix: redistest.Prefix(t), ReaperInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

func serve(t *testing.T, svc *presence.Service, o dashboard.Options) (*dashboard.Dashboard, string) {
	t.Helper()
	d := dashboard.New(svc, o)
	mux := http.NewServeMux()
	mux.Handle(dashboard.Path, d)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() { d.Close(); hs.Close() })
	return d, hs.URL + dashboard.Path
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func getJSON(t *testing.T, url, token string, into any) int {
	t.Helper()
	code, body := getText(t, url, token)
	if into != nil && code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), into); err != nil {
			t.Fatalf("%s: %v: %s", url, err, body)
		}
	}
	return code
}

// TestReads checks each data endpoint against what the service holds.
func TestReads(t *testing.T) {
	svc := newService(t)
	ctx := ctxT(t)
	if _, err := svc.Join(ctx, "lobby", "c1", "alice", json.RawMessage(`{"status":"online"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Join(ctx, "lobby", "c2", "bob", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Join(ctx, "kitchen", "c3", "carol", nil); err != nil {
		t.Fatal(err)
	}
	ch := presence.Channel{Type: "doc", Name: "d1"}
	if _, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "title", Value: "Hello"}}, presence.MetadataOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AcquireLock(ctx, ch, "edit", "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	_, base := serve(t, svc, dashboard.Options{})

	var rooms struct {
		Rooms []presence.RoomCount
		Next  string
	}
	if code := getJSON(t, base+"api/rooms", "", &rooms); code != 200 {
		t.Fatalf("rooms: %d", code)
	}
	want := []presence.RoomCount{{Room: "kitchen", Conns: 1, Users: 1}, {Room: "lobby", Conns: 2, Users: 2}}
	if len(rooms.Rooms) != 2 || rooms.Rooms[0] != want[0] || rooms.Rooms[1] != want[1] || rooms.Next != "0" {
		t.Errorf("rooms: %+v", rooms)
	}

	var room struct {
		Room    string
		Members []presence.Entry
	}
	if code := getJSON(t, base+"api/room?room=lobby", "", &room); code != 200 {
		t.Fatalf("room: %d", code)
	}
	if len(room.Members) != 2 || room.Members[0].UserID != "alice" || string(room.Members[0].State) != `{"status":"online"}` ||
		room.Members[0].Epoch == 0 || room.Members[0].LastSeenMs == 0 || room.Members[1].ConnID != "c2" {
		t.Errorf("room: %+v", room)
	}

	var channel struct {
		MajorRevision int64
		Metadata      map[string]presence.MetadataEntry
		Locks         []struct {
			Name, Owner string
			ExpiresAtMs int64
		}
	}
	if code := getJSON(t, base+"api/channel?type=doc&name=d1", "", &channel); code != 200 {
		t.Fatalf("channel: %d", code)
	}
	if channel.Metadata["title"].Value != "Hello" || channel.Metadata["title"].Revision != 1 ||
		len(channel.Locks) != 1 || channel.Locks[0].Owner != "alice" || channel.Locks[0].ExpiresAtMs == 0 {
		t.Errorf("channel: %+v", channel)
	}

	var status struct {
		Redis struct {
			OK     bool
			Checks []presence.HealthCheck
		}
	}
	if code := getJSON(t, base+"api/status", "", &status); code != 200 || !status.Redis.OK || len(status.Redis.Checks) == 0 {
		t.Errorf("status: %d %+v", code, status)
	}

	for _, bad := range []string{"api/room?room=", "api/room?room=a{b", "api/channel?type=a:b&name=x", "api/rooms?count=0",
		"api/rooms?count=501", "api/rooms?count=x", "api/rooms?cursor=abc"} {
		if code := getJSON(t, base+bad, "", nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	code, body := getText(t, base, "")
	if code != 200 || !strings.Contains(body, "<title>presence dashboard</title>") {
		t.Errorf("page: %d %.100s", code, body)
	}
	if code, _ := getText(t, base+"app.js", ""); code != 200 {
		t.Errorf("app.js: %d", code)
	}
}

func getText(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestToken: with a token, every data endpoint refuses a request without
// it or with another one; the page itself (no data) is served.
func TestToken(t *testing.T) {
	svc := newService(t)
	_, base := serve(t, svc, dashboard.Options{Token: "s3cret"})
	for _, p := range []string{"api/rooms", "api/room?room=lobby", "api/channel?type=doc&name=d1", "api/status", "api/events"} {
		for _, tok := range []string{"", "wrong", "s3cret0", "s3cre"} {
			if code, body := getText(t, base+p, tok); code != http.StatusUnauthorized || strings.Contains(body, "lobby") {
				t.Errorf("%s with token %q: %d %s", p, tok, code, body)
			}
		}
	}
	req, _ := http.NewRequest("GET", base+"api/rooms", nil)
	req.Header.Set("Authorization", "Basic s3cret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("Basic scheme: %v %v", resp, err)
	}
	if code := getJSON(t, base+"api/rooms", "s3cret", nil); code != 200 {
		t.Errorf("with the token: %d", code)
	}
	if code, _ := getText(t, base, ""); code != 200 {
		t.Errorf("page without token: %d", code)
	}
}

// sse is an open event stream.
type sse struct {
	resp   *http.Response
	cancel context.CancelFunc
	frames chan [2]string // event, data
}

func openStream(t *testing.T, base, token string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"api/events", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sse{resp: resp, cancel: cancel, frames: make(chan [2]string, 1000)}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != 200 {
		return s
	}
	go func() {
		defer close(s.frames)
		sc := bufio.NewScanner(resp.Body)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				ev = e
			} else if d, ok := strings.CutPrefix(line, "data: "); ok {
				select {
				case s.frames <- [2]string{ev, d}:
				default:
				}
			}
		}
	}()
	return s
}

func (s *sse) wait(t *testing.T, event string, match func(string) bool) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				t.Fatalf("stream ended waiting for %s", event)
			}
			if f[0] == event && match(f[1]) {
				return f[1]
			}
		case <-deadline:
			t.Fatalf("no %s event within 10s", event)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func subscriptionChecks(svc *presence.Service) int {
	checks, _ := svc.Health(context.Background())
	n := 0
	for _, c := range checks {
		if strings.HasPrefix(c.Name, "subscription ") {
			n++
		}
	}
	return n
}

// TestStream: a stream gets presence and metadata events as they happen
// and its status; the service subscribes only while a stream is open, and
// a stream that the client closes ends (its viewer, subscriptions and
// ticker gone).
func TestStream(t *testing.T) {
	svc := newService(t)
	d, base := serve(t, svc, dashboard.Options{StatsInterval: 50 * time.Millisecond})
	if n := subscriptionChecks(svc); n != 0 {
		t.Fatalf("%d subscriptions before any stream", n)
	}
	s := openStream(t, base, "")
	if s.resp.StatusCode != 200 || s.resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", s.resp.StatusCode, s.resp.Header.Get("Content-Type"))
	}
	s.wait(t, "status", func(string) bool { return true })
	if n := subscriptionChecks(svc); n != 2 {
		t.Fatalf("%d subscriptions with a stream open, want 2", n)
	}
	ctx := ctxT(t)
	if _, err := svc.Join(ctx, "lobby", "c1", "alice", json.RawMessage(`{"status":"online"}`)); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "presence", func(d string) bool {
		return strings.Contains(d, `"type":"join"`) && strings.Contains(d, `"connId":"c1"`) && strings.Contains(d, `"online"`)
	})
	if _, err := svc.SetMetadata(ctx, presence.Channel{Type: "doc", Name: "d1"}, []presence.Item{{Key: "k", Value: "v"}}, presence.MetadataOptions{}); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "metadata", func(d string) bool { return strings.Contains(d, `"channelName":"d1"`) })
	// The status counts the events and lists the channel seen.
	s.wait(t, "status", func(d string) bool {
		var st struct {
			PresencePerSec float64
			Channels       []presence.Channel
			Redis          *struct{ OK bool }
		}
		json.Unmarshal([]byte(d), &st)
		return len(st.Channels) == 1 && st.Channels[0].Name == "d1" && st.Redis != nil && st.Redis.OK
	})
	s.cancel()
	waitFor(t, "the stream to end", func() bool { return d.Viewers() == 0 })
	waitFor(t, "the subscriptions to close", func() bool { return subscriptionChecks(svc) == 0 })
}

// TestSlowViewerDropsEvents: a stream whose client does not read loses
// events once its queue is full (counted), while the service's other
// subscribers (the sockets' path) get every event; the stream still ends
// when the dashboard closes.
func TestSlowViewerDropsEvents(t *testing.T) {
	svc := newService(t)
	d, base := serve(t, svc, dashboard.Options{Queue: 4})
	var got atomic.Int64
	sub, err := svc.SubscribeRaw(ctxT(t), func(presence.RawEvent) { got.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Never read: the stream's TCP buffers fill, then its queue.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, "the viewer", func() bool { return d.Viewers() == 1 })
	// Big states, so a few hundred events overflow the socket buffers
	// between server and client.
	big := `{"blob":"` + strings.Repeat("x", 32<<10) + `"}`
	const n = 400
	for i := range n {
		if _, err := svc.Join(ctxT(t), "lobby", "c1", "alice", json.RawMessage(big)); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	waitFor(t, "every event to reach the other subscriber", func() bool { return got.Load() == n })
	waitFor(t, "drops to be counted", func() bool { return d.Dropped() > 0 })
	done := make(chan struct{})
	go func() { d.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a stream that does not read")
	}
	waitFor(t, "the stream to end", func() bool { return d.Viewers() == 0 })
}

// TestMaxViewers: streams beyond the bound are refused, not queued.
func TestMaxViewers(t *testing.T) {
	svc := newService(t)
	_, base := serve(t, svc, dashboard.Options{MaxViewers: 2})
	a, b := openStream(t, base, ""), openStream(t, base, "")
	if a.resp.StatusCode != 200 || b.resp.StatusCode != 200 {
		t.Fatalf("%d %d", a.resp.StatusCode, b.resp.StatusCode)
	}
	if c := openStream(t, base, ""); c.resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third stream: %d, want 503", c.resp.StatusCode)
	}
}
