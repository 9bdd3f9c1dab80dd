package socketio_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin" // registers rueidis and goredis for presence.Open
	"github.com/realtime-message/presence/socketio"
)

// A presence server on Redis, shut down gracefully on SIGINT: every local
// socket leaves presence first, so clients on other nodes see it go.
func ExampleBind() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	svc, err := presence.Open(ctx, presence.Config{RedisURL: "redis://127.0.0.1:6379/0"})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	io := socket.NewServer(nil, socketio.ServerOptions(0))
	b, err := socketio.Bind(ctx, io, svc, socketio.Options{
		Authenticator: &socketio.HMACAuthenticator{Secret: []byte(os.Getenv("PRESENCE_AUTH_SECRET"))},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", io.ServeHandler(nil))
	srv := &http.Server{Addr: ":3000", Handler: mux}
	go srv.ListenAndServe()

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go srv.Shutdown(sctx) // stop accepting (io.Close alone would not)
	b.Shutdown(sctx)      // every local socket leaves presence
	io.Close(nil)         // disconnect the sockets
	svc.Flush(sctx)       // send heartbeats a batcher still holds
}
