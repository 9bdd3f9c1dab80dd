package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
)

// A socket's events are admitted (shutdown, rate limit, queue bound) on the
// Socket.IO library's per-socket queue, which only hands them over, and run
// on the socket's own bounded queue below. The library's queue is unbounded
// and cannot shed: had the handlers run on it, a socket sending faster than
// Redis answers would grow it without limit, and work its client gave up on
// long ago would still run.

var (
	errOverloaded = errors.New("server overloaded: the event was not run; retry later")
	errQueueFull  = errors.New("too many events pending for this socket; the event was not run")
)

// queued is one admitted client event waiting for its socket's worker.
type queued struct {
	event   string
	h       handlerFunc
	payload any
	ack     socket.Ack
	at      time.Time // when the event was admitted
}

// handle registers h for event. The ack callback is the last argument
// when the client asked for one.
func (b *Binding) handle(c *conn, event string, limit *bucket, h handlerFunc) {
	_ = c.sock.On(event, func(args ...any) {
		q := &queued{event: event, h: h, at: time.Now()}
		if n := len(args); n > 0 {
			if a, ok := args[n-1].(socket.Ack); ok {
				q.ack, args = a, args[:n-1]
			}
		}
		if len(args) > 0 {
			q.payload = args[0]
		}
		switch {
		case b.closing.Load():
			b.reply(c, q, nil, errShuttingDown)
		case !limit.allow(q.at):
			b.refuse(c, q, errRateLimited)
		default:
			c.enqueue(q)
		}
	})
}

// refuse answers an event that was not admitted, and disconnects a socket
// that keeps sending far over its limits: past Options.DisconnectAfterRefused
// refusals within a second, answering each would cost more than the
// socket is worth.
func (b *Binding) refuse(c *conn, q *queued, err error) {
	b.reply(c, q, nil, err)
	limit := b.opts.DisconnectAfterRefused
	if limit < 0 {
		return
	}
	c.qmu.Lock()
	if q.at.Sub(c.refusedSince) >= time.Second {
		c.refusedSince, c.refused = q.at, 0
	}
	c.refused++
	drop := c.refused == limit+1
	c.qmu.Unlock()
	if drop {
		b.log.Warn("socketio: disconnecting a socket far over its rate limits",
			"sid", c.id, "refusedPerSecond", limit+1, "event", q.event)
		if h := b.opts.Hooks.FloodDisconnect; h != nil {
			h()
		}
		// Not on the library's queue, which this handler runs on.
		go c.sock.Disconnect(true)
	}
}

// enqueue adds an admitted event to the socket's queue and starts its
// worker if idle.
func (c *conn) enqueue(q *queued) {
	c.qmu.Lock()
	if len(c.queue) >= c.b.opts.MaxQueuedEvents {
		c.qmu.Unlock()
		c.b.refuse(c, q, errQueueFull)
		return
	}
	c.queue = append(c.queue, q)
	if c.draining {
		c.qmu.Unlock()
		return
	}
	c.draining = true
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// work is the socket's worker, from its connection to its disconnect. One
// long-lived goroutine per socket, rather than one per burst of events:
// a new goroutine grows its stack again on every Redis call (6% of the
// server's CPU when each heartbeat started one).
func (c *conn) work() {
	for {
		select {
		case <-c.wake:
			c.drain()
		case <-c.gone:
			return
		}
	}
}

// drain runs the socket's queued events in order until the queue is empty.
// Consecutive heartbeats are taken together (see runHeartbeats).
func (c *conn) drain() {
	var batch []*queued
	for {
		c.qmu.Lock()
		if len(c.queue) == 0 {
			c.queue = c.queue[:0]
			c.draining = false
			c.qmu.Unlock()
			return
		}
		n := 1
		if c.queue[0].event == EventHeartbeat {
			for n < len(c.queue) && c.queue[n].event == EventHeartbeat {
				n++
			}
		}
		batch = append(batch[:0], c.queue[:n]...)
		clear(c.queue[:n])
		c.queue = c.queue[n:]
		c.qmu.Unlock()

		c.runBatch(batch)
		clear(batch)
	}
}

// runBatch sheds the events that waited past the event budget (their
// clients have likely given up; running them would only delay the rest)
// and runs the others.
func (c *conn) runBatch(batch []*queued) {
	b := c.b
	now := time.Now()
	live := batch[:0]
	for _, q := range batch {
		switch {
		case c.released.Load():
			// Nobody is left to answer; the disconnect cleanup owns the conn.
		case b.closing.Load():
			b.reply(c, q, nil, errShuttingDown)
		case b.opts.EventBudget > 0 && now.Sub(q.at) > b.opts.EventBudget:
			b.reply(c, q, nil, errOverloaded)
		default:
			live = append(live, q)
		}
	}
	switch {
	case len(live) == 0:
	case len(live) == 1:
		resp, err := b.run(c, live[0].event, func(ctx context.Context) (any, error) {
			return live[0].h(ctx, live[0].payload)
		})
		b.reply(c, live[0], resp, err)
	default:
		c.runHeartbeats(live)
	}
}

// runHeartbeats runs several queued heartbeats of this socket. Heartbeats
// with the same epoch make one service call with their patches merged in
// order: the state ends as if each had run (a patch replaces top-level
// keys, so a later patch's key wins), and each caller gets that call's
// result. Invalid ones are answered on their own; they would have written
// nothing.
func (c *conn) runHeartbeats(qs []*queued) {
	b := c.b
	maxState := b.svc.Config().MaxStateBytes
	type parsed struct {
		q   *queued
		req heartbeatReq
	}
	hbs := make([]parsed, 0, len(qs))
	for _, q := range qs {
		req, err := parseHeartbeat(q.payload)
		if err != nil {
			b.reply(c, q, nil, err)
			continue
		}
		hbs = append(hbs, parsed{q, req})
	}
	for len(hbs) > 0 {
		req := hbs[0].req
		n, size := 1, len(req.PatchState)
		for n < len(hbs) && sameEpoch(hbs[n].req.Epoch, req.Epoch) &&
			(maxState <= 0 || size+len(hbs[n].req.PatchState) <= maxState) {
			size += len(hbs[n].req.PatchState)
			n++
		}
		group := hbs[:n]
		hbs = hbs[n:]
		if n > 1 {
			patches := make([]json.RawMessage, n)
			for i, h := range group {
				patches[i] = h.req.PatchState
			}
			merged, err := mergePatches(patches)
			if err != nil {
				// Unreachable for parsed payloads; run them one by one.
				for _, h := range group {
					resp, err := b.run(c, EventHeartbeat, func(ctx context.Context) (any, error) { return c.heartbeatReq(ctx, h.req) })
					b.reply(c, h.q, resp, err)
				}
				continue
			}
			req.PatchState = merged
		}
		resp, err := b.run(c, EventHeartbeat, func(ctx context.Context) (any, error) {
			return c.heartbeatReq(ctx, req)
		})
		if h := b.opts.Hooks.Coalesced; h != nil && n > 1 {
			h(n)
		}
		for _, h := range group {
			b.reply(c, h.q, resp, err)
		}
	}
}

func sameEpoch(a, b *int64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// mergePatches merges JSON object patches in order; nil when none has
// content.
func mergePatches(patches []json.RawMessage) (json.RawMessage, error) {
	merged := map[string]json.RawMessage{}
	for _, p := range patches {
		if err := patchInto(merged, p); err != nil {
			return nil, err
		}
	}
	if len(merged) == 0 {
		return nil, nil
	}
	return json.Marshal(merged)
}

// patchInto applies a JSON object patch to dst: each top-level key of the
// patch replaces dst's (null is a value, as in the service's merge).
func patchInto(dst map[string]json.RawMessage, patch json.RawMessage) error {
	if len(patch) == 0 {
		return nil
	}
	return json.Unmarshal(patch, &dst)
}

// run calls f with the event's deadline, turning a panic into an error.
func (b *Binding) run(c *conn, event string, f func(ctx context.Context) (any, error)) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			b.log.Error("socketio: event handler panicked", "event", event, "sid", c.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.CallTimeout)
	defer cancel()
	return f(ctx)
}

// reply acks q with resp, or with err turned into a failure ack, and
// reports the result to Hooks.Event with the time since admission.
func (b *Binding) reply(c *conn, q *queued, resp any, err error) {
	result := ResultOK
	if err != nil {
		resp, result = b.failure(c, q.event, err)
	}
	if hook := b.opts.Hooks.Event; hook != nil {
		hook(q.event, result, time.Since(q.at))
	}
	if q.ack != nil {
		q.ack([]any{resp}, nil)
	}
}
