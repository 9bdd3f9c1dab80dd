// Package socketio serves a presence.Service to Socket.IO v4 clients: the
// wire protocol of docs/PROTOCOL.md, spoken by the official socket.io-client 4.x
// that the existing browser and Node SDKs use.
//
// Bind takes the place of the original Node.js server's setup call: one call
// wires every client event (presence:join, presence:heartbeat,
// presence:leave, presence:sync, metadata:*) with validation and acknowledgements, the
// bridge that forwards presence:event and metadata:event from Redis
// pub/sub to the local sockets of each room (so clients on every node see
// every change), and the cleanup that leaves a socket's presence room when
// it disconnects.
//
// Every failure acks {ok:false, error, code} (and retryable:true when the
// same event may simply be sent again): metadata refusals keep the original
// server's METADATA_CONFLICT, METADATA_LOCK and METADATA_INVALID; the
// PRESENCE_*, RATE_LIMITED, OVERLOADED, TIMEOUT, UNAVAILABLE and
// SHUTTING_DOWN codes are this server's extension (docs/PROTOCOL.md lists
// them). Payloads are validated here and by the service before anything
// reaches Redis. The acting user for locks and addUserId is the socket's
// authenticated user, else the user it joined presence with.
//
// Each socket's work is bounded: events are rate limited per class before
// they are queued, at most Options.MaxQueuedEvents wait per socket, an
// event that waited longer than Options.EventBudget is answered OVERLOADED
// without running, heartbeats queued together run as one call, and a
// socket far over its limits is disconnected. Outgoing frames of a
// WebSocket are written in batches and bounded per connection (see
// ServerOptions).
//
// The Socket.IO server is github.com/zishang520/socket.io/servers/socket/v3,
// the maintained Go implementation of the Socket.IO v4 protocol (Engine.IO
// v4; WebSocket and long-polling).
//
//	io := socket.NewServer(nil, socketio.ServerOptions(0))
//	b, err := socketio.Bind(ctx, io, svc, socketio.Options{})
//	mux.Handle("/socket.io/", io.ServeHandler(nil))
//	...
//	b.Shutdown(ctx) // on SIGTERM: every local socket leaves, so other nodes see it
package socketio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/servers/engine/v3/transports"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/realtime-message/presence"
)

// Event names of docs/PROTOCOL.md.
const (
	EventJoin      = "presence:join"
	EventHeartbeat = "presence:heartbeat"
	EventLeave     = "presence:leave"
	EventSync      = "presence:sync"  // a fresh snapshot of the socket's room, with its seq
	EventPresence  = "presence:event" // server → client

	EventSetChannel    = "metadata:setChannel"
	EventUpdateChannel = "metadata:updateChannel"
	EventRemoveChannel = "metadata:removeChannel"
	EventGetChannel    = "metadata:getChannel"
	EventAcquireLock   = "metadata:acquireLock"
	EventRenewLock     = "metadata:renewLock"
	EventReleaseLock   = "metadata:releaseLock"
	EventGetLock       = "metadata:getLock"
	EventMetadata      = "metadata:event" // server → client
)

// DefaultMaxMessageBytes bounds one Socket.IO message by default: 1 MB, as
// the Node.js socket.io server does. A larger message closes the
// connection (the transport refuses it before it is parsed).
const DefaultMaxMessageBytes = 1_000_000

// ServerOptions returns Socket.IO server options fit for this protocol:
// WebSocket and long-polling (with upgrade), and messages bounded by
// maxMessageBytes (DefaultMaxMessageBytes when ≤ 0). Its WebSocket
// transport is this package's (see WebSocketTransport) with the default
// WebSocketOptions: broadcast frames are shared by their recipients and
// each connection's frames are coalesced into one write; a connection
// whose unwritten frames exceed DefaultMaxPendingBytes is closed.
func ServerOptions(maxMessageBytes int64) *socket.ServerOptions {
	return ServerOptionsWith(maxMessageBytes, WebSocketOptions{})
}

// ServerOptionsWith is ServerOptions with the WebSocket transport's
// options.
func ServerOptionsWith(maxMessageBytes int64, ws WebSocketOptions) *socket.ServerOptions {
	if maxMessageBytes <= 0 {
		maxMessageBytes = DefaultMaxMessageBytes
	}
	o := socket.DefaultServerOptions()
	o.SetMaxHttpBufferSize(maxMessageBytes)
	o.SetServeClient(false)
	o.SetTransports(types.NewSet[transports.TransportCtor](&transports.PollingBuilder{}, WebSocketTransport(ws)))
	return o
}

// Options configure Bind. The zero value gives the documented defaults.
type Options struct {
	// Authenticator identifies sockets at the handshake. Default nil: every
	// socket is admitted and presence:join's userId is trusted, as the
	// original server did.
	Authenticator Authenticator

	// CallTimeout bounds the service calls (Redis round trips) one client
	// event makes, and the Authenticator (default 5s), so a slow or dead
	// Redis costs the client an error ack, never a socket that hangs.
	CallTimeout time.Duration

	// HeartbeatRate limits presence:heartbeat per socket (default 100/s,
	// bursts of 200: SDKs heartbeat every few seconds, load generators and
	// cursor-sharing apps up to 50/s).
	HeartbeatRate Rate
	// MetadataRate limits the metadata:* events together per socket
	// (default 50/s, bursts of 100).
	MetadataRate Rate
	// PresenceRate limits presence:join, presence:leave and presence:sync together per
	// socket (default 10/s, bursts of 20).
	PresenceRate Rate

	// EventBudget is how long an admitted event may wait for its socket's
	// earlier events before it is answered OVERLOADED without running
	// (default 1s, below the ack timeouts clients typically use, so a
	// client hears "overloaded" rather than nothing; negative: no budget).
	EventBudget time.Duration
	// MaxQueuedEvents bounds the events admitted but not yet run per
	// socket (default 256, above every default burst); past it an event is
	// answered OVERLOADED at once.
	MaxQueuedEvents int
	// DisconnectAfterRefused disconnects a socket that had more than this
	// many events refused (rate limited or queue full) within one second
	// (default 1000; negative: never).
	DisconnectAfterRefused int

	// MaxWatchedUsers bounds the users one socket watches with
	// presence:watchUser (default DefaultMaxWatchedUsers).
	MaxWatchedUsers int

	// Logger receives the binding's logs (default slog.Default()).
	Logger *slog.Logger
	// FailureLogInterval: failures of the server or Redis are logged once
	// per kind per interval, with their count (default 10s).
	FailureLogInterval time.Duration

	// HealInterval is how often the binding checks that Redis still has
	// this node's presence (a sentinel key) and that its event
	// subscriptions did not reconnect; after either, it joins every local
	// socket again (default: the service's ReaperInterval, or 3s when the
	// reaper is off; negative: never). A heartbeat that finds its socket's
	// conn gone rejoins it regardless.
	HealInterval time.Duration

	// Hooks observe the binding for metrics; nil funcs are skipped.
	Hooks Hooks
}

// Hooks observe a Binding. They must be fast and safe for concurrent use.
type Hooks struct {
	// Event is called once per client event handled, with its result:
	// ResultOK, ResultInvalid, ResultRefused, ResultRateLimited,
	// ResultOverloaded or ResultError. took runs from the event's
	// admission, so it includes the wait behind the socket's earlier events.
	Event func(event, result string, took time.Duration)
	// Coalesced is called when n queued heartbeats of one socket ran as
	// one service call.
	Coalesced func(n int)
	// FloodDisconnect is called when a socket is disconnected for sending
	// far over its rate limits.
	FloodDisconnect func()
}

// Results passed to Hooks.Event.
const (
	ResultOK          = "ok"
	ResultInvalid     = "invalid"      // payload or argument validation failed
	ResultRefused     = "refused"      // stale epoch, unknown conn, conflict, lock, wrong room or user
	ResultRateLimited = "rate_limited" // the socket's rate limit
	ResultOverloaded  = "overloaded"   // shed: waited past the event budget, or the socket's queue was full
	ResultError       = "error"        // backend failure, timeout, shutdown
)

func (o Options) withDefaults() Options {
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	o.HeartbeatRate = o.HeartbeatRate.orDefault(Rate{PerSecond: 100, Burst: 200})
	o.MetadataRate = o.MetadataRate.orDefault(Rate{PerSecond: 50, Burst: 100})
	o.PresenceRate = o.PresenceRate.orDefault(Rate{PerSecond: 10, Burst: 20})
	if o.EventBudget == 0 {
		o.EventBudget = time.Second
	}
	if o.MaxQueuedEvents <= 0 {
		o.MaxQueuedEvents = 256
	}
	if o.DisconnectAfterRefused == 0 {
		o.DisconnectAfterRefused = 1000
	}
	if o.MaxWatchedUsers <= 0 {
		o.MaxWatchedUsers = DefaultMaxWatchedUsers
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.FailureLogInterval <= 0 {
		o.FailureLogInterval = 10 * time.Second
	}
	return o
}

// Identity is what the Authenticator established for a socket. Bind stores
// it as the socket's Data (socket.io's socket.data), so it is visible to
// FetchSockets; do not replace a bound socket's Data.
type Identity struct {
	UserID string `json:"userId,omitempty"`
}

// Binding is a presence.Service bound to a Socket.IO server. It is safe
// for concurrent use.
type Binding struct {
	svc  *presence.Service
	nsp  socket.Namespace
	opts Options
	log  *slog.Logger

	ctx    context.Context // canceled when Shutdown ends
	cancel context.CancelFunc

	rmu   sync.RWMutex
	rooms map[string]map[*conn]struct{} // presence room → its local sockets (broadcast.go)
	watch *watchers                     // user → local sockets watching it (users.go)

	mu       sync.Mutex
	conns    map[socket.SocketId]*conn
	stopped  bool                    // Shutdown finished waiting; no cleanup may start
	cleanups map[*conn]chan struct{} // disconnect cleanups in flight, closed when done
	closing  atomic.Bool             // Shutdown started: refuse new sockets and events

	// feed receives the events of the rooms local sockets are in and of
	// the users they watch (feed.go).
	feed      *presence.Feed
	connected atomic.Int64
	gates     sync.Map // engine.Socket → *connectGate (see connectgate.go)

	failures *failureLog
	logDone  chan struct{} // the failure log's flusher ended

	node      string        // this binding's sentinel id (heal.go)
	watchDone chan struct{} // the sentinel watcher ended
	healed    atomic.Int64  // sockets re-joined by the binding itself
	maxState  int           // the service's MaxStateBytes

	shutdownOnce sync.Once
	shutdownErr  error
}

// Bind wires svc to io's default namespace "/": every event of docs/PROTOCOL.md,
// the pub/sub bridge, the Authenticator and disconnect cleanup. Call it
// before the server accepts connections. The caller keeps ownership of io
// and svc; on shutdown call Shutdown first, then close io, the HTTP server,
// and svc (see cmd/presence-server).
func Bind(ctx context.Context, io *socket.Server, svc *presence.Service, opts Options) (*Binding, error) {
	if io == nil || svc == nil {
		return nil, errors.New("socketio: Bind: nil server or service")
	}
	opts = opts.withDefaults()
	b := &Binding{
		svc:      svc,
		nsp:      io.Sockets(),
		opts:     opts,
		log:      opts.Logger,
		conns:    map[socket.SocketId]*conn{},
		rooms:    map[string]map[*conn]struct{}{},
		cleanups: map[*conn]chan struct{}{},
	}
	b.watch = newWatchers(func(u string) { b.feed.UnfollowUser(u) })
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.failures = newFailureLog(b.log, b.opts.FailureLogInterval)
	b.logDone = make(chan struct{})
	go func() {
		defer close(b.logDone)
		b.failures.run(b.ctx)
	}()

	if err := b.openFeed(ctx); err != nil {
		b.cancel()
		return nil, err
	}

	b.maxState = svc.Config().MaxStateBytes
	if b.opts.HealInterval == 0 {
		b.opts.HealInterval = svc.Config().ReaperInterval
		if b.opts.HealInterval <= 0 {
			b.opts.HealInterval = 3 * time.Second
		}
	}
	b.startWatch(ctx)

	b.installGates(io)
	b.nsp.Use(b.admit)
	if err := b.nsp.On("connection", func(args ...any) {
		if s, ok := first[*socket.Socket](args); ok {
			b.onConnection(s)
		}
	}); err != nil {
		b.closeSubs()
		b.cancel()
		return nil, fmt.Errorf("socketio: register connection handler: %w", err)
	}
	return b, nil
}

// Connected returns how many sockets are connected to this node.
func (b *Binding) Connected() int { return int(b.connected.Load()) }

// ShuttingDown reports whether Shutdown has started.
func (b *Binding) ShuttingDown() bool { return b.closing.Load() }

// Service returns the bound service.
func (b *Binding) Service() *presence.Service { return b.svc }

func first[T any](args []any) (T, bool) {
	var zero T
	if len(args) == 0 {
		return zero, false
	}
	v, ok := args[0].(T)
	return v, ok
}

// admit is the namespace middleware: it refuses sockets during shutdown
// and runs the Authenticator.
func (b *Binding) admit(s *socket.Socket, next func(*socket.ExtendedError)) {
	if b.closing.Load() {
		b.openGate(s)
		next(socket.NewExtendedError("server shutting down", nil))
		return
	}
	id := &Identity{}
	if a := b.opts.Authenticator; a != nil {
		ctx, cancel := context.WithTimeout(b.ctx, b.opts.CallTimeout)
		user, err := a.Authenticate(ctx, handshakeOf(s))
		cancel()
		if err != nil {
			b.log.Info("socketio: connection refused by authenticator", "sid", s.Id(), "err", err)
			b.openGate(s)
			next(socket.NewExtendedError("unauthorized", nil))
			return
		}
		id.UserID = user
	}
	s.SetData(id)
	next(nil)
}

func handshakeOf(s *socket.Socket) Handshake {
	h := s.Handshake()
	out := Handshake{Query: url.Values{}, Header: http.Header{}, Auth: h.Auth, RemoteAddr: h.Address}
	for k, v := range h.Query {
		if vs, ok := v.([]string); ok {
			out.Query[k] = vs
		}
	}
	for k, v := range h.Headers {
		if vs, ok := v.([]string); ok {
			out.Header[http.CanonicalHeaderKey(k)] = vs
		}
	}
	if out.Auth == nil {
		out.Auth = map[string]any{}
	}
	return out
}

// onConnection registers a socket's handlers.
func (b *Binding) onConnection(s *socket.Socket) {
	// The socket is recorded by now; its first events were held until here
	// (but run after the handlers below are registered: they are queued on
	// the socket, behind this handler).
	defer b.openGate(s)
	now := time.Now()
	c := &conn{
		b:         b,
		sock:      s,
		id:        string(s.Id()),
		heartbeat: newBucket(b.opts.HeartbeatRate, now),
		metadata:  newBucket(b.opts.MetadataRate, now),
		presence:  newBucket(b.opts.PresenceRate, now),
		wake:      make(chan struct{}, 1),
		gone:      make(chan struct{}),
	}
	if id, ok := s.Data().(*Identity); ok {
		c.authUser = id.UserID
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		s.Disconnect(true)
		return
	}
	b.conns[s.Id()] = c
	b.mu.Unlock()
	b.connected.Add(1)
	go c.work()

	b.handle(c, EventJoin, c.presence, c.join)
	b.handle(c, EventHeartbeat, c.heartbeat, c.heartbeatEvent)
	b.handle(c, EventLeave, c.presence, c.leave)
	b.handle(c, EventSync, c.presence, c.sync)
	b.bindMetadata(c)
	b.bindUsers(c)
	_ = s.On("disconnect", func(args ...any) {
		b.logDrop(c, args)
		b.release(c)
	})
	if s.Disconnected() {
		// Closed while the handlers were registered: "disconnect" may have
		// fired before its handler existed.
		b.release(c)
	}
}

// handlerFunc handles one event's payload and returns the success ack.
type handlerFunc func(ctx context.Context, payload any) (any, error)

var errRateLimited = errors.New("rate limit exceeded")

// release runs once per socket when it disconnects: the socket leaves its
// presence room (as presence:leave would) in the background. The library
// may fire "disconnect" twice, on another goroutine than the socket's
// events; conn.released makes the second call a no-op, and conn.mu orders
// the cleanup after an event still running.
func (b *Binding) release(c *conn) {
	if !c.released.CompareAndSwap(false, true) {
		return
	}
	close(c.gone)
	b.watch.drop(c)
	b.connected.Add(-1)
	b.mu.Lock()
	delete(b.conns, c.sock.Id())
	if b.stopped {
		b.mu.Unlock()
		return
	}
	done := make(chan struct{})
	b.cleanups[c] = done
	b.mu.Unlock()
	go func() {
		defer func() {
			b.mu.Lock()
			delete(b.cleanups, c)
			b.mu.Unlock()
			close(done)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.CallTimeout)
		defer cancel()
		c.close(ctx)
	}()
}

// Shutdown removes every local socket from presence, so other nodes see
// each leave, and stops the pub/sub bridge. From its start, new sockets are
// refused and events get an error ack. It waits for cleanups of sockets
// that disconnected meanwhile, bounded by ctx. Sockets stay connected:
// close the Socket.IO server and the HTTP server afterwards, then Flush
// and Close the service. Idempotent.
func (b *Binding) Shutdown(ctx context.Context) error {
	b.shutdownOnce.Do(func() { b.shutdownErr = b.shutdown(ctx) })
	return b.shutdownErr
}

func (b *Binding) shutdown(ctx context.Context) error {
	b.closing.Store(true)
	var failed atomic.Int64
	n := b.eachConn(64, func() bool { return false }, func(c *conn) {
		if !c.close(ctx) {
			failed.Add(1)
		}
	})

	err := b.waitCleanups(ctx)
	if b.node != "" {
		if derr := b.svc.DropSentinel(ctx, b.node); derr != nil {
			b.log.Debug("socketio: drop presence sentinel", "err", derr)
		}
	}
	b.cancel()
	<-b.watchDone
	b.closeSubs()
	<-b.logDone
	if n := failed.Load(); n > 0 {
		err = errors.Join(err, fmt.Errorf("socketio: shutdown: %d of %d sockets could not leave presence (the reaper removes them after the TTL)", failed.Load(), n))
	}
	b.log.Info("socketio: presence shut down", "sockets", n, "failed", failed.Load())
	return err
}

// eachConn runs fn for every local socket, at most parallel at a time
// (thousands of sockets must not take thousands of round trips in a row),
// until stop says so, and returns how many sockets there were.
func (b *Binding) eachConn(parallel int, stop func() bool, fn func(c *conn)) int {
	b.mu.Lock()
	conns := make([]*conn, 0, len(b.conns))
	for _, c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for _, c := range conns {
		if stop() {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(c)
		}()
	}
	wg.Wait()
	return len(conns)
}

// waitCleanups waits for the disconnect cleanups in flight, including
// those that start meanwhile, then lets no more start.
func (b *Binding) waitCleanups(ctx context.Context) error {
	for {
		b.mu.Lock()
		var done chan struct{}
		for _, ch := range b.cleanups {
			done = ch
			break
		}
		if done == nil || ctx.Err() != nil {
			b.stopped = true
			n := len(b.cleanups)
			b.mu.Unlock()
			if n > 0 {
				return fmt.Errorf("socketio: shutdown: %d disconnect cleanups still running: %w", n, ctx.Err())
			}
			return nil
		}
		b.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

func (b *Binding) closeSubs() {
	if err := b.feed.Close(); err != nil {
		b.log.Warn("socketio: close the event feed", "err", err)
	}
}
