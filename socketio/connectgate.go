package socketio

import (
	"sync"
	"time"

	engine "github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

// connectGate works around a race in zishang520/socket.io v3.0.6: the
// server writes the CONNECT answer to the client (Socket._onconnect) before
// it records the socket in its Client (the callback of Namespace.Add), on
// another goroutine than the one reading the connection. A client that
// emits as soon as it is connected — SDKs that join in their "connect"
// handler do — can get its first event read in between: the library then
// finds no socket for the namespace, logs "invalid state" and closes the
// connection. On loopback this happens to a few percent of connections.
//
// The gate holds the packets a connection receives after its first
// CONNECT until the namespace's "connection" event has fired (the socket
// is then recorded), the socket was refused, the connection closed, or
// gateTimeout passed. It runs on the goroutine that reads the connection,
// so it delays only that connection; CONNECT packets are never held.
type connectGate struct {
	once sync.Once
	ch   chan struct{}
}

func (g *connectGate) open() { g.once.Do(func() { close(g.ch) }) }

// installGates puts a gate in front of every connection's packet
// listeners. The engine emits "connection" before it reads the first
// packet, and the Socket.IO server's own listener (which adds the packet
// listener we must precede) runs before ours, so the listeners can be
// reordered here safely.
func (b *Binding) installGates(io *socket.Server) {
	eng := io.Engine()
	if eng == nil {
		io.ServeHandler(nil) // creates and binds the engine
		eng = io.Engine()
	}
	_ = eng.On("connection", func(args ...any) {
		if len(args) == 0 {
			return
		}
		es, ok := args[0].(engine.Socket)
		if !ok {
			return
		}
		g := &connectGate{ch: make(chan struct{})}
		b.gates.Store(es, g)
		prev := es.Listeners("data")
		es.RemoveAllListeners("data")
		_ = es.On("data", func(args ...any) { b.waitGate(g, args) })
		_ = es.On("data", prev...)
		_ = es.Once("close", func(...any) {
			g.open()
			b.gates.Delete(es)
		})
	})
	// A connection that joins only another namespace (the admin UI's
	// /admin, package adminui) must open its gate too, or each of its
	// packets would wait gateTimeout. Namespaces made before Bind are not
	// announced: make them after.
	_ = io.Sockets().On("new_namespace", func(args ...any) {
		n, ok := first[socket.Namespace](args)
		if !ok {
			return
		}
		_ = n.On("connection", func(args ...any) {
			if s, ok := first[*socket.Socket](args); ok {
				b.openGate(s)
			}
		})
	})
}

// gateTimeout bounds how long a packet waits for its connection's socket.
func (b *Binding) gateTimeout() time.Duration { return b.opts.CallTimeout + time.Second }

func (b *Binding) waitGate(g *connectGate, args []any) {
	select {
	case <-g.ch:
		return
	default:
	}
	if len(args) > 0 {
		if buf, ok := args[0].(*types.StringBuffer); ok {
			if p, err := buf.Peek(1); err == nil && len(p) == 1 && p[0] == '0' {
				return // CONNECT: it is what opens the gate
			}
		}
	}
	t := time.NewTimer(b.gateTimeout())
	defer t.Stop()
	select {
	case <-g.ch:
	case <-t.C:
	}
}

// openGate opens the gate of a socket's connection: it is recorded (or
// refused), so packets can flow.
func (b *Binding) openGate(s *socket.Socket) {
	if v, ok := b.gates.Load(s.Conn()); ok {
		v.(*connectGate).open()
	}
}
