package main

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/socketio"
	"github.com/realtime-message/presence/strategy"
)

// Metrics are the server's Prometheus metrics, fed by the service's and
// the binding's hooks and read from Service.Stats and Binding.Connected.
type Metrics struct {
	reg *prometheus.Registry

	hbStrategy atomic.Pointer[string] // label of heartbeat observations

	heartbeat     *prometheus.HistogramVec
	batchSize     prometheus.Histogram
	metaAttempts  prometheus.Counter
	metaRetries   prometheus.Counter
	metaConflicts prometheus.Counter
	reaped        prometheus.Counter
	events        *prometheus.CounterVec
	eventDuration *prometheus.HistogramVec
	coalesced     prometheus.Counter
	floodDrops    prometheus.Counter
}

func newMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	unknown := "unknown"
	m.hbStrategy.Store(&unknown)
	m.heartbeat = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "presence_heartbeat_duration_seconds",
		Help:    "Latency of presence heartbeats (including a batcher's wait), by strategy and outcome (ok, changed, stale, not_found, error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"strategy", "outcome"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "presence_heartbeat_batch_size",
		Help:    "Heartbeats per batch the batch strategy sent.",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
	})
	m.metaAttempts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_metadata_attempts_total", Help: "Metadata mutation attempts (each retry counts).",
	})
	m.metaRetries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_metadata_retries_total", Help: "Metadata transactions retried after a WATCH abort.",
	})
	m.metaConflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_metadata_conflicts_total", Help: "Metadata mutations refused with a revision conflict.",
	})
	m.reaped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_reaped_connections_total", Help: "Expired connections this node's reaper removed.",
	})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_socketio_events_total",
		Help: "Client events handled, by event and result (ok, invalid, refused, rate_limited, overloaded, error).",
	}, []string{"event", "result"})
	m.eventDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "presence_socketio_event_duration_seconds",
		Help:    "Time to handle a client event, from its arrival (after the rate limit) to its ack, waiting behind the socket's earlier events included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 10),
	}, []string{"event"})
	m.coalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_socketio_heartbeats_coalesced_total",
		Help: "Heartbeats that queued behind a socket's earlier event and ran merged with the others queued with them, as one call.",
	})
	m.floodDrops = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "presence_socketio_flood_disconnects_total",
		Help: "Sockets disconnected for sending far over their rate limits.",
	})
	m.reg.MustRegister(m.heartbeat, m.batchSize, m.metaAttempts, m.metaRetries, m.metaConflicts, m.reaped,
		m.events, m.eventDuration, m.coalesced, m.floodDrops,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// presenceHooks feed the service's observations into the metrics.
func (m *Metrics) presenceHooks() presence.Hooks {
	return presence.Hooks{
		Hooks: strategy.Hooks{
			BatchFlushed:     func(n int) { m.batchSize.Observe(float64(n)) },
			MetadataAttempt:  func() { m.metaAttempts.Inc() },
			MetadataRetry:    func(int, int) { m.metaRetries.Inc() },
			MetadataConflict: func() { m.metaConflicts.Inc() },
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
			m.eventDuration.WithLabelValues(event).Observe(took.Seconds())
		},
		Coalesced:       func(n int) { m.coalesced.Add(float64(n)) },
		FloodDisconnect: func() { m.floodDrops.Inc() },
	}
}

// attachService registers the metrics read from the service.
func (m *Metrics) attachService(svc *presence.Service) {
	name := svc.Config().Heartbeat
	if i := strings.IndexByte(name, '?'); i >= 0 {
		name = name[:i]
	}
	m.hbStrategy.Store(&name)
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
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
