package siotest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.Open selects rueidis or goredis by name
	"github.com/realtime-message/presence/socketio"
)

// StartServer runs a presence Socket.IO server in process on a free
// 127.0.0.1 port, on the Redis cfg names, and returns its base URL. It is
// shut down (sockets left, service and listener closed) when the test ends.
// A nil cfg.Logger logs warnings to stderr.
func StartServer(t testing.TB, cfg presence.Config, opts socketio.Options) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.Logger == nil {
		opts.Logger = cfg.Logger
	}
	svc, err := presence.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	io := socket.NewServer(nil, socketio.ServerOptions(0))
	b, err := socketio.Bind(ctx, io, svc, opts)
	if err != nil {
		svc.Close()
		t.Fatal(err)
	}
	url, hs := Listen(t, io)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
		io.Close(nil)
		hs.Close()
		svc.Close()
	})
	return url
}

// Listen serves io at /socket.io/ on a free loopback port and returns its
// base URL and the HTTP server, which the caller closes.
func Listen(t testing.TB, io *socket.Server) (string, *http.Server) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", io.ServeHandler(nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	return "http://" + ln.Addr().String(), hs
}
