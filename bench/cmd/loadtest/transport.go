package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	sio "github.com/zishang520/socket.io/clients/socket/v3"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"
)

// ack is the first argument of an acknowledgement, as far as the load
// test reads it.
type ack struct {
	OK    bool     `json:"ok"`
	Error string   `json:"error"`
	Code  string   `json:"code"` // why a failure failed, when the server says
	Epoch *float64 `json:"epoch"`
	Self  *struct {
		Epoch float64 `json:"epoch"`
	} `json:"self"`
}

// presenceEvent is a presence:event, as far as the load test reads it.
type presenceEvent struct {
	Type   string `json:"type"`
	UserID string `json:"userId"`
	State  struct {
		Seq int64 `json:"seq"`
	} `json:"state"`
}

// transport is one client's Socket.IO connection.
type transport interface {
	// emit sends event with payload and calls done exactly once: with the
	// ack, or with an error (timeout, disconnect).
	emit(event string, payload any, timeout time.Duration, done func(ack, error))
	close()
}

// dialer opens a transport whose presence:events go to onEvent.
type dialer func(ctx context.Context, target, userID string, timeout time.Duration, onEvent func(presenceEvent)) (transport, error)

// dialers by LOADTEST_CLIENT.
var dialers = map[string]dialer{
	"socketio": dialSocketIO,
	"raw":      dialRaw,
}

// ---- github.com/zishang520/socket.io/clients/socket/v3 ----

type sioTransport struct{ s *sio.Socket }

// dialSocketIO connects with the Go Socket.IO client (WebSocket only, no
// reconnection).
//
// The client (v3.0.6) races with itself when left to connect on its own:
// Socket.Connect sends CONNECT from its "open" listener and again when it
// finds the manager already open, and the server closes a connection that
// sends a second CONNECT ("invalid state"), so the join sent next fails
// with "socket has been disconnected"; Manager.onopen also subscribes to
// the engine's data only after announcing "open", so a fast CONNECT answer
// can be lost ("connect timed out"). Opening the manager first and
// connecting the socket only once it is open leaves one CONNECT, sent with
// every listener in place. One race remains: the engine can read the
// server's open packet before Manager.Open listens for it; that attempt is
// abandoned and redialled (at most twice), as it never reached Socket.IO.
func dialSocketIO(ctx context.Context, target, userID string, timeout time.Duration, onEvent func(presenceEvent)) (transport, error) {
	deadline := time.Now().Add(timeout + 5*time.Second)
	var err error
	for range 3 {
		var t transport
		t, err = dialSocketIOOnce(ctx, target, userID, deadline, onEvent)
		if !errors.Is(err, errMissedOpen) {
			return t, err
		}
	}
	return nil, err
}

var errMissedOpen = errors.New("engine open, manager never told (client race)")

// missedOpenAfter is how long the engine may be open without the manager
// hearing of it before the attempt counts as lost: long enough for a
// descheduled goroutine on a loaded machine to catch up.
const missedOpenAfter = 500 * time.Millisecond

func dialSocketIOOnce(ctx context.Context, target, userID string, deadline time.Time, onEvent func(presenceEvent)) (transport, error) {
	o := sio.DefaultOptions()
	o.SetTransports(types.NewSet(sio.WebSocket))
	o.SetReconnection(false)
	o.SetForceNew(true)
	o.SetMultiplex(false)
	o.SetQuery(url.Values{"userId": {userID}})
	o.SetAutoConnect(false) // see dialSocketIO
	s, err := sio.Connect(target, o)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 2)
	s.Once("connect", func(...any) { done <- nil })
	s.Once("connect_error", func(a ...any) { done <- fmt.Errorf("connect_error: %v", a) })
	s.On("presence:event", func(a ...any) {
		if len(a) == 0 {
			return
		}
		m, _ := a[0].(map[string]any)
		ev := presenceEvent{}
		ev.Type, _ = m["type"].(string)
		ev.UserID, _ = m["userId"].(string)
		st, _ := m["state"].(map[string]any)
		seq, _ := st["seq"].(float64)
		ev.State.Seq = int64(seq)
		onEvent(ev)
	})
	fail := func(err error) (transport, error) {
		s.Disconnect()
		return nil, err
	}
	expire := time.NewTimer(time.Until(deadline))
	defer expire.Stop()

	mgr := s.Io()
	opened := make(chan error, 1)
	mgr.Open(func(err error) {
		select {
		case opened <- err:
		default:
		}
	})
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	var engineOpenSince time.Time
	for waiting := true; waiting; {
		select {
		case err := <-opened:
			if err != nil {
				return fail(fmt.Errorf("engine.io open: %w", err))
			}
			waiting = false
		case now := <-poll.C:
			e := mgr.Engine()
			if e == nil || e.ReadyState() != "open" {
				continue
			}
			if engineOpenSince.IsZero() {
				engineOpenSince = now
			} else if now.Sub(engineOpenSince) > missedOpenAfter {
				return fail(errMissedOpen)
			}
		case <-expire.C:
			return fail(errors.New("engine.io open timed out"))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}

	s.Connect()
	select {
	case err = <-done:
	case <-expire.C:
		err = errors.New("connect timed out")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fail(err)
	}
	return sioTransport{s}, nil
}

func (t sioTransport) emit(event string, payload any, timeout time.Duration, done func(ack, error)) {
	cb := socket.Ack(func(a []any, err error) {
		if err != nil {
			done(ack{}, err)
			return
		}
		var m map[string]any
		if len(a) > 0 {
			m, _ = a[0].(map[string]any)
		}
		var r ack
		r.OK, _ = m["ok"].(bool)
		r.Error = fmt.Sprint(m["error"])
		r.Code, _ = m["code"].(string)
		if e, ok := m["epoch"].(float64); ok {
			r.Epoch = &e
		}
		if self, ok := m["self"].(map[string]any); ok {
			e, _ := self["epoch"].(float64)
			r.Self = &struct {
				Epoch float64 `json:"epoch"`
			}{e}
		}
		done(r, nil)
	})
	if err := t.s.Timeout(timeout).Emit(event, payload, cb); err != nil {
		done(ack{}, err)
	}
}

func (t sioTransport) close() { t.s.Disconnect() }

// ---- raw: Socket.IO v5 over Engine.IO v4 WebSocket frames ----

// rawTransport speaks just what the load test needs of the protocol
// (open, connect, ping/pong, EVENT with ack id, ACK, presence:event) over
// one WebSocket, decoding only the fields it reads. It costs a fraction of
// the full client's CPU, so on a small machine the server, not the load
// generator, gets the cores.
type rawTransport struct {
	ws      *websocket.Conn
	wmu     sync.Mutex // one writer at a time
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]rawPending
	closed  bool
	cause   error // why it closed
	stop    chan struct{}
}

type rawPending struct {
	done     func(ack, error)
	deadline time.Time
}

var errRawClosed = errors.New("socket has been disconnected")

func dialRaw(ctx context.Context, target, userID string, timeout time.Duration, onEvent func(presenceEvent)) (transport, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/socket.io/"
	u.RawQuery = url.Values{"EIO": {"4"}, "transport": {"websocket"}, "userId": {userID}}.Encode()
	dctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	ws, _, err := websocket.DefaultDialer.DialContext(dctx, u.String(), nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadDeadline(time.Now().Add(timeout + 5*time.Second))
	// Engine.IO open packet, then our namespace connect and its answer.
	if _, msg, err := ws.ReadMessage(); err != nil || len(msg) == 0 || msg[0] != '0' {
		ws.Close()
		return nil, fmt.Errorf("engine.io open: %q, %v", msg, err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		ws.Close()
		return nil, err
	}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, err
		}
		s := string(msg)
		if s == "2" { // ping before the connect answer
			ws.WriteMessage(websocket.TextMessage, []byte("3"))
			continue
		}
		if strings.HasPrefix(s, "40") {
			break
		}
		ws.Close()
		return nil, fmt.Errorf("socket.io connect: %q", s)
	}
	ws.SetReadDeadline(time.Time{})
	t := &rawTransport{ws: ws, pending: map[uint64]rawPending{}, stop: make(chan struct{})}
	go t.read(onEvent)
	go t.sweep()
	return t, nil
}

const eventPrefix = `42["presence:event",`

func (t *rawTransport) read(onEvent func(presenceEvent)) {
	defer t.fail(errRawClosed)
	for {
		_, msg, err := t.ws.ReadMessage()
		if err != nil {
			return
		}
		switch {
		case len(msg) == 1 && msg[0] == '2': // ping
			t.write([]byte("3"))
		case len(msg) > len(eventPrefix) && string(msg[:len(eventPrefix)]) == eventPrefix:
			var ev presenceEvent
			if json.Unmarshal(msg[len(eventPrefix):len(msg)-1], &ev) == nil {
				onEvent(ev)
			}
		case len(msg) > 2 && msg[0] == '4' && msg[1] == '3': // ACK: 43<id>[...]
			i := 2
			for i < len(msg) && msg[i] >= '0' && msg[i] <= '9' {
				i++
			}
			id, err := strconv.ParseUint(string(msg[2:i]), 10, 64)
			if err != nil {
				continue
			}
			var args []ack
			err = json.Unmarshal(msg[i:], &args)
			t.mu.Lock()
			p, ok := t.pending[id]
			delete(t.pending, id)
			t.mu.Unlock()
			if !ok {
				continue // timed out already
			}
			if err != nil || len(args) == 0 {
				p.done(ack{}, fmt.Errorf("bad ack %q", msg))
				continue
			}
			p.done(args[0], nil)
		case len(msg) >= 2 && msg[0] == '4' && msg[1] == '1': // disconnect
			t.fail(errServerDisconnect)
			return
		}
	}
}

var errServerDisconnect = errors.New("server sent DISCONNECT")

// sweep fails acks past their deadline, checking every 250 ms: a timeout
// is reported up to that late, and 500 idle clients cost next to nothing.
func (t *rawTransport) sweep() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case now := <-tick.C:
			var late []rawPending
			t.mu.Lock()
			for id, p := range t.pending {
				if now.After(p.deadline) {
					late = append(late, p)
					delete(t.pending, id)
				}
			}
			t.mu.Unlock()
			for _, p := range late {
				p.done(ack{}, errors.New("operation has timed out"))
			}
		}
	}
}

func (t *rawTransport) write(b []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.ws.WriteMessage(websocket.TextMessage, b)
}

func (t *rawTransport) emit(event string, payload any, timeout time.Duration, done func(ack, error)) {
	body, err := json.Marshal([]any{event, payload})
	if err != nil {
		done(ack{}, err)
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		done(ack{}, errRawClosed)
		return
	}
	id := t.nextID
	t.nextID++
	t.pending[id] = rawPending{done: done, deadline: time.Now().Add(timeout)}
	t.mu.Unlock()
	msg := make([]byte, 0, len(body)+24)
	msg = append(msg, '4', '2')
	msg = strconv.AppendUint(msg, id, 10)
	msg = append(msg, body...)
	if err := t.write(msg); err != nil {
		t.mu.Lock()
		_, ok := t.pending[id]
		delete(t.pending, id)
		t.mu.Unlock()
		if ok {
			done(ack{}, err)
		}
	}
}

// fail ends the transport: pending acks fail with err.
func (t *rawTransport) fail(err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.cause = err
	close(t.stop)
	pending := t.pending
	t.pending = map[uint64]rawPending{}
	t.mu.Unlock()
	for _, p := range pending {
		p.done(ack{}, err)
	}
}

func (t *rawTransport) close() {
	t.write([]byte("41"))
	t.ws.Close()
	t.fail(errRawClosed)
}

// dead is closed when the transport ends, whoever ended it.
func (t *rawTransport) dead() <-chan struct{} { return t.stop }

func (t *rawTransport) pendingAcks() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// setWriteDeadline bounds every later write: a peer that stops reading
// must not block a sender past it (the connection is unusable after a
// write times out, which is fine for the flood socket it is for).
func (t *rawTransport) setWriteDeadline(d time.Time) {
	t.wmu.Lock()
	t.ws.SetWriteDeadline(d)
	t.wmu.Unlock()
}
