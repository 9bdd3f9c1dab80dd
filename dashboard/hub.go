package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence"
)

// hub fans the service's events out to the open dashboards. It subscribes
// only while at least one dashboard is open, so a deployment with the
// dashboard enabled but nobody looking costs Redis nothing. Delivery to a
// viewer never blocks: a viewer whose queue is full loses the event and
// the loss is counted, so a slow browser cannot slow the subscription,
// which (depending on the backend) may share its connection with the one
// that feeds the sockets.
type hub struct {
	svc        *presence.Service
	log        *slog.Logger
	queue      int
	maxViewers int
	every      time.Duration // stats and health period

	// mu orders joins, leaves and close (it is held across subscribing
	// and unsubscribing); vmu guards viewers alone and is never held
	// across I/O, so the subscription handlers that take it never wait
	// on Redis.
	mu      sync.Mutex
	period  *period // while viewers is not empty
	closed  bool
	vmu     sync.Mutex
	viewers map[*viewer]struct{}
	channel recentChannels

	presenceN, metadataN atomic.Uint64 // events received, since start
	dropped              atomic.Uint64 // frames lost to full viewer queues, all viewers
	rates                atomic.Pointer[rates]
	health               atomic.Pointer[health]
}

// viewer is one open event stream.
type viewer struct {
	frames  chan []byte
	dropped atomic.Uint64
	gone    chan struct{} // closed when the hub ends the viewer (Close)
}

// period is one stretch of time with viewers: the subscriptions and the
// ticker that measures rates and health.
type period struct {
	subs []presence.Subscription
	stop chan struct{} // ends the ticker
	done chan struct{} // the ticker ended
}

func (p *period) end() {
	close(p.stop)
	for _, s := range p.subs {
		s.Close()
	}
	<-p.done
}

type rates struct {
	PresencePerSec float64 `json:"presencePerSec"`
	MetadataPerSec float64 `json:"metadataPerSec"`
}

type health struct {
	OK     bool                   `json:"ok"`
	Checks []presence.HealthCheck `json:"checks"`
	At     int64                  `json:"atMs"`
}

var errTooManyViewers = errors.New("too many open dashboards")

func newHub(svc *presence.Service, log *slog.Logger, queue, maxViewers int, every time.Duration) *hub {
	h := &hub{svc: svc, log: log, queue: queue, maxViewers: maxViewers, every: every, viewers: map[*viewer]struct{}{}}
	h.rates.Store(&rates{})
	return h
}

// join adds a viewer, subscribing first when it is the only one.
func (h *hub) join(ctx context.Context) (*viewer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, presence.ErrClosed
	}
	n := h.count()
	if n >= h.maxViewers {
		return nil, errTooManyViewers
	}
	if n == 0 {
		if err := h.subscribe(ctx); err != nil {
			return nil, err
		}
	}
	v := &viewer{frames: make(chan []byte, h.queue), gone: make(chan struct{})}
	h.vmu.Lock()
	h.viewers[v] = struct{}{}
	h.vmu.Unlock()
	return v, nil
}

func (h *hub) count() int {
	h.vmu.Lock()
	defer h.vmu.Unlock()
	return len(h.viewers)
}

// leave removes a viewer, unsubscribing after the last one.
func (h *hub) leave(v *viewer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.vmu.Lock()
	_, ok := h.viewers[v]
	delete(h.viewers, v)
	last := ok && len(h.viewers) == 0
	h.vmu.Unlock()
	if last && h.period != nil {
		h.period.end()
		h.period = nil
	}
}

// close ends every viewer and subscription; later joins fail.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.vmu.Lock()
	for v := range h.viewers {
		close(v.gone)
	}
	clear(h.viewers)
	h.vmu.Unlock()
	if h.period != nil {
		h.period.end()
		h.period = nil
	}
}

// subscribe runs under h.mu.
func (h *hub) subscribe(ctx context.Context) error {
	ps, err := h.svc.SubscribeRaw(ctx, func(ev presence.RawEvent) {
		h.presenceN.Add(1)
		h.broadcast(frame("presence", ev.Payload))
	})
	if err != nil {
		return err
	}
	ms, err := h.svc.SubscribeMetadataRaw(ctx, func(ev presence.RawEvent) {
		h.metadataN.Add(1)
		var ch presence.Channel
		if json.Unmarshal(ev.Payload, &ch) == nil {
			h.channel.add(ch)
		}
		h.broadcast(frame("metadata", ev.Payload))
	})
	if err != nil {
		ps.Close()
		return err
	}
	h.rates.Store(&rates{})
	h.period = &period{subs: []presence.Subscription{ps, ms}, stop: make(chan struct{}), done: make(chan struct{})}
	go h.tick(h.period.stop, h.period.done)
	return nil
}

// tick measures event rates and checks health while subscribed.
func (h *hub) tick(stop, done chan struct{}) {
	defer close(done)
	h.checkHealth(stop)
	t := time.NewTicker(h.every)
	defer t.Stop()
	last, lastP, lastM := time.Now(), h.presenceN.Load(), h.metadataN.Load()
	for n := 1; ; n++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now, p, m := time.Now(), h.presenceN.Load(), h.metadataN.Load()
		secs := now.Sub(last).Seconds()
		h.rates.Store(&rates{PresencePerSec: float64(p-lastP) / secs, MetadataPerSec: float64(m-lastM) / secs})
		last, lastP, lastM = now, p, m
		if n%3 == 0 {
			h.checkHealth(stop)
		}
	}
}

// checkHealth runs the service's health check (the one /healthz shows),
// once for every viewer, bounded so a dead Redis delays only this.
func (h *hub) checkHealth(stop chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	checks, ok := h.svc.Health(ctx)
	h.health.Store(&health{OK: ok, Checks: checks, At: time.Now().UnixMilli()})
}

// broadcast queues f for every viewer without waiting: a full queue drops
// f for that viewer and counts it.
func (h *hub) broadcast(f []byte) {
	h.vmu.Lock()
	defer h.vmu.Unlock()
	for v := range h.viewers {
		select {
		case v.frames <- f:
		default:
			v.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// frame is one Server-Sent Events message. A data line ends at a newline,
// and published JSON is compact, but a payload with a newline between its
// tokens would be cut: compact it then.
func frame(event string, payload []byte) []byte {
	if bytes.IndexByte(payload, '\n') >= 0 {
		var b bytes.Buffer
		if json.Compact(&b, payload) == nil {
			payload = b.Bytes()
		}
	}
	f := make([]byte, 0, len(event)+len(payload)+16)
	f = append(f, "event: "...)
	f = append(f, event...)
	f = append(f, "\ndata: "...)
	f = append(f, payload...)
	return append(f, "\n\n"...)
}

// recentChannels remembers the last metadata channels seen in events: there
// is no index of channels in Redis (only KEYS or SCAN could find them,
// which the dashboard never runs), so these and a lookup by name are how
// the dashboard finds channels.
type recentChannels struct {
	mu   sync.Mutex
	list []presence.Channel // most recent last
}

const maxRecentChannels = 50

func (r *recentChannels) add(ch presence.Channel) {
	if ch.Type == "" || ch.Name == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.list {
		if c == ch {
			r.list = append(r.list[:i], r.list[i+1:]...)
			break
		}
	}
	r.list = append(r.list, ch)
	if len(r.list) > maxRecentChannels {
		r.list = r.list[len(r.list)-maxRecentChannels:]
	}
}

func (r *recentChannels) get() []presence.Channel {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]presence.Channel, len(r.list))
	for i, c := range r.list {
		out[len(out)-1-i] = c // most recent first
	}
	return out
}
