package socketio

import "time"

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

// StallAfterPing makes the engine's goroutine stall for d after the
// transport accepted each ping, as a preempted one may, until the test
// ends. Call it before starting the server.
func StallAfterPing(t interface{ Cleanup(func()) }, d time.Duration) {
	pingSent = func() { time.Sleep(d) }
	t.Cleanup(func() { pingSent = nil })
}
