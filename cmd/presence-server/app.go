package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/adminui"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.Open selects rueidis or goredis by name
	"github.com/realtime-message/presence/embedded"
	"github.com/realtime-message/presence/socketio"
)

// App is the assembled server (see wire.go).
type App struct {
	Settings Settings
	Log      *slog.Logger
	Redis    *RedisTarget
	Service  *presence.Service
	IO       *socket.Server
	Binding  *socketio.Binding
	AdminUI  *adminui.Admin // nil unless enabled
	Metrics  *Metrics
	HTTP     *http.Server
	Admin    *AdminServer // the dashboard's listener; nil when off
}

// RedisTarget is the Redis the service runs on: the configured one, or the
// embedded server started for it.
type RedisTarget struct {
	Config   presence.Config  // the settings' config, addresses filled in
	Embedded *embedded.Server // nil for an external Redis
}

// provideRedis starts the embedded Redis when no REDIS_URL is set. Its log
// line is the server's first.
func provideRedis(s Settings, log *slog.Logger) (*RedisTarget, func(), error) {
	t := &RedisTarget{Config: s.Presence}
	if t.Config.RedisURL != "" || len(t.Config.Addrs) > 0 {
		where := strings.Join(t.Config.Addrs, ",")
		if t.Config.RedisURL != "" {
			where = redactURL(t.Config.RedisURL)
		}
		log.Info("using Redis at "+where, "backend", backendName(t.Config))
		return t, func() {}, nil
	}
	e, err := embedded.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("start the embedded Redis: %w", err)
	}
	log.Info("using the embedded in-process Redis (miniredis, "+e.Addr()+"): development only, data lives in this process; set REDIS_URL for a real Redis",
		"backend", backendName(t.Config))
	t.Config.RedisURL, t.Embedded = e.URL(), e
	return t, e.Close, nil
}

func backendName(c presence.Config) string {
	if c.Backend == "" {
		return "rueidis"
	}
	return c.Backend
}

// provideService opens the presence service on the target, its hooks
// feeding the metrics.
func provideService(ctx context.Context, t *RedisTarget, m *Metrics, log *slog.Logger) (*presence.Service, func(), error) {
	cfg := t.Config
	cfg.Hooks = m.presenceHooks()
	cfg.Logger = log
	// The client is built here rather than by presence.Open so that the
	// metrics see every call's error.
	client, err := presence.NewClient(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("presence: open: %w", err)
	}
	svc, err := presence.New(m.observeRedis(client), cfg)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	m.attachService(svc, backendName(cfg))
	c := svc.Config()
	log.Info("presence service ready", "heartbeat", c.Heartbeat, "metadata", c.Metadata, "ttl", c.TTL,
		"reaper", c.Reaper, "reaperInterval", c.ReaperInterval, "reaperLookback", c.ReaperLookback, "keyPrefix", c.KeyPrefix)
	return svc, func() { svc.Close(); client.Close() }, nil
}

// provideSocketServer builds the Socket.IO server.
func provideSocketServer(s Settings) *socket.Server {
	opts := socketio.ServerOptions(s.MaxMessageBytes)
	if s.CORSOrigin != "" {
		var origin any = s.CORSOrigin
		if s.CORSOrigin != "*" {
			origin = strings.Split(s.CORSOrigin, ",")
		}
		opts.SetCors(&types.Cors{Origin: origin, Credentials: s.CORSOrigin != "*"})
	}
	return socket.NewServer(nil, opts)
}

// provideBinding wires the protocol onto the Socket.IO server.
func provideBinding(ctx context.Context, io *socket.Server, svc *presence.Service, s Settings, m *Metrics, log *slog.Logger) (*socketio.Binding, error) {
	o := socketio.Options{
		HeartbeatRate:          s.HeartbeatRate,
		MetadataRate:           s.MetadataRate,
		PresenceRate:           s.PresenceRate,
		CallTimeout:            s.CallTimeout,
		EventBudget:            s.EventBudget,
		Logger:                 log,
		MaxQueuedEvents:        s.MaxQueuedEvents,
		DisconnectAfterRefused: s.DisconnectAfterRefused,
		Hooks:                  m.socketHooks(),
	}
	if a := s.authenticator(); a != nil {
		o.Authenticator = a
		log.Info("authentication: HS256 tokens signed with PRESENCE_AUTH_SECRET; a socket is bound to its token's user",
			"audience", a.Audience, "issuer", a.Issuer)
	} else {
		log.Info("authentication: none; presence:join's userId is trusted (set PRESENCE_AUTH_SECRET to require tokens)")
	}
	b, err := socketio.Bind(ctx, io, svc, o)
	if err != nil {
		return nil, err
	}
	m.attachBinding(b)
	return b, nil
}

// provideHTTP serves Socket.IO at /socket.io/, /healthz and /metrics.
func provideHTTP(io *socket.Server, b *socketio.Binding, svc *presence.Service, m *Metrics, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", io.ServeHandler(nil))
	mux.Handle("GET /metrics", m.Handler())
	// /healthz answers 503 when this node cannot serve: shutting down, a
	// master unreachable or the cluster down, or an event subscription lost
	// (its sockets would miss other nodes' events). checks lists each one,
	// so an operator sees which. status "degraded" (still 200) says a
	// notify reaper sweeps instead, or misses a master's events.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		status, code := "ok", http.StatusOK
		var checks []presence.HealthCheck
		if b.ShuttingDown() {
			status, code = "shutting down", http.StatusServiceUnavailable
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			var ok bool
			if checks, ok = svc.Health(ctx); !ok {
				status, code = "unhealthy", http.StatusServiceUnavailable
			}
		}
		var failed, degraded []string
		for _, c := range checks {
			switch {
			case !c.OK:
				failed = append(failed, c.Name+": "+c.Error)
			case c.Degraded != "":
				degraded = append(degraded, c.Name+": "+c.Degraded)
			}
		}
		// Degraded serves (200): the node is correct, only slower to
		// notice dead connections (presence.Service.Health).
		if status == "ok" && len(degraded) > 0 {
			status = "degraded"
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(struct {
			Status   string                 `json:"status"`
			Error    string                 `json:"error,omitempty"`
			Degraded string                 `json:"degraded,omitempty"`
			Sockets  int                    `json:"sockets"`
			Checks   []presence.HealthCheck `json:"checks,omitempty"`
		}{status, strings.Join(failed, "; "), strings.Join(degraded, "; "), b.Connected(), checks})
	})
	// net/http logs accept and handshake errors with the log package, plain
	// text on stderr, unless given a logger.
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// Run serves until ctx ends (SIGINT, SIGTERM), then shuts down gracefully.
// listening, when set, is told the bound address.
func (a *App) Run(ctx context.Context, listening func(net.Addr)) error {
	if a.Admin != nil {
		if _, err := a.Admin.listen(a.Settings.DashboardToken != ""); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", a.Settings.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	a.Log.Info("listening on "+ln.Addr().String(), "addr", ln.Addr().String(),
		"socketio", "/socket.io/", "health", "/healthz", "metrics", "/metrics")
	if listening != nil {
		listening(ln.Addr())
	}
	served := make(chan error, 1)
	go func() { served <- a.HTTP.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		a.Shutdown()
		return fmt.Errorf("serve: %w", err)
	}
	return a.Shutdown()
}

// Shutdown stops the server gracefully within Settings.ShutdownTimeout:
// it stops accepting connections, makes every local socket leave presence
// (other nodes see each leave), disconnects the sockets, flushes the
// heartbeat batcher and closes the service and its Redis connection. The
// embedded Redis, when used, is closed by the injector's cleanup after.
func (a *App) Shutdown() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), a.Settings.ShutdownTimeout)
	defer cancel()
	a.Log.Info("shutting down", "sockets", a.Binding.Connected(), "timeout", a.Settings.ShutdownTimeout)

	// Stop accepting: Shutdown closes the listener at once, then waits for
	// requests in flight (long-polls end when the Socket.IO server closes).
	httpDone := make(chan error, 1)
	go func() { httpDone <- a.HTTP.Shutdown(ctx) }()

	var errs []error
	if a.Admin != nil {
		if err := a.Admin.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.Binding.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	a.IO.Close(nil)
	select {
	case err := <-httpDone:
		if err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	case <-ctx.Done():
		a.HTTP.Close()
		errs = append(errs, fmt.Errorf("http shutdown: %w", ctx.Err()))
	}
	if err := a.Service.Flush(ctx); err != nil {
		errs = append(errs, fmt.Errorf("flush heartbeats: %w", err))
	}
	if err := a.Service.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close service: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		a.Log.Warn("shutdown finished with errors", "took", time.Since(start).Round(time.Millisecond), "err", err)
	} else {
		a.Log.Info("shutdown complete", "took", time.Since(start).Round(time.Millisecond))
	}
	return err
}
