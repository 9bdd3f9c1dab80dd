// Package adminui serves the official Socket.IO Admin UI
// (@socket.io/admin-ui, https://admin.socket.io or its ui/dist served
// anywhere) from a Go Socket.IO server: it is the server side of the UI's
// protocol, written after the Node.js package's instrument(), which does
// not run here.
//
// Instrument adds the admin namespace ("/admin") to a
// zishang520/socket.io server. An admin socket logs in with a username and
// a password checked against a bcrypt hash (as the Node.js server's basic
// auth), then with the session id it is given; it receives the server's
// stats every two seconds, its config (the features the UI may use), every
// socket of every namespace with its handshake and rooms, and live
// socket_connected, socket_disconnected, room_joined, room_left,
// event_received and event_sent events. The UI's actions — make sockets
// join or leave a room, disconnect sockets — act on this node's sockets
// unless Options.ReadOnly.
//
// It sees one node: each node of a cluster serves its own sockets, stats
// and sessions (the UI lists the nodes it hears from on its Servers page).
// Work is done for the UI only while an admin socket is connected.
package adminui

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	engine "github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/socket/v3"
)

// Modes of Options.Mode, as the Node.js package's.
const (
	// Development sends everything the UI can show: sockets, rooms, and
	// the events page (connections, room changes and every message).
	Development = "development"
	// Production sends the server stats and the aggregated counters only:
	// the UI shows its dashboard and servers, no sockets or rooms.
	Production = "production"
)

// Features of the UI's protocol ("config" event).
const (
	featureJoin        = "JOIN"
	featureLeave       = "LEAVE"
	featureDisconnect  = "DISCONNECT"
	featureMJoin       = "MJOIN"
	featureMLeave      = "MLEAVE"
	featureMDisconnect = "MDISCONNECT"
	featureAggregated  = "AGGREGATED_EVENTS"
	featureAllEvents   = "ALL_EVENTS"
)

// Options configure Instrument.
type Options struct {
	// Namespace is the admin namespace (default "/admin", the UI's
	// default).
	Namespace string

	// Username and PasswordHash are the login: the password is checked
	// against this bcrypt hash ($2a$, $2b$ or $2y$, as htpasswd -B or the
	// Node.js package's docs produce). Both are required unless NoAuth.
	Username     string
	PasswordHash string
	// NoAuth admits every admin socket without a login. Only for a server
	// whose admin namespace nobody else can reach.
	NoAuth bool
	// SessionTTL is how long a login's session id lets the UI reconnect
	// without the password (default 24h, as the Node.js RedisStore).
	SessionTTL time.Duration

	// ReadOnly hides the actions: the UI can look but not make sockets
	// join or leave rooms or disconnect them.
	ReadOnly bool
	// Mode is Development (default) or Production.
	Mode string
	// Messages, in Development mode, adds every event a socket sends or is
	// sent by the server's emit to the UI's events page (event_received,
	// event_sent), payloads included; off, the page shows connections,
	// disconnections and room changes only. Either way nothing is sent
	// while no admin socket is connected.
	Messages bool

	// MaxListedSockets bounds the sockets sent to an admin when it
	// connects (default 2000): with their handshakes they are one message,
	// which must fit the admin connection's write buffer (the socketio
	// WebSocket transport closes a connection over 4 MiB behind). Sockets
	// past it appear as they connect.
	MaxListedSockets int

	// ServerID names this node in the UI (default the host name).
	ServerID string
	// StatsInterval is how often the stats are sent (default 2s, the UI's
	// expectation: it marks a server unhealthy after 10s without).
	StatsInterval time.Duration

	// Logger receives logins, refusals and admin actions (default
	// slog.Default()).
	Logger *slog.Logger
}

// Admin is the admin namespace of one server. Close stops it.
type Admin struct {
	io       *socket.Server
	nsp      socket.Namespace
	opts     Options
	log      *slog.Logger
	features []string
	dev      bool
	sessions *sessions
	login    chan struct{} // bounds concurrent bcrypt comparisons
	started  time.Time
	hostname string

	watchers atomic.Int64 // connected admin sockets
	polling  atomic.Int64 // Engine.IO connections still on long-polling
	counters counters

	mu   sync.Mutex
	nsps map[string]socket.Namespace // every namespace of io

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// maxConcurrentLogins bounds the bcrypt comparisons running at once: each
// costs tens of milliseconds of CPU, and a flood of wrong passwords must
// not take the server's cores.
const maxConcurrentLogins = 2

// Instrument adds the admin namespace to io. Call it before the server
// accepts connections, after socketio.Bind (whose connect gate then opens
// for admin sockets too).
func Instrument(io *socket.Server, o Options) (*Admin, error) {
	if io == nil {
		return nil, errors.New("adminui: nil server")
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Namespace == "" {
		o.Namespace = "/admin"
	}
	if o.Namespace[0] != '/' {
		o.Namespace = "/" + o.Namespace
	}
	if o.Mode == "" {
		o.Mode = Development
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 24 * time.Hour
	}
	if o.MaxListedSockets <= 0 {
		o.MaxListedSockets = 2000
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	host, _ := os.Hostname()
	if o.ServerID == "" {
		o.ServerID = host
	}
	a := &Admin{
		io:       io,
		opts:     o,
		log:      o.Logger,
		dev:      o.Mode == Development,
		sessions: newSessions(o.SessionTTL, maxSessions),
		login:    make(chan struct{}, maxConcurrentLogins),
		started:  time.Now(),
		hostname: host,
		nsps:     map[string]socket.Namespace{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if !o.ReadOnly {
		a.features = []string{featureJoin, featureLeave, featureDisconnect, featureMJoin, featureMLeave, featureMDisconnect}
	}
	a.features = append(a.features, featureAggregated)
	if a.dev {
		a.features = append(a.features, featureAllEvents)
	}

	eng := io.Engine()
	if eng == nil {
		io.ServeHandler(nil) // creates and binds the engine
		eng = io.Engine()
	}
	if err := eng.On("connection", a.onEngineConnection); err != nil {
		return nil, fmt.Errorf("adminui: engine connection listener: %w", err)
	}

	// Namespaces made later (none by this server today) are announced on
	// "/"; the admin namespace is one of them.
	if err := io.Sockets().On("new_namespace", func(args ...any) {
		if n, ok := first[socket.Namespace](args); ok {
			a.addNamespace(n)
		}
	}); err != nil {
		return nil, fmt.Errorf("adminui: new_namespace listener: %w", err)
	}
	a.addNamespace(io.Sockets())
	a.nsp = io.Of(o.Namespace, nil)
	a.addNamespace(a.nsp) // no-op when new_namespace added it
	a.nsp.Use(a.authenticate)
	if err := a.nsp.On("connection", func(args ...any) {
		if s, ok := first[*socket.Socket](args); ok {
			a.onAdminConnection(s)
		}
	}); err != nil {
		return nil, fmt.Errorf("adminui: connection listener: %w", err)
	}
	go a.statsLoop()
	return a, nil
}

// Validate reports options Instrument would refuse: no login and no
// explicit NoAuth, a password hash that is not bcrypt, an unknown mode.
func (o Options) Validate() error {
	if o.Namespace == "/" {
		return errors.New(`adminui: the admin namespace cannot be "/"`)
	}
	switch o.Mode {
	case "", Development, Production:
	default:
		return fmt.Errorf("adminui: mode %q: want %q or %q", o.Mode, Development, Production)
	}
	if o.NoAuth {
		if o.Username != "" || o.PasswordHash != "" {
			return errors.New("adminui: NoAuth with a username or password hash: choose one")
		}
		return nil
	}
	if o.Username == "" || o.PasswordHash == "" {
		return errors.New("adminui: a username and a bcrypt password hash are required (or NoAuth, explicitly)")
	}
	return checkHash(o.PasswordHash)
}

// Namespace returns the admin namespace.
func (a *Admin) Namespace() socket.Namespace { return a.nsp }

// Close stops the stats and disconnects the admin sockets. Idempotent.
func (a *Admin) Close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		a.nsp.DisconnectSockets(true)
	})
}

func first[T any](args []any) (T, bool) {
	var zero T
	if len(args) == 0 {
		return zero, false
	}
	v, ok := args[0].(T)
	return v, ok
}

// watched reports whether an admin socket is connected: the UI's events
// are built and sent only then.
func (a *Admin) watched() bool { return a.watchers.Load() > 0 }

// send emits to every admin socket, if any.
func (a *Admin) send(ev string, args ...any) {
	if !a.watched() {
		return
	}
	if err := a.nsp.Emit(ev, args...); err != nil {
		a.log.Debug("adminui: emit", "event", ev, "err", err)
	}
}

// now is a timestamp as the UI reads it (a JavaScript Date's JSON).
func now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// onAdminConnection serves one logged-in admin socket.
func (a *Admin) onAdminConnection(s *socket.Socket) {
	a.watchers.Add(1)
	var gone sync.Once // the library may fire "disconnect" twice
	_ = s.On("disconnect", func(...any) { gone.Do(func() { a.watchers.Add(-1) }) })
	if d, ok := s.Data().(*adminData); ok && d.newSession != "" {
		_ = s.Emit("session", d.newSession)
	}
	a.log.Info("adminui: admin connected", "sid", s.Id(), "address", s.Handshake().Address)
	if !a.opts.ReadOnly {
		a.registerActions(s)
	}
	_ = s.Emit("config", map[string]any{"supportedFeatures": a.features})
	// Right away rather than at the next tick, so the UI's dashboard fills
	// at once; the counters stay for the broadcast.
	_ = s.Emit("server_stats", a.stats(false))
	if a.dev {
		_ = s.Emit("all_sockets", a.allSockets())
	}
}

// addNamespace records a namespace and, in development mode, forwards its
// sockets' lifecycle to the UI.
func (a *Admin) addNamespace(n socket.Namespace) {
	a.mu.Lock()
	if _, ok := a.nsps[n.Name()]; ok {
		a.mu.Unlock()
		return
	}
	a.nsps[n.Name()] = n
	a.mu.Unlock()
	if a.dev {
		a.watchNamespace(n)
	}
}

// namespace returns a namespace of io by name; nil for one that does not
// exist (an admin's action never creates one).
func (a *Admin) namespace(name string) socket.Namespace {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nsps[name]
}

func (a *Admin) namespaces() []socket.Namespace {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]socket.Namespace, 0, len(a.nsps))
	for _, n := range a.nsps {
		out = append(out, n)
	}
	return out
}

// watchNamespace sends the UI the namespace's connections,
// disconnections, room changes and (with Messages) events.
func (a *Admin) watchNamespace(n socket.Namespace) {
	name := n.Name()
	isAdmin := name == a.opts.Namespace
	_ = n.On("connection", func(args ...any) {
		s, ok := first[*socket.Socket](args)
		if !ok {
			return
		}
		a.send("socket_connected", serialize(s, name), now())
		id := string(s.Id())
		_ = s.Conn().On("upgrade", func(...any) {
			a.send("socket_updated", map[string]any{"id": id, "nsp": name, "transport": transportOf(s)})
		})
		if a.opts.Messages && !isAdmin {
			_ = s.OnAny(func(args ...any) {
				if a.watched() {
					a.send("event_received", name, id, withoutAck(args), now())
				}
			})
			_ = s.OnAnyOutgoing(func(args ...any) {
				if a.watched() {
					a.send("event_sent", name, id, withoutAck(args), now())
				}
			})
		}
		_ = s.On("disconnect", func(args ...any) {
			reason, _ := first[string](args)
			a.send("socket_disconnected", name, id, reason, now())
		})
	})
	ad := n.Adapter()
	_ = ad.On("join-room", func(args ...any) {
		if room, id, ok := roomArgs(args); ok {
			a.send("room_joined", name, room, id, now())
		}
	})
	_ = ad.On("leave-room", func(args ...any) {
		if room, id, ok := roomArgs(args); ok {
			a.send("room_left", name, room, id, now())
		}
	})
}

func roomArgs(args []any) (string, string, bool) {
	if len(args) < 2 {
		return "", "", false
	}
	room, ok1 := args[0].(socket.Room)
	id, ok2 := args[1].(socket.SocketId)
	return string(room), string(id), ok1 && ok2
}

// withoutAck drops the acknowledgement callback an event may end with:
// the UI shows the arguments only.
func withoutAck(args []any) []any {
	if n := len(args); n > 0 {
		if _, ok := args[n-1].(socket.Ack); ok {
			args = args[:n-1]
		}
	}
	out := make([]any, len(args))
	copy(out, args)
	return out
}

// onEngineConnection counts each Engine.IO connection's packets and bytes
// (the UI's dashboard charts) and whether it is still on long-polling.
func (a *Admin) onEngineConnection(args ...any) {
	es, ok := first[engine.Socket](args)
	if !ok {
		return
	}
	if a.watched() {
		a.counters.add("rawConnection", "", 1)
	}
	if t := es.Transport(); t != nil && t.Name() == "polling" {
		a.polling.Add(1)
		var once sync.Once
		decr := func(...any) { once.Do(func() { a.polling.Add(-1) }) }
		_ = es.Once("upgrade", decr)
		_ = es.Once("close", decr)
	}
	_ = es.On("packetCreate", func(args ...any) {
		if a.watched() {
			a.counters.packet(args, "packetsOut", "bytesOut")
		}
	})
	_ = es.On("packet", func(args ...any) {
		if a.watched() {
			a.counters.packet(args, "packetsIn", "bytesIn")
		}
	})
	_ = es.Once("close", func(args ...any) {
		if a.watched() {
			reason, _ := first[string](args)
			a.counters.add("rawDisconnection", reason, 1)
		}
	})
}

func (a *Admin) statsLoop() {
	defer close(a.done)
	t := time.NewTicker(a.opts.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			// Drained even when nobody watches, so the counters stay
			// bounded.
			st := a.stats(true)
			a.send("server_stats", st)
		}
	}
}
