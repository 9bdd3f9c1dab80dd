package adminui

import (
	"github.com/zishang520/socket.io/servers/socket/v3"
)

// maxRoomName bounds a room name an admin may make sockets join.
const maxRoomName = 1024

// registerActions serves the UI's actions on one admin socket:
//
//	join(nsp, room, filter?)       the sockets of nsp (in room filter, or the socket of that id) join room
//	leave(nsp, room, filter?)      they leave room
//	_disconnect(nsp, close, filter?) they are disconnected (close: the whole connection)
//
// filter is a room; a socket id is a room of one. Unknown namespaces and
// malformed arguments are ignored, as the UI expects no answer. The
// Socket.IO rooms are the binding's view only: a socket made to leave its
// presence room still receives that room's events and stays in presence;
// disconnecting it makes it leave presence.
func (a *Admin) registerActions(s *socket.Socket) {
	by := s.Handshake().Address
	rooms := func(event string, apply func(*socket.BroadcastOperator, socket.Room)) {
		_ = s.On(event, func(args ...any) {
			n, room, filter, ok := a.roomAction(args)
			if !ok {
				return
			}
			a.log.Info("adminui: "+event, "nsp", n.Name(), "room", room, "filter", filter, "by", by)
			apply(sockets(n, filter), socket.Room(room))
		})
	}
	rooms("join", func(o *socket.BroadcastOperator, r socket.Room) { o.SocketsJoin(r) })
	rooms("leave", func(o *socket.BroadcastOperator, r socket.Room) { o.SocketsLeave(r) })
	_ = s.On("_disconnect", func(args ...any) {
		args = withoutAck(args)
		if len(args) < 2 {
			return
		}
		name, _ := args[0].(string)
		closeConn, ok := args[1].(bool)
		n := a.namespace(name)
		if n == nil || !ok {
			return
		}
		filter := stringArg(args, 2)
		a.log.Info("adminui: disconnect", "nsp", name, "close", closeConn, "filter", filter, "by", by)
		sockets(n, filter).DisconnectSockets(closeConn)
	})
}

// sockets selects the sockets of n in room filter, or all of them.
func sockets(n socket.Namespace, filter string) *socket.BroadcastOperator {
	if filter != "" {
		return n.In(socket.Room(filter))
	}
	return n.In()
}

// roomAction parses join and leave: (nsp, room, filter?).
func (a *Admin) roomAction(args []any) (socket.Namespace, string, string, bool) {
	args = withoutAck(args)
	if len(args) < 2 {
		return nil, "", "", false
	}
	name, _ := args[0].(string)
	room, _ := args[1].(string)
	n := a.namespace(name)
	if n == nil || room == "" || len(room) > maxRoomName {
		return nil, "", "", false
	}
	return n, room, stringArg(args, 2), true
}

func stringArg(args []any, i int) string {
	if i < len(args) {
		s, _ := args[i].(string)
		return s
	}
	return ""
}
