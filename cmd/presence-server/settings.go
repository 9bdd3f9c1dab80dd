package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/adminui"
	"github.com/realtime-message/presence/socketio"
)

// Settings is the server's configuration: environment variables, then
// flags, which win.
type Settings struct {
	// Addr is the listen address, HOST:PORT (default ":3000": every
	// interface, port 3000, as the original server).
	Addr string
	// Presence is the service's configuration (REDIS_URL, PRESENCE_*).
	// Without REDIS_URL the server starts the embedded Redis.
	Presence presence.Config

	// AuthSecret turns on HMAC token authentication
	// (PRESENCE_AUTH_SECRET): each socket must present an HS256 token whose
	// sub is its user. Empty: presence:join's userId is trusted.
	AuthSecret string
	// AuthAudience and AuthIssuer, when set, must match the token's "aud"
	// and "iss" claims (PRESENCE_AUTH_AUDIENCE, PRESENCE_AUTH_ISSUER), so a
	// token another service minted with the same secret is refused.
	AuthAudience, AuthIssuer string
	// MaxMessageBytes bounds one Socket.IO message
	// (PRESENCE_MAX_MESSAGE_BYTES, default 1 MB).
	MaxMessageBytes int64
	// HeartbeatRate, MetadataRate and PresenceRate are per-socket limits
	// (PRESENCE_{HEARTBEAT,METADATA,PRESENCE}_RATE per second and
	// ..._BURST; a negative rate disables one). Zero: socketio's defaults.
	HeartbeatRate, MetadataRate, PresenceRate socketio.Rate
	// CallTimeout bounds the Redis calls of one client event
	// (PRESENCE_CALL_TIMEOUT_MS, default 5s).
	CallTimeout time.Duration
	// EventBudget, MaxQueuedEvents and DisconnectAfterRefused bound the
	// work one socket may queue (PRESENCE_EVENT_BUDGET_MS,
	// PRESENCE_MAX_QUEUED_EVENTS, PRESENCE_DISCONNECT_AFTER_REFUSED; zero:
	// socketio's defaults, 1s, 256 and 1000).
	EventBudget            time.Duration
	MaxQueuedEvents        int
	DisconnectAfterRefused int
	// ShutdownTimeout bounds the graceful shutdown
	// (PRESENCE_SHUTDOWN_TIMEOUT_MS, default 15s).
	ShutdownTimeout time.Duration
	// CORSOrigin, when set, answers cross-origin long-polling requests from
	// these origins (PRESENCE_CORS_ORIGIN: "*" or a comma-separated list).
	// WebSocket clients need no CORS.
	CORSOrigin string

	// LogLevel (LOG_LEVEL: debug, info, warn, error; default info) and
	// LogFormat (LOG_FORMAT: text or json; default text).
	LogLevel  slog.Level
	LogFormat string

	// AdminUI serves the official Socket.IO Admin UI's namespace, /admin
	// (PRESENCE_ADMIN_UI=1 or -admin-ui), with AdminUIOptions: the login
	// PRESENCE_ADMIN_UI_USER and PRESENCE_ADMIN_UI_PASSWORD_HASH (bcrypt),
	// or PRESENCE_ADMIN_UI_NO_AUTH=1; see adminui.go.
	AdminUI        bool
	AdminUIOptions adminui.Options
	// Dashboard turns on the operator dashboard (-dashboard,
	// PRESENCE_DASHBOARD=1), served at /dashboard/ on DashboardAddr
	// (-dashboard-addr, PRESENCE_DASHBOARD_ADDR, default 127.0.0.1:3001), a
	// listener of its own, never the public one. DashboardToken
	// (PRESENCE_DASHBOARD_TOKEN, environment only) makes its data need
	// "Authorization: Bearer <token>"; an address other than loopback
	// requires one.
	Dashboard      bool
	DashboardAddr  string
	DashboardToken string

	// SignToken, when set (-sign-token USER), makes the program print a
	// token for USER signed with AuthSecret and exit; TokenTTL is its
	// lifetime (-token-ttl, default 24h).
	SignToken string
	TokenTTL  time.Duration
	// HashPassword (-hash-password) makes the program read a password from
	// stdin, print its bcrypt hash for PRESENCE_ADMIN_UI_PASSWORD_HASH and
	// exit.
	HashPassword bool
}

// authenticator is the token check the settings ask for, nil without a
// secret; -sign-token signs with the same one, so its tokens pass.
func (s Settings) authenticator() *socketio.HMACAuthenticator {
	if s.AuthSecret == "" {
		return nil
	}
	return &socketio.HMACAuthenticator{Secret: []byte(s.AuthSecret), Leeway: 30 * time.Second,
		Audience: s.AuthAudience, Issuer: s.AuthIssuer}
}

// loadSettings reads the environment, then args.
func loadSettings(args []string, stderr io.Writer) (Settings, error) {
	getenv := os.Getenv
	s := Settings{
		MaxMessageBytes: socketio.DefaultMaxMessageBytes,
		ShutdownTimeout: 15 * time.Second,
		LogFormat:       "text",
		TokenTTL:        24 * time.Hour,
		DashboardAddr:   "127.0.0.1:3001",
	}
	// The environment is read here rather than by presence.ConfigFromEnv so
	// that its durations and REDIS_URL follow the same rules as the flags.
	host, port := getenv("HOST"), getenv("PORT")
	if port == "" {
		port = "3000"
	}
	s.AuthSecret = getenv("PRESENCE_AUTH_SECRET")
	s.AuthAudience = getenv("PRESENCE_AUTH_AUDIENCE")
	s.AuthIssuer = getenv("PRESENCE_AUTH_ISSUER")
	s.CORSOrigin = getenv("PRESENCE_CORS_ORIGIN")
	s.DashboardToken = getenv("PRESENCE_DASHBOARD_TOKEN")
	if v := getenv("LOG_FORMAT"); v != "" {
		s.LogFormat = v
	}
	var errs []string
	env := func(name string, parse func(string) error) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			if err := parse(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
			}
		}
	}
	env("REDIS_URL", func(v string) (err error) {
		s.Presence.RedisURL, s.Presence.Addrs, err = splitRedisURL(v)
		return err
	})
	env("PRESENCE_BACKEND", func(v string) error { s.Presence.Backend = v; return nil })
	env("PRESENCE_HEARTBEAT", func(v string) error { s.Presence.Heartbeat = v; return nil })
	env("PRESENCE_METADATA", func(v string) error { s.Presence.Metadata = v; return nil })
	env("PRESENCE_LOCKS", func(v string) error { s.Presence.Locks = v; return nil })
	env("PRESENCE_PUBSUB", func(v string) error { s.Presence.PubSub = v; return nil })
	env("PRESENCE_USER_INDEX", func(v string) error {
		on, err := strconv.ParseBool(v)
		s.Presence.DisableUserIndex = !on
		return err
	})
	env("PRESENCE_TTL_MS", msInto(&s.Presence.TTL))
	env("PRESENCE_REAPER_INTERVAL_MS", msInto(&s.Presence.ReaperInterval))
	env("PRESENCE_REAPER_LOOKBACK_MS", msInto(&s.Presence.ReaperLookback))
	env("PRESENCE_WAIT_REPLICAS", atoiInto(&s.Presence.WaitReplicas))
	env("PRESENCE_WAIT_TIMEOUT_MS", msInto(&s.Presence.WaitReplicasTimeout))
	env("PRESENCE_REAPER", func(v string) error { s.Presence.Reaper = v; return nil })
	env("PRESENCE_REAPER_BACKSTOP_MS", msInto(&s.Presence.ReaperBackstopInterval))
	env("PRESENCE_REAPER_CONFIGURE_NOTIFY", func(v string) (err error) {
		s.Presence.ReaperConfigureNotify, err = strconv.ParseBool(v)
		return err
	})
	env("LOG_LEVEL", func(v string) error { return s.LogLevel.UnmarshalText([]byte(v)) })
	env("PRESENCE_MAX_MESSAGE_BYTES", intInto(&s.MaxMessageBytes))
	env("PRESENCE_CALL_TIMEOUT_MS", msInto(&s.CallTimeout))
	env("PRESENCE_SHUTDOWN_TIMEOUT_MS", msInto(&s.ShutdownTimeout))
	env("PRESENCE_EVENT_BUDGET_MS", msInto(&s.EventBudget))
	env("PRESENCE_MAX_QUEUED_EVENTS", atoiInto(&s.MaxQueuedEvents))
	env("PRESENCE_DISCONNECT_AFTER_REFUSED", atoiInto(&s.DisconnectAfterRefused))
	env("PRESENCE_ADMIN_UI", boolInto(&s.AdminUI))
	env("PRESENCE_ADMIN_UI_USER", func(v string) error { s.AdminUIOptions.Username = v; return nil })
	env("PRESENCE_ADMIN_UI_PASSWORD_HASH", func(v string) error { s.AdminUIOptions.PasswordHash = v; return nil })
	env("PRESENCE_ADMIN_UI_NO_AUTH", boolInto(&s.AdminUIOptions.NoAuth))
	env("PRESENCE_ADMIN_UI_READONLY", boolInto(&s.AdminUIOptions.ReadOnly))
	env("PRESENCE_ADMIN_UI_MODE", func(v string) error { s.AdminUIOptions.Mode = v; return nil })
	env("PRESENCE_ADMIN_UI_MESSAGES", boolInto(&s.AdminUIOptions.Messages))
	env("PRESENCE_DASHBOARD", func(v string) (err error) { s.Dashboard, err = strconv.ParseBool(v); return err })
	env("PRESENCE_DASHBOARD_ADDR", func(v string) error { s.DashboardAddr = v; return nil })
	env("PRESENCE_KEY_PREFIX", func(v string) error { s.Presence.KeyPrefix = v; return nil })
	env("PRESENCE_MAX_STATE_BYTES", atoiInto(&s.Presence.MaxStateBytes))
	env("PRESENCE_MAX_METADATA_VALUE_BYTES", atoiInto(&s.Presence.MaxMetadataValueBytes))
	env("PRESENCE_MAX_METADATA_ITEMS", atoiInto(&s.Presence.MaxMetadataItems))
	rates := []struct {
		name, what, def string
		dst             *socketio.Rate
	}{
		{"heartbeat", "presence:heartbeat", "100/s, burst 200", &s.HeartbeatRate},
		{"metadata", "metadata:*", "50/s, burst 100", &s.MetadataRate},
		{"presence", "presence:join, presence:leave and presence:sync", "10/s, burst 20", &s.PresenceRate},
	}
	for _, r := range rates {
		env("PRESENCE_"+strings.ToUpper(r.name)+"_RATE", floatInto(&r.dst.PerSecond))
		env("PRESENCE_"+strings.ToUpper(r.name)+"_BURST", atoiInto(&r.dst.Burst))
	}
	if len(errs) > 0 {
		return s, fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}

	fs := flag.NewFlagSet("presence-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: presence-server [flags]\n\n"+
			"A Socket.IO v4 presence and channel-metadata server on Redis. Without\n"+
			"REDIS_URL it runs an embedded in-process Redis (development only).\n"+
			"Every setting is a flag and an environment variable (shown); flags win.\n"+
			"Durations take a unit (30s, 1500ms) or an integer of milliseconds (30000).\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nEnvironment only:\n"+
			"  PRESENCE_AUTH_SECRET   require HS256 tokens signed with this secret (auth.token, ?token=\n"+
			"                         or Authorization: Bearer); the token's sub is the user. Not a flag\n"+
			"                         on purpose: a command line is visible to every user through ps\n"+
			"  PRESENCE_ADMIN_UI_PASSWORD_HASH\n"+
			"                         with -admin-ui: the bcrypt hash of the Admin UI's password\n"+
			"                         (presence-server -hash-password < file-with-the-password)\n"+
			"  PRESENCE_DASHBOARD_TOKEN  with -dashboard: the bearer token its data needs (required\n"+
			"                         when -dashboard-addr is not a loopback address)\n"+
			"  GOGC, GOMEMLIMIT       the Go runtime's garbage-collector settings\n"+
			"Flag only: -sign-token and -token-ttl, which print a token instead of serving, and\n"+
			"-hash-password, which prints a password's bcrypt hash.\n")
	}
	fs.StringVar(&host, "host", host, "listen host (HOST; default every interface)")
	fs.StringVar(&port, "port", port, "listen port (PORT)")
	redisURL := fs.String("redis-url", "", "one server's redis:// or rediss:// URL, or a cluster's seeds as comma-separated host:port (REDIS_URL; default: embedded Redis)")
	fs.StringVar(&s.Presence.Backend, "backend", s.Presence.Backend, "Redis client adapter, by its registered name: rueidis or goredis (PRESENCE_BACKEND; default rueidis)")
	fs.StringVar(&s.Presence.Heartbeat, "heartbeat", s.Presence.Heartbeat, "heartbeat strategy spec: lua, pipeline, batch?window=50ms&max=100 (PRESENCE_HEARTBEAT; default lua)")
	fs.StringVar(&s.Presence.Metadata, "metadata", s.Presence.Metadata, "metadata strategy spec: lua, watch?retries=5 (PRESENCE_METADATA; default lua)")
	fs.StringVar(&s.Presence.Locks, "locks", s.Presence.Locks, "channel locks: advisory (bind only mutations naming them) or enforced (a held lock refuses every other mutation) (PRESENCE_LOCKS; default advisory)")
	fs.StringVar(&s.Presence.PubSub, "pubsub", s.Presence.PubSub, "how events travel between nodes: auto, pattern (every node hears every room), channels (a node subscribes to the rooms it serves) or sharded (channels with SPUBLISH/SSUBSCRIBE, Redis Cluster 7+); auto picks sharded on a Redis 7 cluster, channels otherwise, pattern when the backend cannot subscribe per channel. Every node of a deployment must agree (PRESENCE_PUBSUB; default auto)")
	userIndex := fs.Bool("user-index", !s.Presence.DisableUserIndex, "keep the user index: presence:user, presence:watchUser and user:event online/offline; false skips its writes on every join and leave. Every node of a deployment must agree (PRESENCE_USER_INDEX=0 turns it off)")
	fs.Var(durationFlag{&s.Presence.TTL}, "ttl", "connection TTL without heartbeats (PRESENCE_TTL_MS; default 30s)")
	fs.Var(durationFlag{&s.Presence.ReaperInterval}, "reaper-interval", "reaper period, negative disables (PRESENCE_REAPER_INTERVAL_MS; default 3s)")
	fs.Var(durationFlag{&s.Presence.ReaperLookback}, "reaper-lookback", "reap conns silent this long (PRESENCE_REAPER_LOOKBACK_MS; default TTL: a dead node's conns leave within TTL + interval)")
	fs.IntVar(&s.Presence.WaitReplicas, "wait-replicas", s.Presence.WaitReplicas, "acknowledge a metadata write only once this many replicas of its master have it (Redis WAIT), else METADATA_NOT_REPLICATED; 0: off, a failover may lose acknowledged writes (PRESENCE_WAIT_REPLICAS; default 0)")
	fs.Var(durationFlag{&s.Presence.WaitReplicasTimeout}, "wait-timeout", "bound of -wait-replicas's wait (PRESENCE_WAIT_TIMEOUT_MS; default 500ms)")
	fs.StringVar(&s.Presence.Reaper, "reaper", s.Presence.Reaper, "how dead conns are found: sweep (scan every active room each interval) or notify (expired-key events, sweeping every backstop; falls back to sweep with an error log when the server publishes none) (PRESENCE_REAPER; default sweep)")
	fs.Var(durationFlag{&s.Presence.ReaperBackstopInterval}, "reaper-backstop", "with -reaper notify: sweep this often for lost events (PRESENCE_REAPER_BACKSTOP_MS; default 10 × interval)")
	fs.BoolVar(&s.Presence.ReaperConfigureNotify, "reaper-configure-notify", s.Presence.ReaperConfigureNotify, "with -reaper notify: add Ex to each master's notify-keyspace-events instead of only checking it (PRESENCE_REAPER_CONFIGURE_NOTIFY=1)")
	fs.StringVar(&s.Presence.KeyPrefix, "key-prefix", s.Presence.KeyPrefix, "Redis key prefix (PRESENCE_KEY_PREFIX; default prs)")
	fs.Int64Var(&s.MaxMessageBytes, "max-message-bytes", s.MaxMessageBytes, "largest Socket.IO message; a larger one closes the connection (PRESENCE_MAX_MESSAGE_BYTES)")
	fs.IntVar(&s.Presence.MaxStateBytes, "max-state-bytes", s.Presence.MaxStateBytes, "largest presence state or patch, encoded (PRESENCE_MAX_STATE_BYTES; default 64 KiB)")
	fs.IntVar(&s.Presence.MaxMetadataValueBytes, "max-metadata-value-bytes", s.Presence.MaxMetadataValueBytes, "largest metadata value (PRESENCE_MAX_METADATA_VALUE_BYTES; default 1 MiB)")
	fs.IntVar(&s.Presence.MaxMetadataItems, "max-metadata-items", s.Presence.MaxMetadataItems, "most items of one channel (PRESENCE_MAX_METADATA_ITEMS; default 256)")
	fs.Var(durationFlag{&s.ShutdownTimeout}, "shutdown-timeout", "bound of the graceful shutdown (PRESENCE_SHUTDOWN_TIMEOUT_MS)")
	fs.Var(durationFlag{&s.CallTimeout}, "call-timeout", "bound of one event's Redis calls (PRESENCE_CALL_TIMEOUT_MS; default 5s)")
	fs.Var(durationFlag{&s.EventBudget}, "event-budget", "an event that waited longer behind its socket's earlier events is answered OVERLOADED without running, negative disables (PRESENCE_EVENT_BUDGET_MS; default 1s)")
	fs.IntVar(&s.MaxQueuedEvents, "max-queued-events", s.MaxQueuedEvents, "events one socket may have waiting; more are answered OVERLOADED (PRESENCE_MAX_QUEUED_EVENTS; default 256)")
	fs.IntVar(&s.DisconnectAfterRefused, "disconnect-after-refused", s.DisconnectAfterRefused, "disconnect a socket with more events refused (rate limit, full queue) in one second, negative: never (PRESENCE_DISCONNECT_AFTER_REFUSED; default 1000)")
	for _, r := range rates {
		fs.Var(floatFlag{&r.dst.PerSecond}, r.name+"-rate", "per-socket "+r.what+" limit, events per second, -1: none (PRESENCE_"+strings.ToUpper(r.name)+"_RATE; default "+r.def+")")
		fs.IntVar(&r.dst.Burst, r.name+"-burst", r.dst.Burst, "burst of -"+r.name+"-rate (PRESENCE_"+strings.ToUpper(r.name)+"_BURST)")
	}
	fs.StringVar(&s.CORSOrigin, "cors-origin", s.CORSOrigin, "answer cross-origin long-polling from \"*\" or these comma-separated origins (PRESENCE_CORS_ORIGIN; WebSocket clients need none)")
	fs.StringVar(&s.LogFormat, "log-format", s.LogFormat, "text or json (LOG_FORMAT)")
	fs.TextVar(&s.LogLevel, "log-level", s.LogLevel, "debug, info, warn or error (LOG_LEVEL)")
	fs.StringVar(&s.AuthAudience, "auth-audience", s.AuthAudience, "with PRESENCE_AUTH_SECRET: a token's aud claim must include this (PRESENCE_AUTH_AUDIENCE)")
	fs.StringVar(&s.AuthIssuer, "auth-issuer", s.AuthIssuer, "with PRESENCE_AUTH_SECRET: a token's iss claim must equal this (PRESENCE_AUTH_ISSUER)")
	fs.BoolVar(&s.AdminUI, "admin-ui", s.AdminUI, "serve the official Socket.IO Admin UI's /admin namespace; needs -admin-ui-user and PRESENCE_ADMIN_UI_PASSWORD_HASH, or -admin-ui-no-auth (PRESENCE_ADMIN_UI=1)")
	fs.StringVar(&s.AdminUIOptions.Username, "admin-ui-user", s.AdminUIOptions.Username, "the Admin UI's username (PRESENCE_ADMIN_UI_USER)")
	fs.BoolVar(&s.AdminUIOptions.NoAuth, "admin-ui-no-auth", s.AdminUIOptions.NoAuth, "the Admin UI without a login: only where nobody else reaches the server (PRESENCE_ADMIN_UI_NO_AUTH=1)")
	fs.BoolVar(&s.AdminUIOptions.ReadOnly, "admin-ui-readonly", s.AdminUIOptions.ReadOnly, "the Admin UI may look, not disconnect sockets or change their rooms (PRESENCE_ADMIN_UI_READONLY=1)")
	fs.StringVar(&s.AdminUIOptions.Mode, "admin-ui-mode", s.AdminUIOptions.Mode, "development (sockets, rooms, events) or production (stats only) (PRESENCE_ADMIN_UI_MODE; default development)")
	fs.BoolVar(&s.AdminUIOptions.Messages, "admin-ui-messages", s.AdminUIOptions.Messages, "the Admin UI's events page shows every message and its payload (PRESENCE_ADMIN_UI_MESSAGES=1)")
	fs.BoolVar(&s.HashPassword, "hash-password", false, "read a password from stdin, print its bcrypt hash for PRESENCE_ADMIN_UI_PASSWORD_HASH, and exit")
	fs.BoolVar(&s.Dashboard, "dashboard", s.Dashboard, "serve the operator dashboard at /dashboard/ on -dashboard-addr (PRESENCE_DASHBOARD=1)")
	fs.StringVar(&s.DashboardAddr, "dashboard-addr", s.DashboardAddr, "the dashboard's own listen address, HOST:PORT; not loopback needs PRESENCE_DASHBOARD_TOKEN (PRESENCE_DASHBOARD_ADDR)")
	fs.StringVar(&s.SignToken, "sign-token", "", "print an HS256 token for this user, signed with PRESENCE_AUTH_SECRET (with -auth-audience and -auth-issuer as aud and iss), and exit")
	fs.Var(durationFlag{&s.TokenTTL}, "token-ttl", "lifetime of the token -sign-token prints (0: no expiry)")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	s.Presence.DisableUserIndex = !*userIndex
	if *redisURL != "" {
		var err error
		if s.Presence.RedisURL, s.Presence.Addrs, err = splitRedisURL(*redisURL); err != nil {
			return s, fmt.Errorf("-redis-url: %w", err)
		}
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return s, fmt.Errorf("port %q: not a port number", port)
	}
	s.Addr = net.JoinHostPort(host, port)
	if s.LogFormat != "text" && s.LogFormat != "json" {
		return s, fmt.Errorf("log format %q: want text or json", s.LogFormat)
	}
	if s.AdminUI {
		if err := s.AdminUIOptions.Validate(); err != nil {
			return s, fmt.Errorf("admin UI: %w (PRESENCE_ADMIN_UI_USER and PRESENCE_ADMIN_UI_PASSWORD_HASH, or PRESENCE_ADMIN_UI_NO_AUTH=1)", err)
		}
	}
	if s.Dashboard {
		if err := checkDashboardAddr(s.DashboardAddr, s.DashboardToken != ""); err != nil {
			return s, err
		}
	}
	return s, nil
}

// splitRedisURL takes REDIS_URL or -redis-url: one server's URL
// (redis://, rediss://), or host:port seeds separated by commas. A URL
// listing several hosts is refused rather than guessed at: its password,
// database or TLS could not apply to every seed the same way.
func splitRedisURL(v string) (string, []string, error) {
	return presence.ParseRedisTarget(v)
}

func boolInto(dst *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		*dst = b
		return err
	}
}

func floatInto(dst *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		*dst = f
		return err
	}
}

// floatFlag shows no default of 0, which for a rate means "socketio's".
type floatFlag struct{ p *float64 }

func (f floatFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return ""
	}
	return strconv.FormatFloat(*f.p, 'g', -1, 64)
}

func (f floatFlag) Set(v string) error { return floatInto(f.p)(v) }

// durationFlag is a duration flag with the _MS variables' syntax, so one
// value works in both places.
type durationFlag struct{ p *time.Duration }

func (d durationFlag) String() string {
	if d.p == nil {
		return "0s"
	}
	return d.p.String()
}

func (d durationFlag) Set(v string) error { return msInto(d.p)(v) }

func intInto(dst *int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		*dst = n
		return err
	}
}

func atoiInto(dst *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		*dst = n
		return err
	}
}

// msInto parses a duration given in milliseconds ("30000") or with its
// unit ("30s"), so the _MS variables take the flags' syntax too.
func msInto(dst *time.Duration) func(string) error {
	return func(v string) error {
		d, err := presence.ParseMillis(v)
		if err == nil {
			*dst = d
		}
		return err
	}
}

// redactURL hides a URL's password for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func newLogger(s Settings, w io.Writer) *slog.Logger {
	// slog's JSON handler writes a time.Duration as integer nanoseconds,
	// which readers take for milliseconds or seconds; "1.5s" reads the
	// same in both formats.
	o := &slog.HandlerOptions{Level: s.LogLevel, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}
