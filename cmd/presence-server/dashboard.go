package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/dashboard"
	"github.com/realtime-message/presence/socketio"
)

// AdminServer serves the dashboard on its own listener
// (Settings.DashboardAddr), never on the public one: an operator page
// reaches who can reach that address, by default this host only.
type AdminServer struct {
	Addr      string
	Dashboard *dashboard.Dashboard
	HTTP      *http.Server
	log       *slog.Logger
}

// provideDashboard builds the admin server, nil when the dashboard is off.
func provideDashboard(s Settings, svc *presence.Service, b *socketio.Binding, log *slog.Logger) *AdminServer {
	if !s.Dashboard {
		return nil
	}
	d := dashboard.New(svc, dashboard.Options{Token: s.DashboardToken, Sockets: b.Connected, Logger: log})
	mux := http.NewServeMux()
	mux.Handle(dashboard.Path, d)
	return &AdminServer{Addr: s.DashboardAddr, Dashboard: d, log: log,
		HTTP: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
}

// listen binds the admin address and serves it; errors of Serve after
// that are logged (the public listener keeps serving).
func (a *AdminServer) listen(token bool) (net.Addr, error) {
	ln, err := net.Listen("tcp", a.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard listen: %w", err)
	}
	auth := "none (loopback address)"
	if token {
		auth = "bearer token (PRESENCE_DASHBOARD_TOKEN)"
	}
	a.log.Info("dashboard on http://"+ln.Addr().String()+dashboard.Path, "addr", ln.Addr().String(), "auth", auth)
	go func() {
		if err := a.HTTP.Serve(ln); err != nil && err != http.ErrServerClosed {
			a.log.Error("dashboard server failed", "err", err)
		}
	}()
	return ln.Addr(), nil
}

// shutdown ends the dashboard's event streams, which would otherwise hold
// the HTTP shutdown until its deadline, then the server.
func (a *AdminServer) shutdown(ctx context.Context) error {
	a.Dashboard.Close()
	if err := a.HTTP.Shutdown(ctx); err != nil {
		a.HTTP.Close()
		return fmt.Errorf("dashboard shutdown: %w", err)
	}
	return nil
}

// checkDashboardAddr refuses a dashboard others can reach without a
// token: an address that is not loopback (an empty host or 0.0.0.0 is
// every interface) needs PRESENCE_DASHBOARD_TOKEN.
func checkDashboardAddr(addr string, token bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dashboard address %q: %v", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("dashboard address %q: bad port", addr)
	}
	if token {
		return nil
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("dashboard address %q is reachable from other hosts: set PRESENCE_DASHBOARD_TOKEN, or listen on 127.0.0.1", addr)
}
