package bench

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection until it is closed.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// Bytes pass through unchanged and in order, in both directions, on
// several connections at once, whatever the sizes of the writes.
func TestDelayProxyPreservesStreams(t *testing.T) {
	p, err := StartDelayProxy(echoServer(t), 200*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			rnd := rand.New(rand.NewPCG(uint64(i), 1))
			want := make([]byte, 300_000)
			for j := range want {
				want[j] = byte(rnd.Uint32())
			}
			go func() {
				for rest := want; len(rest) > 0; {
					n := min(len(rest), 1+rnd.IntN(70_000))
					if _, err := c.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
			}()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, want) {
				errs <- io.ErrUnexpectedEOF
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal("stream through the proxy:", err)
	}
}

// A round trip through the proxy takes at least twice the delay: each
// direction holds what it read for the delay. (A lower bound only: the
// machine may add any amount.)
func TestDelayProxyAddsDelayEachWay(t *testing.T) {
	const delay = 3 * time.Millisecond
	p, err := StartDelayProxy(echoServer(t), delay)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 5)
	for range 5 {
		start := time.Now()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("echo %q, %v", buf, err)
		}
		if rtt := time.Since(start); rtt < 2*delay {
			t.Fatalf("round trip %v through a proxy adding %v each way", rtt, delay)
		}
	}
}

// Close ends proxied connections (the client sees the end) and returns
// only once the proxy's goroutines are gone; connecting afterwards fails.
func TestDelayProxyClose(t *testing.T) {
	p, err := StartDelayProxy(echoServer(t), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	// Data still in flight when Close comes.
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// The end of the stream, or a reset (the proxy closed with data unread).
	var ne net.Error
	if _, err := io.ReadAll(c); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection outlives the proxy's Close")
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("the proxy accepts connections after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}
