package main

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/socketio"
	"github.com/realtime-message/presence/strategy"
)

// Metrics are the server's Prometheus metrics, fed by the service's and
// the binding's hooks and read from Service.Stats and Binding.Connected.
type Metrics struct {
	reg *prometheus.Registry

	// Labels of the strategy observations, known once the service is open.
	hbStrategy, mdStrategy atomic.Pointer[string]

	heartbeat     *prometheus.HistogramVec
	batchSize     prometheus.Histogram
	metaAttempts  *prometheus.CounterVec
	metaRetries   *prometheus.CounterVec
	metaConflicts *prometheus.CounterVec
	redisErrors   *prometheus.CounterVec
	buildInfo     *prometheus.GaugeVec
	reaped        prometheus.Counter
	events        *prometheus.CounterVec
	eventDuration *prometheus.HistogramVec
	coalesced     prometheus.Counter
	floodDrops    prometheus.Counter
	received      *prometheus.CounterVec
}

func newMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	unknown := "unknown"
	m.hbStrategy.Store(&unknown)
	m.mdStrategy.Store(&unknown)
	m.heartbeat = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "presence_heartbeat_duration_seconds",
		Help:    "Latency of presence heartbeats (including a batcher's wait), by strategy and outcome (ok, changed, stale, not_found, error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"strategy", "outcome"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "presence_heartbeat_batch_size",
		Help:    "Heartbeats per batch the batch strategy sent (only that strategy batches, so no strategy label).",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
	})
	m.metaAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_metadata_attempts_total", Help: "Metadata mutation attempts (each retry counts), by strategy.",
	}, []string{"strategy"})
	m.metaRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_metadata_retries_total", Help: "Metadata transactions retried after a WATCH abort, by strategy.",
	}, []string{"strategy"})
	m.metaConflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_metadata_conflicts_total", Help: "Metadata mutations refused with a revision conflict, by strategy.",
	}, []string{"strategy"})
	m.redisErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_redis_errors_total",
		Help: "Failed Redis calls by kind: timeout, connection (dial, reset, closed), server (an error reply other than NOSCRIPT), other. Calls the client gave up on are not counted.",
	}, []string{"kind"})
	for _, k := range []string{errTimeout, errConnection, errServer, errOther} {
		m.redisErrors.WithLabelValues(k) // every kind shows from the start, so rate() works at the first error
	}
	m.buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "presence_build_info",
		Help: "Always 1; the labels say what runs: module version, Go version, Redis client and strategies.",
	}, []string{"version", "goversion", "backend", "heartbeat", "metadata", "locks"})
	m.reaped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_reaped_connections_total", Help: "Expired connections this node's reaper removed.",
	})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_socketio_events_total",
		Help: "Client events handled, by event and result (ok, invalid, refused, rate_limited, overloaded, error).",
	}, []string{"event", "result"})
	m.eventDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "presence_socketio_event_duration_seconds",
		Help:    "Time to handle a client event, from its arrival (after the rate limit) to its ack, waiting behind the socket's earlier events included, by event and result (as presence_socketio_events_total).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 10),
	}, []string{"event", "result"})
	m.coalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_socketio_heartbeats_coalesced_total",
		Help: "Heartbeats that queued behind a socket's earlier event and ran merged with the others queued with them, as one call.",
	})
	m.floodDrops = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_socketio_flood_disconnects_total",
		Help: "Sockets disconnected for sending far over their rate limits.",
	})
	m.received = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_pubsub_messages_received_total",
		Help: "Pub/sub messages this node received from Redis, by kind (presence, metadata, user): with per-room subscriptions only those of rooms and users its sockets need, with pattern subscriptions every one.",
	}, []string{"kind"})
	for _, k := range []string{msgPresence, msgMetadata, msgUser} {
		m.received.WithLabelValues(k)
	}
	m.reg.MustRegister(m.received, m.heartbeat, m.batchSize, m.metaAttempts, m.metaRetries, m.metaConflicts, m.reaped,
		m.events, m.eventDuration, m.coalesced, m.floodDrops, m.redisErrors, m.buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// presenceHooks feed the service's observations into the metrics.
func (m *Metrics) presenceHooks() presence.Hooks {
	return presence.Hooks{
		Hooks: strategy.Hooks{
			BatchFlushed:     func(n int) { m.batchSize.Observe(float64(n)) },
			MetadataAttempt:  func() { m.metaAttempts.WithLabelValues(*m.mdStrategy.Load()).Inc() },
			MetadataRetry:    func(int, int) { m.metaRetries.WithLabelValues(*m.mdStrategy.Load()).Inc() },
			MetadataConflict: func() { m.metaConflicts.WithLabelValues(*m.mdStrategy.Load()).Inc() },
		},
		Heartbeat: func(outcome string, took time.Duration) {
			m.heartbeat.WithLabelValues(*m.hbStrategy.Load(), outcome).Observe(took.Seconds())
		},
		Reaped: func(n int) { m.reaped.Add(float64(n)) },
	}
}

// socketHooks feed the binding's observations into the metrics.
func (m *Metrics) socketHooks() socketio.Hooks {
	return socketio.Hooks{
		Event: func(event, result string, took time.Duration) {
			m.events.WithLabelValues(event, result).Inc()
			m.eventDuration.WithLabelValues(event, result).Observe(took.Seconds())
		},
		Coalesced:       func(n int) { m.coalesced.Add(float64(n)) },
		FloodDisconnect: func() { m.floodDrops.Inc() },
	}
}

// observeRedis wraps the service's Redis client to count its errors and
// registers the pub/sub reconnect counter read from it.
func (m *Metrics) observeRedis(c backend.Client) backend.Client {
	oc := observeClient(c, func(kind string) { m.redisErrors.WithLabelValues(kind).Inc() })
	o := oc.(interface{ observed() *observedClient }).observed()
	counters := map[string]prometheus.Counter{}
	for _, k := range []string{msgPresence, msgMetadata, msgUser} {
		counters[k] = m.received.WithLabelValues(k)
	}
	o.received = func(kind string) { counters[kind].Inc() }
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "presence_redis_pubsub_reconnects_total",
		Help: "Times an event subscription lost its connection and subscribed again; events published meanwhile were not delivered to this node.",
	}, func() float64 { return float64(o.resubscribes()) }))
	return oc
}

// strategyName drops a strategy spec's parameters ("batch?window=50ms" is
// "batch"), which would make a label per setting.
func strategyName(spec string) string {
	name, _, _ := strings.Cut(spec, "?")
	return name
}

// attachService registers the metrics read from the service.
func (m *Metrics) attachService(svc *presence.Service, backendName string) {
	c := svc.Config()
	hb, md := strategyName(c.Heartbeat), strategyName(c.Metadata)
	m.hbStrategy.Store(&hb)
	m.mdStrategy.Store(&md)
	version, goversion := "(unknown)", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
	}
	m.buildInfo.WithLabelValues(version, goversion, backendName, hb, md, c.Locks).Set(1)
	for _, v := range []*prometheus.CounterVec{m.metaAttempts, m.metaRetries, m.metaConflicts} {
		v.WithLabelValues(md)
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "presence_heartbeat_batch_buffer",
			Help: "Heartbeats the batch strategy holds right now (0 for other strategies).",
		}, func() float64 { return float64(svc.Stats().BatchBuffer) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "presence_script_reloads_total",
			Help: "Lua scripts resent with EVAL after NOSCRIPT (a Redis restart, failover or SCRIPT FLUSH).",
		}, func() float64 { return float64(svc.Stats().ScriptReloads) }),
	)
}

// attachBinding registers the metrics read from the binding.
func (m *Metrics) attachBinding(b *socketio.Binding) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "presence_connected_sockets",
		Help: "Socket.IO sockets connected to this node.",
	}, func() float64 { return float64(b.Connected()) }))
	const subsHelp = "Rooms (kind room) and users (kind user) this node has a subscription of their own for (per-room pub/sub; a room stays subscribed briefly after its last local socket left). 0 in pattern mode, where patterns cover every room."
	for kind, n := range map[string]func(presence.FeedStats) int{
		"room": func(s presence.FeedStats) int { return s.SubscribedRooms },
		"user": func(s presence.FeedStats) int { return s.SubscribedUsers },
	} {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "presence_pubsub_subscriptions", Help: subsHelp, ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(n(b.FeedStats())) }))
	}
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
