package socketio

// QueuedEvents returns how many admitted events wait in the queues of the
// binding's sockets, so tests can order their steps without sleeping.
func QueuedEvents(b *Binding) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.conns {
		c.qmu.Lock()
		n += len(c.queue)
		c.qmu.Unlock()
	}
	return n
}
