package socketio

// logDrop logs a socket the server dropped because the client stopped
// answering: Engine.IO closes a socket whose pong is missing pingTimeout
// after a ping, so with the defaults a silent client goes 25s + 20s after
// its last pong, and the client sees a close without a reason (1006).
// Without this line such a drop left nothing in the server's log (issue
// 11's "socket dropped ~45s after connecting"). Client-initiated closes
// and server shutdowns are not logged.
func (b *Binding) logDrop(c *conn, args []any) {
	if len(args) == 0 {
		return
	}
	reason, _ := args[0].(string)
	switch reason {
	case "ping timeout", "transport error", "parse error":
		b.log.Info("socketio: socket dropped by the server", "reason", reason, "connId", c.id)
	}
}
