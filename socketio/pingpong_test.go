package socketio_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// Sockets that answer every ping stay connected across many ping
// intervals, idle or lightly loaded (half of them echo now and then).
//
// Issue 11 saw one socket in 2 of 5 load runs dropped ~45s after it
// connected, with nothing logged: 25s + 20s, the default pingInterval plus
// pingTimeout, so the engine's ping timeout. With a correct client this
// test sees none over thousands of pings; an overloaded machine (a
// broadcast storm on a saturated CPU) does drop sockets whose pongs queue
// behind their backlog longer than pingTimeout, which is the engine's
// intended behaviour, and such drops are now logged (TestPingTimeoutDropIsLogged).
func TestPingPongKeepsSockets(t *testing.T) {
	opts := socketio.ServerOptions(0)
	opts.SetPingInterval(25 * time.Millisecond)
	// Generous, so a loaded machine's scheduling delays are not taken for
	// an unanswered ping; a client that never answers is still dropped
	// well within the hold.
	opts.SetPingTimeout(3 * time.Second)
	var disconnects atomic.Int64
	var reasonMu sync.Mutex
	reasons := map[string]int{}
	url, _ := startBareServer(t, opts, func(s *socket.Socket) {
		s.On("echo", func(args ...any) {
			args[len(args)-1].(socket.Ack)(args[:len(args)-1], nil)
		})
		s.On("disconnect", func(args ...any) {
			disconnects.Add(1)
			reasonMu.Lock()
			if len(args) > 0 {
				if r, ok := args[0].(string); ok {
					reasons[r]++
				}
			}
			reasonMu.Unlock()
		})
	})
	const sockets = 40
	hold := 8 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), hold+30*time.Second)
	defer cancel()
	clients := make([]*siotest.Client, sockets)
	for i := range clients {
		c, err := siotest.Dial(ctx, url, siotest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}

	// Half the sockets stay idle; the others echo now and then.
	deadline := time.Now().Add(hold)
	var wg sync.WaitGroup
	for i, c := range clients {
		if i%2 == 0 {
			continue
		}
		wg.Go(func() {
			for time.Now().Before(deadline) {
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.Call(cctx, "echo", "x")
				ccancel()
				if err != nil {
					return // reported below as a dropped socket
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Until(deadline))
	wg.Wait()
	dropped := 0
	for i, c := range clients {
		select {
		case <-c.Done():
			dropped++
			t.Errorf("socket %d dropped: %v", i, c.Err())
		default:
		}
	}
	reasonMu.Lock()
	defer reasonMu.Unlock()
	if dropped > 0 || disconnects.Load() > 0 {
		t.Fatalf("%d of %d sockets dropped, server disconnect reasons %v, over %v of pings every 25ms", dropped, sockets, reasons, hold)
	}
}

// A client that stops answering pings is dropped pingTimeout after a ping,
// and the server's log says so (issue 11's silent drop left no trace).
func TestPingTimeoutDropIsLogged(t *testing.T) {
	srv := redistest.Embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc, err := presence.Open(ctx, presence.Config{Addrs: srv.Addrs, ReaperInterval: -1, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	opts := socketio.ServerOptions(0)
	opts.SetPingInterval(50 * time.Millisecond)
	opts.SetPingTimeout(100 * time.Millisecond)
	io := socket.NewServer(nil, opts)
	var logged syncBuffer
	b, err := socketio.Bind(ctx, io, svc, socketio.Options{Logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	url, hs := siotest.Listen(t, io)
	defer func() { b.Shutdown(ctx); io.Close(nil); hs.Close() }()

	// A raw WebSocket client that connects and then never answers a ping.
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, strings.Replace(url, "http", "ws", 1)+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // open
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			break // dropped
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logged.String(), `reason="ping timeout"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no ping timeout in the log: %q", logged.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The engine arms its pong timer after handing the ping to the transport.
// A stall of its goroutine in between (simulated after each ping) must not
// let the pong be processed first: the timer armed afterwards would drop
// the healthy socket pingTimeout later, the timeout being below the
// interval as with the defaults (20s < 25s). Fails when the transport
// writes pings at once.
func TestPingSurvivesEngineStall(t *testing.T) {
	socketio.StallAfterPing(t, 20*time.Millisecond) // below the transport's ping delay
	opts := socketio.ServerOptions(0)
	// The timeout stays below the interval (the race only drops sockets
	// then) and far above a pong's round trip on a loaded machine.
	opts.SetPingInterval(1500 * time.Millisecond)
	opts.SetPingTimeout(time.Second)
	var disconnects atomic.Int64
	url, _ := startBareServer(t, opts, func(s *socket.Socket) {
		s.On("disconnect", func(...any) { disconnects.Add(1) })
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var clients []*siotest.Client
	for range 10 {
		c, err := siotest.Dial(ctx, url, siotest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	time.Sleep(8 * time.Second) // 5 ping cycles, each past a stall
	for i, c := range clients {
		select {
		case <-c.Done():
			t.Errorf("socket %d dropped: %v", i, c.Err())
		default:
		}
	}
	if n := disconnects.Load(); n > 0 {
		t.Fatalf("%d of %d sockets disconnected by the server", n, len(clients))
	}
}
