// Package siotest is a minimal Socket.IO v5 (Engine.IO v4) client over
// WebSocket for end-to-end tests of the presence server.
//
// It speaks the wire format by hand, as socket.io-client 4.x writes and
// reads it (CONNECT "40{auth}", EVENT "42<id>[name,...]", ACK
// "43<id>[...]", ping "2" / pong "3"), so tests check the exact frames the
// server produces. It exists because the Go client of
// zishang520/socket.io (v3.0.6) races with itself: Socket.Connect can send
// CONNECT twice, and Manager.Open can miss its own "open" event, so some
// connections fail on a fast loopback. Compatibility with the official
// JavaScript client is tested separately (test/compat).
package siotest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Options configure Dial.
type Options struct {
	Auth   map[string]any // CONNECT payload (socket.io-client's `auth`)
	Query  url.Values     // handshake query parameters
	Header http.Header    // handshake request headers
	// Namespace is the namespace to join, e.g. "/admin" (default "/").
	Namespace string
	// Timeout bounds the handshake (default 5s).
	Timeout time.Duration
}

// ConnectError is the server's refusal of the namespace CONNECT.
type ConnectError struct {
	Message string
	Data    json.RawMessage
}

func (e *ConnectError) Error() string { return "connect_error: " + e.Message }

// Event is a server → client event.
type Event struct {
	Name string
	Args []json.RawMessage
}

// Map decodes the event's first argument as an object.
func (e Event) Map() map[string]any {
	var m map[string]any
	if len(e.Args) > 0 {
		_ = json.Unmarshal(e.Args[0], &m)
	}
	return m
}

// Client is one Socket.IO connection to one namespace (Options.Namespace,
// default "/"). Its methods are safe for concurrent use.
type Client struct {
	ws  *websocket.Conn
	sid string // Socket.IO socket id
	nsp string // "" for "/", else the namespace and a comma, e.g. "/admin,"

	wmu    sync.Mutex
	mu     sync.Mutex
	nextID uint64
	acks   map[uint64]chan ack
	events []Event
	seen   int // events received so far, buffered or not
	wake   chan struct{}
	done   chan struct{}
	err    error // why the read loop ended
}

// Dial connects to a server's /socket.io/ endpoint (rawURL is http://host:port)
// over WebSocket and joins Options.Namespace (default "/").
func Dial(ctx context.Context, rawURL string, o Options) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path = "/socket.io/"
	q := url.Values{}
	for k, v := range o.Query {
		q[k] = v
	}
	q.Set("EIO", "4")
	q.Set("transport", "websocket")
	u.RawQuery = q.Encode()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, u.String(), o.Header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("siotest: dial %s: %w (HTTP %d)", u, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("siotest: dial %s: %w", u, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		ws.SetReadDeadline(dl)
	}
	c := &Client{ws: ws, nsp: nspPrefix(o.Namespace), acks: map[uint64]chan ack{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	// Engine.IO open packet.
	_, msg, err := ws.ReadMessage()
	if err != nil || len(msg) == 0 || msg[0] != '0' {
		ws.Close()
		return nil, fmt.Errorf("siotest: no open packet: %q %v", msg, err)
	}
	auth := []byte{}
	if o.Auth != nil {
		if auth, err = json.Marshal(o.Auth); err != nil {
			ws.Close()
			return nil, err
		}
	}
	if err := c.write("40" + c.nsp + string(auth)); err != nil {
		ws.Close()
		return nil, err
	}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, fmt.Errorf("siotest: waiting for CONNECT: %w", err)
		}
		s := c.stripNsp(string(msg))
		switch {
		case s == "2":
			c.write("3")
			continue
		case strings.HasPrefix(s, "42"):
			// The namespace may emit from its connection handler, which
			// the client sees right after CONNECT; keep it.
			c.handle(s)
			continue
		case strings.HasPrefix(s, "40"):
			var ok struct {
				SID string `json:"sid"`
			}
			if err := json.Unmarshal([]byte(s[2:]), &ok); err != nil || ok.SID == "" {
				ws.Close()
				return nil, fmt.Errorf("siotest: bad CONNECT answer %q", s)
			}
			c.sid = ok.SID
		case strings.HasPrefix(s, "44"):
			ws.Close()
			var ce ConnectError
			if err := json.Unmarshal([]byte(s[2:]), &struct {
				Message *string          `json:"message"`
				Data    *json.RawMessage `json:"data"`
			}{&ce.Message, &ce.Data}); err != nil {
				return nil, fmt.Errorf("siotest: bad CONNECT_ERROR %q", s)
			}
			return nil, &ce
		default:
			ws.Close()
			return nil, fmt.Errorf("siotest: unexpected frame before CONNECT: %q", s)
		}
		break
	}
	ws.SetReadDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

// ID returns the socket id the server assigned (the connId).
func (c *Client) ID() string { return c.sid }

func (c *Client) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, []byte(s))
}

// WriteRaw sends one raw Engine.IO frame, e.g. "42[\"x\"]".
func (c *Client) WriteRaw(s string) error { return c.write(s) }

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		c.handle(string(msg))
	}
}

// nspPrefix is how a namespace appears in a packet: "/admin," (none for
// "/").
func nspPrefix(nsp string) string {
	if nsp == "" || nsp == "/" {
		return ""
	}
	if !strings.HasPrefix(nsp, "/") {
		nsp = "/" + nsp
	}
	return nsp + ","
}

// stripNsp removes the client's namespace from a Socket.IO packet
// "4<type><nsp>,...", so the rest is parsed as in the default namespace.
func (c *Client) stripNsp(s string) string {
	if c.nsp != "" && len(s) >= 2 && s[0] == '4' && strings.HasPrefix(s[2:], c.nsp) {
		return s[:2] + s[2+len(c.nsp):]
	}
	return s
}

func (c *Client) handle(s string) {
	s = c.stripNsp(s)
	switch {
	case s == "2":
		c.write("3")
	case strings.HasPrefix(s, "42"):
		args, id, err := parseArgs(s[2:])
		if err != nil || len(args) == 0 {
			return
		}
		var name string
		_ = json.Unmarshal(args[0], &name)
		_ = id // server → client events with acks are not used by the protocol
		c.mu.Lock()
		c.events = append(c.events, Event{Name: name, Args: args[1:]})
		c.seen++
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	case strings.HasPrefix(s, "43"):
		args, id, err := parseArgs(s[2:])
		if err != nil || id < 0 {
			return
		}
		c.mu.Lock()
		ch := c.acks[uint64(id)]
		delete(c.acks, uint64(id))
		seen := c.seen
		c.mu.Unlock()
		if ch != nil {
			ch <- ack{args, seen}
		}
	case strings.HasPrefix(s, "41"):
		c.ws.Close()
	}
}

// parseArgs splits "<id>[...]" into the JSON array's elements and the id
// (-1 when absent).
func parseArgs(s string) ([]json.RawMessage, int64, error) {
	i := strings.IndexByte(s, '[')
	if i < 0 {
		return nil, -1, errors.New("no array")
	}
	id := int64(-1)
	if i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return nil, -1, err
		}
		id = n
	}
	var args []json.RawMessage
	if err := json.Unmarshal([]byte(s[i:]), &args); err != nil {
		return nil, -1, err
	}
	return args, id, nil
}

// Emit sends an event without asking for an acknowledgement.
func (c *Client) Emit(event string, args ...any) error {
	b, err := json.Marshal(append([]any{event}, args...))
	if err != nil {
		return err
	}
	return c.write("42" + c.nsp + string(b))
}

// ack is an acknowledgement with the number of events received before it.
type ack struct {
	args []json.RawMessage
	seen int
}

// Call sends an event asking for an acknowledgement and returns the ack's
// arguments. It fails when ctx ends first or the connection closes.
func (c *Client) Call(ctx context.Context, event string, args ...any) ([]json.RawMessage, error) {
	a, _, err := c.CallSeen(ctx, event, args...)
	return a, err
}

// CallSeen is Call that also returns how many events the client had
// received when the ack arrived: with the events in arrival order (Events)
// it places the ack among them.
func (c *Client) CallSeen(ctx context.Context, event string, args ...any) ([]json.RawMessage, int, error) {
	b, err := json.Marshal(append([]any{event}, args...))
	if err != nil {
		return nil, 0, err
	}
	ch := make(chan ack, 1)
	c.mu.Lock()
	id := c.nextID
	c.nextID++
	c.acks[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.acks, id)
		c.mu.Unlock()
	}()
	if err := c.write("42" + c.nsp + strconv.FormatUint(id, 10) + string(b)); err != nil {
		return nil, 0, err
	}
	select {
	case a := <-ch:
		return a.args, a.seen, nil
	case <-c.done:
		return nil, 0, fmt.Errorf("siotest: %s: connection closed: %v", event, c.Err())
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("siotest: %s: no ack: %w", event, ctx.Err())
	}
}

// CallMap is Call whose ack has exactly one argument, an object.
func (c *Client) CallMap(ctx context.Context, event string, args ...any) (map[string]any, error) {
	a, err := c.Call(ctx, event, args...)
	if err != nil {
		return nil, err
	}
	if len(a) != 1 {
		return nil, fmt.Errorf("siotest: %s: ack has %d arguments, want 1", event, len(a))
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(a[0]))
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, fmt.Errorf("siotest: %s: ack %s is not an object", event, a[0])
	}
	return m, nil
}

// WaitEvent waits for a received event named name whose decoded first
// argument satisfies match (nil matches all), removes it from the buffer
// and returns it. Events received before it stay buffered.
func (c *Client) WaitEvent(ctx context.Context, name string, match func(map[string]any) bool) (map[string]any, error) {
	e, err := c.WaitEventArgs(ctx, name, func(e Event) bool { return match == nil || match(e.Map()) })
	if err != nil {
		return nil, err
	}
	return e.Map(), nil
}

// WaitEventArgs is WaitEvent for events whose arguments are not one
// object: match sees every argument.
func (c *Client) WaitEventArgs(ctx context.Context, name string, match func(Event) bool) (Event, error) {
	for {
		c.mu.Lock()
		for i, e := range c.events {
			if e.Name == name && (match == nil || match(e)) {
				c.events = append(c.events[:i:i], c.events[i+1:]...)
				c.mu.Unlock()
				return e, nil
			}
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("siotest: no matching %s event: %w (buffered: %s)", name, ctx.Err(), c.describe())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Events returns and clears the buffered events.
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.events
	c.events = nil
	return e
}

func (c *Client) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, e := range c.events {
		fmt.Fprintf(&b, "%s%s ", e.Name, e.Args)
	}
	return b.String()
}

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (nil while open).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close leaves the namespace ("41") and closes the connection, as
// socket.disconnect() does. Idempotent.
func (c *Client) Close() error {
	_ = c.write("41" + c.nsp)
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	err := c.ws.Close()
	<-c.done
	return err
}

// Drop closes the TCP connection without a goodbye, as a crashed client or
// a lost network does.
func (c *Client) Drop() {
	c.ws.UnderlyingConn().Close()
	<-c.done
}
