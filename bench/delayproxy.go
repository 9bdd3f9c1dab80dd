package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DelayProxy forwards TCP connections from a port of 127.0.0.1 to a
// server, holding every chunk it reads for a fixed one-way delay before it
// writes it on, in each direction, in order: a network's latency without
// leaving loopback, so figures that depend on round trips (the metadata
// strategies: one EVALSHA against WATCH, HGETALL, MULTI/EXEC) can be taken
// at a same-datacenter RTT on one machine.
//
// Go's timers cannot do this: with the process idle a 100 µs sleep takes
// about 1 ms (the runtime's poller waits in whole milliseconds). Chunks are
// released instead by one goroutine locked to its own OS thread, which
// sleeps in nanosleep(2) with a 1 µs timer slack (sleepPrecise). The delay
// is constant, so the order chunks are read in, across all connections, is
// the order they fall due: one FIFO serves every connection.
type DelayProxy struct {
	ln    net.Listener
	to    string
	delay time.Duration
	due   chan chunk // every connection's chunks, in the order read
	done  chan struct{}

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// chunk is what one Read returned, to be written to dst at due.
type chunk struct {
	dst *leg
	b   []byte
	due time.Time
}

// leg is one direction of one proxied connection.
type leg struct {
	src, dst net.Conn
	out      chan chunk    // chunks due, to its writer
	done     chan struct{} // the proxy's: closed by Close
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// StartDelayProxy listens on a free port of 127.0.0.1 and forwards to addr
// with delay added in each direction (0: forwarding only). Close stops it.
func StartDelayProxy(addr string, delay time.Duration) (*DelayProxy, error) {
	if delay < 0 {
		return nil, fmt.Errorf("bench: negative delay %v", delay)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{ln: ln, to: addr, delay: delay, due: make(chan chunk, 4096),
		done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Add(2)
	go p.accept()
	go p.release()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *DelayProxy) Addr() string { return p.ln.Addr().String() }

// Delay is the one-way delay added.
func (p *DelayProxy) Delay() time.Duration { return p.delay }

// Close stops accepting, closes every proxied connection and waits for
// the proxy's goroutines.
func (p *DelayProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	close(p.done)
	p.wg.Wait()
	return err
}

func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

// serve dials the server for client c and runs both legs; when either
// ends, both connections are closed.
func (p *DelayProxy) serve(c net.Conn) {
	defer p.untrack(c)
	s, err := net.DialTimeout("tcp", p.to, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(s) {
		return
	}
	defer p.untrack(s)
	up := &leg{src: c, dst: s, out: make(chan chunk, 256), done: p.done}
	down := &leg{src: s, dst: c, out: make(chan chunk, 256), done: p.done}
	var legs sync.WaitGroup
	for _, l := range []*leg{up, down} {
		legs.Add(2)
		go func() { defer legs.Done(); p.read(l) }()
		go func() {
			defer legs.Done()
			// The peer of a failed write or of an ended stream is gone:
			// end the other leg too.
			closeBoth := func() { c.Close(); s.Close() }
			l.write(closeBoth)
			closeBoth()
		}()
	}
	legs.Wait()
}

// read stamps what arrives on l.src and queues it; at EOF it queues an
// empty chunk, which ends l's writer once all before it are written.
func (p *DelayProxy) read(l *leg) {
	for {
		bp := chunkPool.Get().(*[]byte)
		n, err := l.src.Read(*bp)
		if n > 0 {
			if !p.queue(chunk{dst: l, b: (*bp)[:n], due: time.Now().Add(p.delay)}) {
				return
			}
		} else {
			chunkPool.Put(bp)
		}
		if err != nil {
			p.queue(chunk{dst: l, due: time.Now().Add(p.delay)})
			return
		}
	}
}

func (p *DelayProxy) queue(c chunk) bool {
	select {
	case p.due <- c:
		return true
	case <-p.done:
		return false
	}
}

// release hands each chunk to its leg's writer when it falls due.
func (p *DelayProxy) release() {
	defer p.wg.Done()
	lockThread()
	for {
		var c chunk
		select {
		case c = <-p.due:
		case <-p.done:
			return
		}
		if d := time.Until(c.due); d > 0 {
			sleepPrecise(d)
		}
		select {
		case c.dst.out <- c:
		case <-p.done:
			return
		}
	}
}

// write writes l's chunks as they are released until the empty chunk
// (the source's end). After a failed write it still takes, and drops, what
// is released for l, so the release of other connections' chunks never
// waits on l; the source ends soon, as serve closes it.
func (l *leg) write(failed func()) {
	var err error
	for {
		var c chunk
		select {
		case c = <-l.out:
		case <-l.done:
			return
		}
		if len(c.b) == 0 {
			return
		}
		if err == nil {
			if _, err = l.dst.Write(c.b); err != nil {
				failed()
			}
		}
		b := c.b[:cap(c.b)]
		chunkPool.Put(&b)
	}
}

// Ping measures n sequential PING round trips to addr over one connection
// and returns their median; the proxy's added latency is Ping through it
// less Ping direct.
func Ping(addr string, n int) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rtts := make([]time.Duration, 0, n)
	buf := make([]byte, 64)
	for range n {
		t := time.Now()
		if _, err := io.WriteString(c, "PING\r\n"); err != nil {
			return 0, err
		}
		if _, err := io.ReadAtLeast(c, buf, len("+PONG\r\n")); err != nil {
			return 0, err
		}
		rtts = append(rtts, time.Since(t))
	}
	if len(rtts) == 0 {
		return 0, errors.New("bench: no round trips measured")
	}
	return median(rtts), nil
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := 1; i < len(s); i++ { // insertion sort: n is small
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
