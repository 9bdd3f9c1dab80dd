// Package dashboard is the presence service's built-in operator page: the
// active rooms with their member counts, a room's members (user, connId,
// epoch, last seen, state), presence and metadata events as they happen,
// a metadata channel's items, revisions and lock holders, events per
// second and the health of Redis. The page is plain HTML, CSS and
// JavaScript embedded in the binary; it reads JSON endpoints and one
// Server-Sent Events stream under Path.
//
// Every read goes through the presence.Service (ActiveRooms, Snapshot,
// GetMetadata, ChannelLocks, Health): no KEYS, no SCAN of the keyspace.
// Metadata channels have no index in Redis, so the page finds them by
// name, or among the channels seen in events since it subscribed.
//
// The handler serves everything without authentication when Options.Token
// is empty; it is meant for an address only operators reach (the server
// puts it on a loopback listener of its own, see cmd/presence-server).
// With a Token, every data endpoint requires "Authorization: Bearer
// <token>"; the page's static files, which hold no data, do not, and the
// page takes the token from its URL fragment (#token=..., never sent to
// the server nor logged) or asks for it.
package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/realtime-message/presence"
)

// Path is where the dashboard is served.
const Path = "/dashboard/"

//go:embed assets
var assets embed.FS

// Options configure a Dashboard. Zero values take the defaults.
type Options struct {
	// Token, when set, is the bearer token every data endpoint requires.
	Token string
	// Sockets, when set, reports this node's connected sockets.
	Sockets func() int
	// Logger receives the dashboard's warnings (default slog.Default()).
	Logger *slog.Logger
	// Queue is how many events one open dashboard may have waiting to be
	// written; more are dropped for it and counted (default 512).
	Queue int
	// MaxViewers bounds the open event streams (default 16).
	MaxViewers int
	// StatsInterval is how often a stream gets events/s and health
	// (default 1s; health every third tick).
	StatsInterval time.Duration
	// CallTimeout bounds one request's Redis calls (default 5s).
	CallTimeout time.Duration
}

// Dashboard is the http.Handler of Path. Close it before shutting down
// the http.Server that serves it: open event streams end only then.
type Dashboard struct {
	svc     *presence.Service
	o       Options
	hub     *hub
	mux     *http.ServeMux
	token   [32]byte
	closing chan struct{}
}

// New returns the dashboard of svc.
func New(svc *presence.Service, o Options) *Dashboard {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Queue <= 0 {
		o.Queue = 512
	}
	if o.MaxViewers <= 0 {
		o.MaxViewers = 16
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	d := &Dashboard{svc: svc, o: o, hub: newHub(svc, o.Logger, o.Queue, o.MaxViewers, o.StatsInterval),
		mux: http.NewServeMux(), closing: make(chan struct{})}
	d.token = sha256.Sum256([]byte(o.Token))
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix(strings.TrimSuffix(Path, "/"), http.FileServerFS(static))
	d.mux.Handle("GET "+Path+"{$}", noStore(files))
	for _, f := range []string{"app.js", "style.css"} {
		d.mux.Handle("GET "+Path+f, noStore(files))
	}
	d.mux.Handle("GET "+Path+"api/rooms", d.auth(d.rooms))
	d.mux.Handle("GET "+Path+"api/room", d.auth(d.room))
	d.mux.Handle("GET "+Path+"api/channel", d.auth(d.channel))
	d.mux.Handle("GET "+Path+"api/status", d.auth(d.status))
	d.mux.Handle("GET "+Path+"api/events", d.auth(d.events))
	return d
}

// ServeHTTP serves the page and its endpoints under Path.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	d.mux.ServeHTTP(w, r)
}

// Close ends the open event streams and the event subscriptions; later
// stream requests fail. Idempotent.
func (d *Dashboard) Close() {
	select {
	case <-d.closing:
	default:
		close(d.closing)
	}
	d.hub.close()
}

// Viewers returns how many event streams are open.
func (d *Dashboard) Viewers() int { return d.hub.count() }

// Dropped returns how many events open dashboards lost to full queues.
func (d *Dashboard) Dropped() uint64 { return d.hub.dropped.Load() }

func noStore(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// auth checks the bearer token in constant time (of hashes, so the
// token's length does not leak either).
func (d *Dashboard) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if d.o.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			sum := sha256.Sum256([]byte(got))
			if !ok || subtle.ConstantTimeCompare(sum[:], d.token[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="presence dashboard"`)
				writeError(w, http.StatusUnauthorized, errors.New("this dashboard needs its token (Authorization: Bearer)"))
				return
			}
		}
		h(w, r)
	})
}

func (d *Dashboard) callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d.o.CallTimeout)
}

// defaultPage is the rooms page size when the request names none.
const defaultPage = 50

func (d *Dashboard) rooms(w http.ResponseWriter, r *http.Request) {
	count := defaultPage
	if v := r.URL.Query().Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, errors.New("count: not a number"))
			return
		}
		count = n
	}
	ctx, cancel := d.callCtx(r)
	defer cancel()
	rooms, next, err := d.svc.ActiveRooms(ctx, r.URL.Query().Get("cursor"), count)
	if err != nil {
		writeServiceError(w, err)
		return
	}
	writeJSON(w, struct {
		Rooms []presence.RoomCount `json:"rooms"`
		Next  string               `json:"next"`
	}{rooms, next})
}

func (d *Dashboard) room(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	ctx, cancel := d.callCtx(r)
	defer cancel()
	members, err := d.svc.Snapshot(ctx, room)
	if err != nil {
		writeServiceError(w, err)
		return
	}
	writeJSON(w, struct {
		Room    string           `json:"room"`
		NowMs   int64            `json:"nowMs"`
		Members []presence.Entry `json:"members"`
	}{room, d.svc.Config().Now().UnixMilli(), members})
}

// lockView is a Lock as the page shows it.
type lockView struct {
	Name        string `json:"name"`
	Owner       string `json:"owner"`
	ExpiresAtMs int64  `json:"expiresAtMs,omitempty"`
}

func (d *Dashboard) channel(w http.ResponseWriter, r *http.Request) {
	ch := presence.Channel{Type: r.URL.Query().Get("type"), Name: r.URL.Query().Get("name")}
	ctx, cancel := d.callCtx(r)
	defer cancel()
	meta, err := d.svc.GetMetadata(ctx, ch)
	if err != nil {
		writeServiceError(w, err)
		return
	}
	locks, err := d.svc.ChannelLocks(ctx, ch)
	if err != nil {
		writeServiceError(w, err)
		return
	}
	views := make([]lockView, len(locks))
	for i, l := range locks {
		views[i] = lockView{Name: l.Name, Owner: l.Owner}
		if !l.ExpiresAt.IsZero() {
			views[i].ExpiresAtMs = l.ExpiresAt.UnixMilli()
		}
	}
	writeJSON(w, struct {
		*presence.MetadataResponse
		NowMs int64      `json:"nowMs"`
		Locks []lockView `json:"locks"`
	}{meta, d.svc.Config().Now().UnixMilli(), views})
}

// statusView is what the page's header shows; the stream sends it every
// StatsInterval and /api/status on request.
type statusView struct {
	rates
	Redis    *health            `json:"redis,omitempty"` // nil until the first check
	Sockets  *int               `json:"sockets,omitempty"`
	Viewers  int                `json:"viewers"`
	Dropped  uint64             `json:"dropped"` // events this stream lost (all streams for /api/status)
	Stats    presence.Stats     `json:"stats"`
	Channels []presence.Channel `json:"channels"` // seen in events, most recent first
}

func (d *Dashboard) statusNow(dropped uint64) statusView {
	s := statusView{rates: *d.hub.rates.Load(), Redis: d.hub.health.Load(), Viewers: d.Viewers(),
		Dropped: dropped, Stats: d.svc.Stats(), Channels: d.hub.channel.get()}
	if d.o.Sockets != nil {
		n := d.o.Sockets()
		s.Sockets = &n
	}
	return s
}

func (d *Dashboard) status(w http.ResponseWriter, r *http.Request) {
	s := d.statusNow(d.hub.dropped.Load())
	// Without an open stream nobody checks health in the background:
	// check now.
	ctx, cancel := d.callCtx(r)
	defer cancel()
	checks, ok := d.svc.Health(ctx)
	s.Redis = &health{OK: ok, Checks: checks, At: time.Now().UnixMilli()}
	writeJSON(w, s)
}

// writeTimeout bounds one write to an event stream: a client that stopped
// reading ends its stream instead of holding the goroutine.
const writeTimeout = 10 * time.Second

// events streams presence and metadata events, and the status every
// StatsInterval, as Server-Sent Events until the client goes, the
// dashboard closes or a write times out.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := d.callCtx(r)
	v, err := d.hub.join(ctx)
	cancel()
	switch {
	case errors.Is(err, errTooManyViewers):
		writeError(w, http.StatusServiceUnavailable, err)
		return
	case err != nil:
		writeServiceError(w, err)
		return
	}
	defer d.hub.leave(v)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(b)
		return err == nil
	}
	status := func() []byte {
		b, _ := json.Marshal(d.statusNow(v.dropped.Load()))
		return frame("status", b)
	}
	if !write([]byte("retry: 2000\n\n")) || !write(status()) || rc.Flush() != nil {
		return
	}
	t := time.NewTicker(d.o.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.closing:
			return
		case <-v.gone:
			return
		case <-t.C:
			if !write(status()) {
				return
			}
		case f := <-v.frames:
			ok := write(f)
			// Write what else is queued before one flush.
			for n := 0; ok && n < 64 && len(v.frames) > 0; n++ {
				ok = write(<-v.frames)
			}
			if !ok {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{err.Error()})
}

// writeServiceError answers bad input 400 and the rest (Redis down, a
// timeout, the service closed) 503.
func writeServiceError(w http.ResponseWriter, err error) {
	if errors.Is(err, presence.ErrInvalidArgument) {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeError(w, http.StatusServiceUnavailable, err)
}
