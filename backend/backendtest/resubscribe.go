package backendtest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
)

// testResubscribed: a subscription whose connection the server killed
// subscribes again by itself, counts it in Resubscribed, and delivers
// what is published afterwards.
func testResubscribed(t *testing.T, s *suite) {
	if s.target.Embedded {
		t.Skip("the embedded server cannot kill a client's connection")
	}
	c := s.client(t)
	p := tag(s.target.Name+t.Name(), "resub")
	in := newInbox(t)
	sub := subscribe(t, c, p+":*", in.handle)
	r, ok := sub.(backend.Resubscriber)
	if !ok {
		// Optional: presence then never learns of a reconnect.
		t.Skipf("%T has no Resubscribed() uint64", sub)
	}
	if n := r.Resubscribed(); n != 0 {
		t.Fatalf("Resubscribed() = %d before any reconnect", n)
	}
	for _, addr := range s.target.Addrs {
		killPubSubClients(t, addr)
	}
	deadline := time.Now().Add(wait)
	for r.Resubscribed() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Resubscribed() still 0 %v after its connection was killed", wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// On a cluster the kills reach the masters one after the other, so a
	// subscription restored on a node not yet visited is killed again, and
	// a message published in that second gap is lost (pub/sub is
	// at-most-once): publish until one arrives, within the deadline. An
	// adapter that never resubscribes still delivers nothing.
	deadline = time.Now().Add(wait)
	for {
		publish(t, c, p+":a", "after")
		select {
		case m := <-in.ch:
			if m.Payload == "after" {
				return
			}
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("message after the resubscribe: none within %v of publishing every 200ms", wait)
		}
	}
}

// killPubSubClients closes every subscribed client connection of the
// server at addr, as a restart or a network cut would.
func killPubSubClients(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wait))
	if _, err := conn.Write([]byte("CLIENT KILL TYPE pubsub\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("CLIENT KILL TYPE pubsub on %s: %q, %v", addr, line, err)
	}
}
