package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence"
)

// The dashboard's load, for measuring that an open dashboard does not slow
// the sockets (bench/e2e.sh DASHBOARD=compare):
//
//	EXTRA_ROOMS            rooms joined (one conn each, through the library,
//	                       straight into Redis, with a TTL past the test) before
//	                       the clients start, so the dashboard lists that many
//	                       more active rooms; left at the end. Needs REDIS_URL
//	                       and PRESENCE_KEY_PREFIX, the server's.
//	DASHBOARD_URL          the dashboard's base URL (http://host:port/dashboard/):
//	                       for the whole test one viewer reads its event stream
//	                       and polls as the page does (the first rooms page
//	                       every 3 s, a room's members every 2 s)
//	DASHBOARD_TOKEN        its bearer token, if any
type dashConfig struct {
	ExtraRooms int
	RedisURL   string
	KeyPrefix  string
	URL        string
	Token      string
}

func dashConfigFromEnv() (dashConfig, error) {
	d := dashConfig{URL: os.Getenv("DASHBOARD_URL"), Token: os.Getenv("DASHBOARD_TOKEN"),
		RedisURL: os.Getenv("REDIS_URL"), KeyPrefix: os.Getenv("PRESENCE_KEY_PREFIX")}
	if v := os.Getenv("EXTRA_ROOMS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100_000 {
			return d, fmt.Errorf("EXTRA_ROOMS=%q: want an integer in [0, 100000]", v)
		}
		d.ExtraRooms = n
	}
	if d.ExtraRooms > 0 && (d.RedisURL == "" || d.KeyPrefix == "") {
		return d, fmt.Errorf("EXTRA_ROOMS needs REDIS_URL and PRESENCE_KEY_PREFIX (the server's)")
	}
	if d.URL != "" {
		if _, err := url.Parse(d.URL); err != nil {
			return d, fmt.Errorf("DASHBOARD_URL: %w", err)
		}
		if !strings.HasSuffix(d.URL, "/") {
			d.URL += "/"
		}
	}
	return d, nil
}

// DashboardSummary is what the viewer saw.
type DashboardSummary struct {
	ExtraRooms     int    `json:"extra_rooms"`
	PresenceEvents int64  `json:"presence_events"` // frames read from the stream
	StatusFrames   int64  `json:"status_frames"`
	Dropped        int64  `json:"dropped"` // events the server dropped for this viewer (its last status)
	Polls          int64  `json:"polls"`
	PollErrors     int64  `json:"poll_errors"`
	RoomsListed    int    `json:"rooms_listed"` // rooms of the last first page
	StreamErr      string `json:"stream_error,omitempty"`
}

// dashLoad is the running extra rooms and viewer.
type dashLoad struct {
	cfg     dashConfig
	svc     *presence.Service
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sum     DashboardSummary
	events  atomic.Int64
	status  atomic.Int64
	dropped atomic.Int64
	polls   atomic.Int64
	pollErr atomic.Int64
	listed  atomic.Int64
	mu      sync.Mutex
	errMsg  string
	once    sync.Once
	out     *DashboardSummary
}

// startDashLoad joins the extra rooms and opens the viewer; nil when the
// environment asks for neither.
func startDashLoad(ctx context.Context, cfg dashConfig, until time.Time, logw io.Writer) (*dashLoad, error) {
	if cfg.ExtraRooms == 0 && cfg.URL == "" {
		return nil, nil
	}
	d := &dashLoad{cfg: cfg}
	d.sum.ExtraRooms = cfg.ExtraRooms
	if cfg.ExtraRooms > 0 {
		u, addrs, err := presence.ParseRedisTarget(cfg.RedisURL)
		if err != nil {
			return nil, err
		}
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// A TTL past the test, so the server's reaper leaves them alone.
		d.svc, err = presence.Open(octx, presence.Config{RedisURL: u, Addrs: addrs, KeyPrefix: cfg.KeyPrefix,
			TTL: time.Hour, ReaperInterval: -1})
		if err != nil {
			return nil, err
		}
		start := time.Now()
		for i := range cfg.ExtraRooms {
			if _, err := d.svc.Join(octx, "idle-room-"+strconv.Itoa(i), "idle-conn", "idle-user", nil); err != nil {
				d.svc.Close()
				return nil, fmt.Errorf("extra room %d: %w", i, err)
			}
		}
		fmt.Fprintf(logw, "loadtest: %d extra rooms joined in %v\n", cfg.ExtraRooms, time.Since(start).Round(time.Millisecond))
	}
	if cfg.URL != "" {
		vctx, cancel := context.WithDeadline(ctx, until)
		d.cancel = cancel
		d.wg.Add(2)
		go d.stream(vctx)
		go d.poll(vctx)
		fmt.Fprintf(logw, "loadtest: dashboard viewer on %s\n", cfg.URL)
	}
	return d, nil
}

func (d *dashLoad) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", d.cfg.URL+path, nil)
	if err != nil {
		return nil, err
	}
	if d.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.cfg.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, err
}

// stream reads the event stream as the page does, as fast as it comes.
func (d *dashLoad) stream(ctx context.Context) {
	defer d.wg.Done()
	resp, err := d.get(ctx, "api/events")
	if err != nil {
		d.setErr(err)
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event string
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) > 7 && string(line[:7]) == "event: ":
			event = string(line[7:])
		case len(line) > 6 && string(line[:6]) == "data: ":
			switch event {
			case "presence":
				d.events.Add(1)
			case "status":
				d.status.Add(1)
				var st struct {
					Dropped int64 `json:"dropped"`
				}
				if json.Unmarshal(line[6:], &st) == nil {
					d.dropped.Store(st.Dropped)
				}
			}
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		d.setErr(err)
	}
}

// poll reads what the page reads on its timers.
func (d *dashLoad) poll(ctx context.Context) {
	defer d.wg.Done()
	rooms := time.NewTicker(3 * time.Second)
	defer rooms.Stop()
	members := time.NewTicker(2 * time.Second)
	defer members.Stop()
	read := func(path string, into any) {
		d.polls.Add(1)
		resp, err := d.get(ctx, path)
		if err != nil {
			if ctx.Err() == nil {
				d.pollErr.Add(1)
			}
			return
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil && ctx.Err() == nil {
			d.pollErr.Add(1)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-rooms.C:
			var page struct {
				Rooms []json.RawMessage `json:"rooms"`
			}
			read("api/rooms?count=50", &page)
			d.listed.Store(int64(len(page.Rooms)))
		case <-members.C:
			var room struct{}
			read("api/room?room=lt-room-0", &room)
		}
	}
}

func (d *dashLoad) setErr(err error) {
	d.mu.Lock()
	d.errMsg = err.Error()
	d.mu.Unlock()
}

// stop ends the viewer, leaves the extra rooms and returns the summary.
// Idempotent.
func (d *dashLoad) stop() *DashboardSummary {
	if d == nil {
		return nil
	}
	d.once.Do(func() { d.out = d.end() })
	return d.out
}

func (d *dashLoad) end() *DashboardSummary {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	if d.svc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i := range d.cfg.ExtraRooms {
			if d.svc.Leave(ctx, "idle-room-"+strconv.Itoa(i), "idle-conn") != nil {
				break
			}
		}
		cancel()
		d.svc.Close()
	}
	s := d.sum
	s.PresenceEvents, s.StatusFrames, s.Dropped = d.events.Load(), d.status.Load(), d.dropped.Load()
	s.Polls, s.PollErrors, s.RoomsListed = d.polls.Load(), d.pollErr.Load(), int(d.listed.Load())
	d.mu.Lock()
	s.StreamErr = d.errMsg
	d.mu.Unlock()
	return &s
}
