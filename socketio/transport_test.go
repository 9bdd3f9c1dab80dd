package socketio_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

// startBareServer serves a Socket.IO server with this package's options
// (and so its WebSocket transport) and no presence: onConnection sets up
// each socket.
func startBareServer(t *testing.T, opts *socket.ServerOptions, onConnection func(*socket.Socket)) (string, *socket.Server) {
	t.Helper()
	io := socket.NewServer(nil, opts)
	io.On("connection", func(args ...any) { onConnection(args[0].(*socket.Socket)) })
	url, hs := siotest.Listen(t, io)
	t.Cleanup(func() { io.Close(nil); hs.Close() })
	return url, io
}

// TestTransportFrames: messages of every WebSocket length encoding (7-bit,
// 16-bit, 64-bit) arrive intact, and one broadcast reaches every socket
// of the room with the same bytes.
func TestTransportFrames(t *testing.T) {
	url, io := startBareServer(t, socketio.ServerOptions(4<<20), func(s *socket.Socket) {
		s.Join("r")
		s.On("echo", func(args ...any) {
			args[len(args)-1].(socket.Ack)(args[:len(args)-1], nil)
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var clients []*siotest.Client
	for range 3 {
		c, err := siotest.Dial(ctx, url, siotest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	for _, n := range []int{0, 1, 100, 110, 125, 126, 200, 65_000, 65_535, 65_536, 70_000, 1 << 20} {
		s := strings.Repeat("x", n)
		a, err := clients[0].Call(ctx, "echo", s)
		if err != nil {
			t.Errorf("echo of %d bytes: %v", n, err)
			continue
		}
		var got string
		if len(a) != 1 || json.Unmarshal(a[0], &got) != nil || got != s {
			t.Errorf("echo of %d bytes came back as %d bytes", n, len(got))
		}
	}
	for i := range 50 {
		io.To("r").Emit("news", i, strings.Repeat("y", i*1000))
	}
	for _, c := range clients {
		var got []siotest.Event
		for deadline := time.Now().Add(10 * time.Second); len(got) < 50 && time.Now().Before(deadline); {
			for _, e := range c.Events() {
				if e.Name == "news" {
					got = append(got, e)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if len(got) != 50 {
			t.Fatalf("%d broadcasts arrived, want 50", len(got))
		}
		for i, e := range got {
			var seq int
			var body string
			if json.Unmarshal(e.Args[0], &seq) != nil || json.Unmarshal(e.Args[1], &body) != nil || seq != i || len(body) != i*1000 {
				t.Fatalf("broadcast %d arrived as %s (%d bytes)", i, e.Args[0], len(body))
			}
		}
	}
}

// rawEngineIO opens a WebSocket to the server and completes the Engine.IO
// and Socket.IO handshakes, leaving the reading to the test.
func rawEngineIO(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	u := strings.Replace(url, "http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, m, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(m), "0") {
		t.Fatalf("open packet: %q %v", m, err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		t.Fatal(err)
	}
	if _, m, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(m), "40") {
		t.Fatalf("connect: %q %v", m, err)
	}
	return ws
}

func withTransport(maxPending int) *socket.ServerOptions {
	o := socketio.ServerOptions(0)
	o.SetTransports(types.NewSet[transports.TransportCtor](&transports.PollingBuilder{}, socketio.WebSocketTransport(socketio.WebSocketOptions{MaxPendingBytes: maxPending})))
	return o
}

// TestTransportDropsSlowConsumer: a client that stops reading is
// disconnected once its unwritten frames pass the bound, instead of the
// server buffering without limit; a client that reads the same stream
// stays.
func TestTransportDropsSlowConsumer(t *testing.T) {
	const bound = 512 << 10
	disconnected := make(chan string, 2)
	sockets := make(chan *socket.Socket, 2)
	url, _ := startBareServer(t, withTransport(bound), func(s *socket.Socket) {
		s.On("disconnect", func(args ...any) {
			reason, _ := args[0].(string)
			disconnected <- reason
		})
		s.On("nothing", func(args ...any) { args[len(args)-1].(socket.Ack)(nil, nil) })
		sockets <- s
	})
	rawEngineIO(t, url) // never read again
	stalled := <-sockets
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reader, err := siotest.Dial(ctx, url, siotest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	reading := <-sockets

	chunk := strings.Repeat("z", 64<<10)
	// Paced by the reader, so only a client that does not read falls
	// behind; 2,000 × 64 KiB is far past loopback's socket buffers.
	for i := 0; i < 2000 && stalled.Connected(); i++ {
		stalled.Emit("chunk", chunk)
		reading.Emit("chunk", chunk)
		if _, err := reader.Call(ctx, "nothing"); err != nil {
			t.Fatal(err)
		}
		reader.Events()
	}
	select {
	case reason := <-disconnected:
		if reason != "transport error" && reason != "transport close" {
			t.Fatalf("disconnect reason %q", reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that reads nothing is still connected")
	}
	if !reading.Connected() {
		t.Fatal("the client that reads was disconnected too")
	}
}

// TestTransportControlFrames: a WebSocket ping is answered with a pong
// through the transport's writer, and a client's close frame is echoed
// and ends the socket.
func TestTransportControlFrames(t *testing.T) {
	disconnected := make(chan struct{})
	url, _ := startBareServer(t, socketio.ServerOptions(0), func(s *socket.Socket) {
		s.On("disconnect", func(...any) { close(disconnected) })
	})
	ws := rawEngineIO(t, url)
	pong := make(chan string, 1)
	ws.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := ws.WriteControl(websocket.PingMessage, []byte("hello"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan int, 1)
	ws.SetCloseHandler(func(code int, _ string) error { closed <- code; return nil })
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	select {
	case d := <-pong:
		if d != "hello" {
			t.Fatalf("pong %q", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-closed:
		if code != websocket.CloseNormalClosure {
			t.Fatalf("close echo code %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no close echo")
	}
	<-readErr
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("the socket outlived its connection")
	}
}
