package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/realtime-message/presence"
)

// conn is the binding's state of one socket. Its events run one at a time
// on the socket's queue; disconnect and Shutdown run on other goroutines,
// so the presence room is guarded by mu, which a join holds across its
// service call: a cleanup waits for a join in flight and then removes what
// it wrote, and a join that starts after the cleanup is refused.
type conn struct {
	b        *Binding
	sock     *socket.Socket
	id       string // connId: the Socket.IO socket id
	authUser string // from the Authenticator; "" = unbound

	heartbeat, metadata, presence *bucket

	released atomic.Bool // disconnect seen (it may fire twice)

	// The socket's queue of admitted events (queue.go).
	qmu          sync.Mutex
	queue        []*queued
	draining     bool          // the worker is running the queue
	wake         chan struct{} // tells the worker the queue has events
	gone         chan struct{} // closed at disconnect: the worker ends
	refused      int           // refusals since refusedSince
	refusedSince time.Time     // start of the one-second refusal window

	mu     sync.Mutex
	closed bool             // left for good: disconnect or Shutdown
	room   string           // the presence room joined, "" = none
	ref    presence.ConnRef // room and conn with their keys, built once at join
	user   string           // the user it joined as
	// maybeRoom is a room a join failed ambiguously for (timeout, backend
	// error): the conn may be in it, so cleanup leaves it too.
	maybeRoom string

	// What the binding needs to join the socket again by itself when Redis
	// lost its conn (heal.go).
	state     map[string]json.RawMessage // joined with, plus the patches of acknowledged heartbeats
	patches   []json.RawMessage          // acknowledged patches not yet folded into state (heal.go)
	patchLen  int                        // their bytes
	joinEpoch int64                      // the epoch the socket's own latest join returned
	epoch     int64                      // the epoch stored as far as the binding knows
	healed    bool                       // the binding re-joined it since its own latest join
}

// actor returns the acting user for metadata and locks: the authenticated
// user, else the user the socket joined presence with, else "".
func (c *conn) actor() string {
	if c.authUser != "" {
		return c.authUser
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

var (
	errWrongRoom    = errors.New("Socket already joined a different presence room")
	errUserMismatch = errors.New("userId does not match the authenticated user")
	errNotJoined    = errors.New("Socket has not joined a presence room")
	errShuttingDown = errors.New("server shutting down")
	errDisconnected = errors.New("socket disconnected")
)

// Entry, join and heartbeat acks of docs/PROTOCOL.md.
type (
	okAck struct {
		OK bool `json:"ok"`
	}
	joinSelf struct {
		ConnID string `json:"connId"`
		Epoch  int64  `json:"epoch"`
	}
	joinAck struct {
		OK       bool             `json:"ok"`
		Snapshot []presence.Entry `json:"snapshot"`
		Self     joinSelf         `json:"self"`
		Seq      int64            `json:"seq"` // the snapshot's room sequence number (sync.go)
	}
	heartbeatAck struct {
		OK      bool  `json:"ok"`
		Changed bool  `json:"changed"`
		Epoch   int64 `json:"epoch"`
	}
	// errorAck is every failure: {ok:false, error, code, retryable?}.
	errorAck struct {
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
		Code      string `json:"code"`
		Retryable bool   `json:"retryable,omitempty"`
		// Current is the record a METADATA_CONFLICT lost to, as the
		// refused mutation read it (presence.ConflictError).
		Current *presence.MetadataResponse `json:"current,omitempty"`
	}
)

// Error codes of failure acks. The METADATA_* codes are the original
// server's; the others are this server's extension (the original sent
// presence failures with no code). Retryable ones are marked
// retryable:true in the ack.
const (
	CodeConflict = "METADATA_CONFLICT"
	CodeLock     = "METADATA_LOCK"
	CodeInvalid  = "METADATA_INVALID"

	CodePresenceInvalid    = "PRESENCE_INVALID"     // the payload or an argument is invalid; nothing was written
	CodePresenceNotJoined  = "PRESENCE_NOT_JOINED"  // the socket has no presence (never joined, or left): join again
	CodePresenceStaleEpoch = "PRESENCE_STALE_EPOCH" // a newer connection owns this connection id
	CodePresenceConflict   = "PRESENCE_CONFLICT"    // joined another room already, or userId is not the authenticated user

	CodeRateLimited  = "RATE_LIMITED"  // the socket is over its rate limit (retryable)
	CodeOverloaded   = "OVERLOADED"    // the event was not run: it waited past the event budget, or too many are pending (retryable)
	CodeTimeout      = "TIMEOUT"       // Redis did not answer in time; the event may or may not have taken effect (retryable)
	CodeUnavailable  = "UNAVAILABLE"   // Redis failed; the event may or may not have taken effect (retryable)
	CodeShuttingDown = "SHUTTING_DOWN" // this server is stopping; reconnect (retryable)
	CodeDisconnected = "DISCONNECTED"  // the socket disconnected while the event waited

	// CodeNotReplicated: with WaitReplicas set, the metadata write ran on
	// the Redis master but fewer replicas than required confirmed it in
	// time, so a failover may lose it. Not retryable as is: read the
	// channel first (the write may well be there).
	CodeNotReplicated = "METADATA_NOT_REPLICATED"
)

func (c *conn) join(ctx context.Context, payload any) (any, error) {
	req, err := parseJoin(payload)
	if err != nil {
		return nil, err
	}
	if c.authUser != "" && req.UserID != c.authUser {
		return nil, errUserMismatch
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errDisconnected
	}
	if c.b.closing.Load() {
		return nil, errShuttingDown
	}
	if c.room != "" && c.room != req.RoomID {
		return nil, errWrongRoom
	}
	fresh := c.room == ""
	// Enter the room first, so the socket gets its own join event and
	// every later one.
	if fresh {
		if err := c.b.enterRoom(ctx, c, req.RoomID); err != nil {
			return nil, err
		}
	}
	res, err := c.b.svc.Join(ctx, req.RoomID, c.id, req.UserID, req.State)
	if err != nil {
		if fresh {
			c.b.exitRoom(c, req.RoomID)
			if !errors.Is(err, presence.ErrInvalidArgument) {
				c.maybeRoom = req.RoomID
			}
		}
		return nil, err
	}
	c.room, c.user = req.RoomID, req.UserID
	c.joinEpoch, c.epoch, c.healed = res.Epoch, res.Epoch, false
	c.state, c.patches, c.patchLen = decodeState(req.State), nil, 0
	if c.ref, err = c.b.svc.ConnRef(c.room, c.id); err != nil {
		// Unreachable: the join validated both ids.
		c.ref = presence.ConnRef{}
	}
	if c.maybeRoom == req.RoomID {
		c.maybeRoom = ""
	}
	snap := res.Snapshot
	if snap == nil {
		snap = []presence.Entry{}
	}
	return joinAck{OK: true, Snapshot: snap, Self: joinSelf{ConnID: c.id, Epoch: res.Epoch}, Seq: res.Seq}, nil
}

func (c *conn) heartbeatEvent(ctx context.Context, payload any) (any, error) {
	req, err := parseHeartbeat(payload)
	if err != nil {
		return nil, err
	}
	return c.heartbeatReq(ctx, req)
}

func (c *conn) heartbeatReq(ctx context.Context, req heartbeatReq) (any, error) {
	c.mu.Lock()
	room, ref := c.room, c.ref
	if req.Epoch != nil && c.healed && *req.Epoch >= c.joinEpoch && *req.Epoch < c.epoch {
		// The client has not heard yet of the epoch the binding's own rejoin
		// gave it; what it sent was this socket's, so it is no older
		// connection to fence off.
		e := c.epoch
		req.Epoch = &e
	}
	c.mu.Unlock()
	if room == "" {
		return nil, errNotJoined
	}
	p := presence.HeartbeatParams{Epoch: req.Epoch, PatchState: req.PatchState}
	call := func() (presence.HeartbeatResult, error) {
		if ref != (presence.ConnRef{}) {
			return c.b.svc.HeartbeatConn(ctx, ref, p)
		}
		return c.b.svc.Heartbeat(ctx, room, c.id, p)
	}
	res, err := call()
	if errors.Is(err, presence.ErrStaleEpoch) && p.Epoch != nil {
		// A rejoin of the binding's own may have raced this heartbeat;
		// anything else stale stays refused.
		c.mu.Lock()
		e, again := c.epoch, c.healed && c.room == room && *p.Epoch >= c.joinEpoch && *p.Epoch < c.epoch
		c.mu.Unlock()
		if again {
			p.Epoch = &e
			res, err = call()
		}
	}
	if errors.Is(err, presence.ErrConnNotFound) {
		// The socket is joined and alive, so Redis lost its conn (data loss,
		// or reaped while the socket was silent past the TTL): put it back
		// rather than make every client notice.
		return c.rejoin(ctx, room, req.PatchState)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.room == room {
		c.epoch = max(c.epoch, res.Epoch)
		c.remember(req.PatchState)
	}
	c.mu.Unlock()
	return heartbeatAck{OK: true, Changed: res.Changed, Epoch: res.Epoch}, nil
}

func (c *conn) leave(ctx context.Context, _ any) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.room == "" {
		return okAck{OK: true}, nil
	}
	if err := c.b.svc.Leave(ctx, c.room, c.id); err != nil {
		return nil, err
	}
	c.b.exitRoom(c, c.room)
	c.room, c.user, c.ref, c.state, c.patches = "", "", presence.ConnRef{}, nil, nil
	return okAck{OK: true}, nil
}

// close leaves the socket's presence room for good (disconnect, Shutdown)
// and reports whether that worked. Later joins are refused.
func (c *conn) close(ctx context.Context) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	ok := true
	for _, room := range []string{c.room, c.maybeRoom} {
		if room == "" {
			continue
		}
		if err := c.b.svc.Leave(ctx, room, c.id); err != nil {
			ok = false
			c.b.log.Warn("socketio: leave on disconnect failed; the reaper removes the connection after its TTL",
				"room", room, "connId", c.id, "err", err)
		}
	}
	if c.room != "" {
		c.b.exitRoom(c, c.room)
	}
	c.room, c.maybeRoom, c.ref, c.state, c.patches = "", "", presence.ConnRef{}, nil, nil
	return ok
}

// failure turns an error into the ack {ok:false, error, code, retryable?}
// and the result for Hooks.Event. Every failure carries a code, so clients
// never match on message text; metadata refusals keep the original
// server's METADATA_* codes. Failures of the server or Redis are logged
// through the binding's aggregating logger, one line per kind per
// interval, so an outage cannot flood the log.
func (b *Binding) failure(c *conn, event string, err error) (errorAck, string) {
	meta := strings.HasPrefix(event, "metadata:")
	a := errorAck{Error: strings.TrimPrefix(err.Error(), "presence: ")}
	result := ResultRefused
	pick := func(presenceCode, metaCode string) string {
		if meta {
			return metaCode
		}
		return presenceCode
	}
	switch {
	case errors.Is(err, errRateLimited):
		a.Code, a.Retryable, result = CodeRateLimited, true, ResultRateLimited
	case errors.Is(err, errOverloaded), errors.Is(err, errQueueFull):
		a.Code, a.Retryable, result = CodeOverloaded, true, ResultOverloaded
	case errors.Is(err, errPayload), errors.Is(err, presence.ErrInvalidArgument):
		a.Code, result = pick(CodePresenceInvalid, CodeInvalid), ResultInvalid
	case errors.Is(err, presence.ErrConflict):
		a.Code = pick(CodePresenceConflict, CodeConflict)
		if ce := (*presence.ConflictError)(nil); meta && errors.As(err, &ce) {
			a.Current = ce.Current
		}
	case errors.Is(err, presence.ErrLocked), errors.Is(err, errNoActor):
		a.Code = CodeLock
	case errors.Is(err, presence.ErrStaleEpoch):
		a.Code = CodePresenceStaleEpoch
	case errors.Is(err, presence.ErrConnNotFound), errors.Is(err, errNotJoined):
		a.Code = CodePresenceNotJoined
	case errors.Is(err, errWrongRoom), errors.Is(err, errUserMismatch):
		a.Code = CodePresenceConflict
	case errors.Is(err, errDisconnected):
		a.Code = CodeDisconnected
	case errors.Is(err, errShuttingDown), errors.Is(err, presence.ErrClosed):
		a.Error, a.Code, a.Retryable, result = errShuttingDown.Error(), CodeShuttingDown, true, ResultError
	case errors.Is(err, presence.ErrNotReplicated):
		b.failures.note("write not replicated", event, err)
		a.Error, a.Code, result = "written on the master but not confirmed by enough replicas: it may be lost on a failover; read the channel before retrying", CodeNotReplicated, ResultError
	case errors.Is(err, context.DeadlineExceeded):
		b.failures.note("event timed out", event, err)
		a.Error, a.Code, a.Retryable, result = "timeout", CodeTimeout, true, ResultError
	default:
		b.failures.note("event failed", event, err)
		a.Error, a.Code, a.Retryable, result = "service unavailable", CodeUnavailable, true, ResultError
	}
	return a, result
}
