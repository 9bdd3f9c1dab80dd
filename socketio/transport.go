package socketio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	ws "github.com/gorilla/websocket"
	"github.com/zishang520/socket.io/parsers/engine/v3/packet"
	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

// The engine's own WebSocket transport turns every pre-encoded broadcast
// frame into a gorilla PreparedMessage per recipient (a 4 KiB buffer and a
// map each, 72% of the server's allocations in bench/RESULTS.md) and makes
// one write syscall per frame. This transport plugs into the engine through
// ServerOptions.SetTransports in its place: frames are appended to a
// per-connection buffer (the broadcast's bytes are shared, never
// re-encoded) and a writer goroutine sends everything queued meanwhile in
// one write. Reading, framing of incoming messages and the upgrade stay
// gorilla's and the engine's.

// DefaultMaxPendingBytes bounds what may wait to be written to one
// WebSocket: a client that reads slower than its room produces is
// disconnected past it, so it cannot grow the server's memory.
const DefaultMaxPendingBytes = 4 << 20

// closeFlushTimeout bounds how long a closing connection may take to
// write what was queued before it closed.
const closeFlushTimeout = time.Second

// maxKeptBuffer is the largest write buffer kept between writes; a burst
// above it is released once written.
const maxKeptBuffer = 64 << 10

// WebSocketOptions configure the WebSocket transport.
type WebSocketOptions struct {
	// MaxPendingBytes bounds the frames waiting to be written to one
	// connection; past it the connection is closed (default
	// DefaultMaxPendingBytes; negative: no bound).
	MaxPendingBytes int
}

// WebSocketTransport returns this package's WebSocket transport for
// ServerOptions.SetTransports (ServerOptions installs it with the
// defaults).
func WebSocketTransport(o WebSocketOptions) transports.TransportCtor {
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	return &wsBuilder{maxPending: o.MaxPendingBytes}
}

type wsBuilder struct{ maxPending int }

func (*wsBuilder) Name() string          { return transports.WEBSOCKET }
func (*wsBuilder) HandlesUpgrades() bool { return true }
func (*wsBuilder) UpgradesTo() []string  { return nil }

func (b *wsBuilder) New(ctx *types.HttpContext) transports.Transport {
	t := &wsTransport{
		Transport:  transports.MakeTransport(),
		maxPending: b.maxPending,
		wake:       make(chan struct{}, 1),
	}
	t.Prototype(t)
	t.Construct(ctx)
	return t
}

type wsTransport struct {
	transports.Transport

	conn       *types.WebSocketConn
	raw        net.Conn
	idle       time.Duration
	maxPending int

	mu      sync.Mutex
	buf     []byte // frames waiting for the writer
	spare   []byte // the writer's last buffer, reused by the next batch
	closing bool   // no more frames are accepted; the writer flushes and closes
	wake    chan struct{}
}

func (t *wsTransport) Name() string          { return transports.WEBSOCKET }
func (t *wsTransport) HandlesUpgrades() bool { return true }

func (t *wsTransport) Construct(ctx *types.HttpContext) {
	t.Transport.Construct(ctx)
	t.conn = ctx.Websocket
	t.raw = t.conn.NetConn()
	t.idle = ctx.IdleTimeout

	// Every write to the connection goes through the writer: gorilla's
	// default handlers would answer pings and closes with writes of their
	// own, racing it.
	t.conn.SetPingHandler(func(data string) error {
		t.control(ws.PongMessage, []byte(data), false)
		return nil
	})
	t.conn.SetCloseHandler(func(code int, _ string) error {
		var msg []byte
		if code != ws.CloseNoStatusReceived {
			msg = ws.FormatCloseMessage(code, "")
		}
		t.control(ws.CloseMessage, msg, true)
		return nil
	})
	_ = t.conn.Once("close", func(...any) { t.OnClose() })

	t.SetWritable(true)
	t.SetPerMessageDeflate(nil)
	go t.writeLoop()
	transports.StartReader(t, ctx.TransportReadPermission(), t.read)
}

// read feeds incoming messages to the engine until the connection fails
// or closes.
func (t *wsTransport) read() {
	defer t.shut()
	var scratch bytes.Buffer
	for {
		if t.idle > 0 {
			_ = t.conn.SetReadDeadline(time.Now().Add(t.idle))
		}
		mt, r, err := t.conn.NextReader()
		if err != nil {
			var ce *ws.CloseError
			if !errors.As(err, &ce) && !errors.Is(err, net.ErrClosed) {
				t.OnError("websocket error", err)
			}
			return
		}
		// Read into a reused scratch buffer, then hand the engine an exact
		// copy: reading into a fresh buffer grows it to 512 B or 1 KiB for
		// the typical 60-byte heartbeat (16% of the server's allocations).
		scratch.Reset()
		if _, err := scratch.ReadFrom(r); err != nil {
			t.OnError("websocket error", err)
			return
		}
		msg := bytes.Clone(scratch.Bytes())
		if mt == ws.BinaryMessage {
			t.OnData(types.NewBytesBuffer(msg))
		} else {
			t.OnData(types.NewStringBuffer(msg))
		}
		if scratch.Cap() > maxKeptBuffer {
			scratch = bytes.Buffer{}
		}
	}
}

// Send queues packets for the writer. It never blocks on the network, so
// the transport stays writable and the engine hands over each packet as it
// comes; whatever accumulates while a write is in flight goes out in the
// next one.
func (t *wsTransport) Send(packets []*packet.Packet) {
	defer t.Emit("drain")
	var one [1]frame
	frames := one[:0]
	var ping []byte
	for _, p := range packets {
		if p.Type == packet.PING && p.Data == nil {
			ping = []byte{'2'} // Engine.IO v4 ping, held back: see pingWriteDelay
			continue
		}
		if p.Options != nil && p.Options.WsPreEncodedFrame != nil {
			_, text := p.Options.WsPreEncodedFrame.(*types.StringBuffer)
			frames = append(frames, frame{text, p.Options.WsPreEncodedFrame.Bytes()})
			continue
		}
		enc, err := t.Parser().EncodePacket(p, t.SupportsBinary())
		if err != nil {
			t.OnError("websocket encode", err)
			return
		}
		_, text := enc.(*types.StringBuffer)
		frames = append(frames, frame{text, enc.Bytes()})
	}
	if len(frames) > 0 {
		t.push(frames...)
	}
	if ping != nil {
		time.AfterFunc(pingWriteDelay, func() { t.push(frame{true, ping}) })
		if pingSent != nil {
			pingSent()
		}
	}
}

// pingWriteDelay holds back the engine's pings. The engine (zishang520
// engine.io v3.0.6, socket.schedulePing) hands a ping to the transport and
// only then arms the timer that closes the socket unless a pong arrives
// within pingTimeout. A pong processed in between clears the previous
// timer instead of this one, and this one closes the healthy socket
// pingTimeout after the ping, unless the next ping comes first: with the
// defaults it does not (pingTimeout 20s < pingInterval 25s), so the socket
// is dropped 45s after its previous pong, logged as a ping timeout, with a
// 1006 on the client: issue 11's "socket closed ~45s after it connected".
// On loopback the pong is back in tens of microseconds, so the engine's
// goroutine only has to be preempted, or wait for the engine's server-wide
// event emitter (it emits "drain" there first), to lose the race. Written
// this much later, the ping reaches the client after the engine armed its
// timer unless that goroutine stalls longer; each ping cycle gets as much
// longer, negligible next to the intervals (keep pingTimeout far above it).
const pingWriteDelay = 50 * time.Millisecond

// pingSent, set by tests only, runs after Send accepted a ping: where the
// engine's goroutine may stall before arming its pong timer.
var pingSent func()

// frame is one data frame's payload and kind.
type frame struct {
	text bool
	data []byte
}

// sendText queues one text frame written outside the engine (see
// broadcast.go); the engine has no callback waiting for it, so no "drain".
func (t *wsTransport) sendText(data []byte) {
	t.push(frame{true, data})
}

// push appends frames to the write buffer and wakes the writer; past
// maxPending the client is not reading, and it is dropped rather than its
// backlog kept.
func (t *wsTransport) push(frames ...frame) {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	for _, f := range frames {
		op := ws.BinaryMessage
		if f.text {
			op = ws.TextMessage
		}
		t.buf = appendFrame(t.buf, op, f.data)
	}
	over := t.maxPending > 0 && len(t.buf) > t.maxPending
	if over {
		t.closing, t.buf = true, nil
	}
	t.mu.Unlock()
	if over {
		t.OnError("websocket slow consumer", errSlowConsumer)
		_ = t.raw.Close()
		return
	}
	t.signal()
}

var errSlowConsumer = errors.New("write backlog over the limit")

// control queues a control frame; last makes it the connection's final
// frame.
func (t *wsTransport) control(op int, data []byte, last bool) {
	t.mu.Lock()
	if !t.closing {
		t.buf = appendFrame(t.buf, op, data)
		t.closing = last
	}
	t.mu.Unlock()
	t.signal()
}

func (t *wsTransport) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes what Send queued, one write per batch, until the
// transport closes; then it flushes the rest (bounded by
// closeFlushTimeout) and closes the connection.
func (t *wsTransport) writeLoop() {
	for {
		t.mu.Lock()
		for len(t.buf) == 0 && !t.closing {
			t.mu.Unlock()
			<-t.wake
			t.mu.Lock()
		}
		buf, closing := t.buf, t.closing
		t.buf, t.spare = t.spare[:0], nil
		t.mu.Unlock()

		if closing {
			_ = t.raw.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		}
		if len(buf) > 0 {
			if _, err := t.raw.Write(buf); err != nil {
				t.mu.Lock()
				t.closing, t.buf = true, nil
				t.mu.Unlock()
				_ = t.conn.Close()
				return
			}
		}
		if closing {
			t.mu.Lock()
			rest := t.buf
			t.buf = nil
			t.mu.Unlock()
			if len(rest) > 0 {
				_, _ = t.raw.Write(rest)
			}
			_ = t.conn.Close()
			return
		}
		if cap(buf) <= maxKeptBuffer {
			t.mu.Lock()
			t.spare = buf[:0]
			t.mu.Unlock()
		}
	}
}

// shut stops accepting frames and lets the writer flush and close.
func (t *wsTransport) shut() {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.signal()
}

func (t *wsTransport) OnClose() {
	t.shut()
	t.Transport.OnClose()
}

func (t *wsTransport) DoClose(fn types.Callable) {
	t.shut()
	if fn != nil {
		fn()
	}
}

// appendFrame appends one final, unmasked (server to client) WebSocket
// frame (RFC 6455 §5.2).
func appendFrame(b []byte, op int, data []byte) []byte {
	n := len(data)
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, data...)
}
