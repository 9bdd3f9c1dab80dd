package socketio

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence"
)

// Events from Redis go to the local sockets of their room without the
// Socket.IO broadcast: the frame is built once and handed to each
// socket's WebSocket transport, which costs a copy into its write buffer
// per recipient. The library's broadcast would encode once too, but then
// create an Engine.IO packet, flush the socket's buffer and emit four
// events per recipient. Sockets on long-polling (or mid-upgrade) take the
// library's path, so every client gets every event either way.

// enterRoom puts c in room: the Socket.IO room of the same name, the
// binding's own index of local sockets per room, and a follow of the
// room's events that has taken effect when it returns, so c gets every
// event published from then on, its own join's included. Each enterRoom
// that returned nil is undone by one exitRoom.
func (b *Binding) enterRoom(ctx context.Context, c *conn, room string) error {
	c.sock.Join(socket.Room(room))
	b.index(c, room)
	if err := b.feed.FollowRoom(ctx, room); err != nil {
		c.sock.Leave(socket.Room(room))
		b.unindex(c, room)
		return err
	}
	return nil
}

func (b *Binding) exitRoom(c *conn, room string) {
	c.sock.Leave(socket.Room(room))
	b.unindex(c, room)
	b.feed.UnfollowRoom(room)
}

func (b *Binding) index(c *conn, room string) {
	b.rmu.Lock()
	m := b.rooms[room]
	if m == nil {
		m = map[*conn]struct{}{}
		b.rooms[room] = m
	}
	m[c] = struct{}{}
	b.rmu.Unlock()
}

func (b *Binding) unindex(c *conn, room string) {
	b.rmu.Lock()
	if m := b.rooms[room]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(b.rooms, room)
		}
	}
	b.rmu.Unlock()
}

// eventFrame is the Engine.IO message carrying the Socket.IO event
// [name, payload] in the default namespace: "4" (message) "2" (event).
func eventFrame(name string, payload json.RawMessage) []byte {
	f := make([]byte, 0, len(name)+len(payload)+8)
	f = append(f, `42[`...)
	f = strconv.AppendQuote(f, name)
	f = append(f, ',')
	f = append(f, payload...)
	return append(f, ']')
}

// forward sends one event to every local socket in room.
func (b *Binding) forward(room, name string, payload json.RawMessage) {
	var frame []byte
	var slow []*conn
	b.rmu.RLock()
	for c := range b.rooms[room] {
		t, ok := c.sock.Conn().Transport().(*wsTransport)
		if !ok || c.sock.Conn().ReadyState() != "open" {
			slow = append(slow, c)
			continue
		}
		if frame == nil {
			frame = eventFrame(name, payload)
		}
		t.sendText(frame)
	}
	b.rmu.RUnlock()
	for _, c := range slow {
		if err := c.sock.Emit(name, payload); err != nil {
			b.log.Warn("socketio: forward event", "event", name, "room", room, "err", err)
		}
	}
}

func (b *Binding) forwardPresence(ev presence.RawEvent) {
	b.forward(ev.Target, EventPresence, ev.Payload)
}

func (b *Binding) forwardMetadata(ev presence.RawEvent) {
	b.forward(ev.Target, EventMetadata, ev.Payload)
}
