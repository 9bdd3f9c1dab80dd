package presence

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config configures a Service. The zero value of every field means its
// documented default, applied by New and Open.
type Config struct {
	// Backend names the Redis client adapter for Open in the backend
	// registry: "rueidis" (default: auto-pipelining gives one round trip
	// per call at the lowest cost), "goredis", or one registered with
	// backend.Register. The built-ins are registered by importing
	// backend/builtin (or backend/rueidis, backend/goredis); this package
	// imports no adapter. Ignored by New, which is given a client.
	Backend string
	// RedisURL is a redis:// or rediss:// URL; cluster seeds may be added as
	// ?addr=host:port. Used by Open when Addrs is empty.
	RedisURL string
	// Addrs are host:port seeds; several mean a Redis Cluster.
	Addrs []string

	// Heartbeat is the heartbeat strategy spec (default "lua"): "pipeline",
	// "batch?window=50ms&max=100", "lua", or a registered one.
	Heartbeat string
	// Metadata is the metadata strategy spec (default "lua", atomic):
	// "watch?retries=5", "lua", or a registered one.
	Metadata string

	// TTL is how long a conn lives without a heartbeat (default 30s).
	TTL time.Duration
	// ReaperInterval is how often the reaper scans (default 3s); negative
	// disables the reaper on this node.
	ReaperInterval time.Duration
	// ReaperLookback: a conn is reaped once its hash expired and its last
	// heartbeat is older than this (default TTL, so a dead node's conns
	// leave within TTL + ReaperInterval; at least TTL). Raise it as a margin
	// when the nodes' clocks may differ.
	ReaperLookback time.Duration
	// Reaper is how this node's reaper finds dead conns: "sweep" (default:
	// it scans every active room each ReaperInterval) or "notify": it
	// subscribes to the expired-key notifications of conn keys on every
	// master and reaps a conn's room as soon as its key expires, with a
	// sweep every ReaperBackstopInterval for lost notifications. When the
	// server does not publish expired events (notify-keyspace-events lacks
	// E and x, CONFIG is refused, the embedded server), the notify reaper
	// logs an error and sweeps every ReaperInterval until it can subscribe
	// (ReaperStatus says which runs). See docs/DESIGN.md.
	Reaper string
	// ReaperBackstopInterval is how often the notify reaper sweeps anyway
	// (default 10 × ReaperInterval).
	ReaperBackstopInterval time.Duration
	// ReaperConfigureNotify lets the notify reaper add "Ex" to each master's
	// notify-keyspace-events (CONFIG SET) instead of only checking it.
	ReaperConfigureNotify bool
	// KeyPrefix prefixes every key and channel (default "prs"), so several
	// deployments can share one Redis.
	KeyPrefix string
	// Logger receives the service's logs (default slog.Default()).
	Logger *slog.Logger

	// MaxIDBytes bounds room, conn, user, channel and lock ids (default 256).
	MaxIDBytes int
	// MaxStateBytes bounds a conn's encoded state and a patch (default 64 KiB).
	MaxStateBytes int
	// MaxMetadataValueBytes bounds one metadata value (default 1 MiB).
	MaxMetadataValueBytes int
	// MaxMetadataItems bounds the items of one channel (default 256).
	MaxMetadataItems int
	// Locks is "advisory" (default: a lock binds only the mutations that
	// name it in MetadataOptions.LockName) or "enforced": while any lock
	// of a channel is held, a set, update or remove of its metadata fails
	// with ErrLocked unless its Actor holds every held lock of the channel
	// and names one of them in LockName. The holder too must name the
	// lock, so a write made without it is refused rather than taken as
	// one made under it. Checked atomically with the write; New refuses
	// a metadata strategy that cannot (strategy.LockEnforcer: watch).
	Locks string
	// MaxLockTTL bounds the TTL of a lock acquire or renew (default 10
	// minutes), so a client cannot hold a channel's lock for years; a
	// holder that needs longer renews.
	MaxLockTTL time.Duration
	// WaitReplicas, when above 0, makes every metadata write (set, update,
	// remove) wait until that many replicas of its master acknowledged it
	// (Redis WAIT, on the write's connection), for at most
	// WaitReplicasTimeout (default 500ms); with fewer, the mutation fails
	// with ErrNotReplicated although it ran on the master. Default 0: acked
	// as soon as the master applied it, and a failover to a replica that
	// had not received it yet loses it (docs/DESIGN.md, failover).
	WaitReplicas int
	// WaitReplicasTimeout bounds the wait of WaitReplicas.
	WaitReplicasTimeout time.Duration

	// DisableUserIndex turns the user index off (Service.User and user
	// online/offline events; docs/DESIGN.md "User index"): joins and
	// leaves then skip its writes. Every node of a deployment must agree,
	// or users joined through an index-less node are missing from it.
	DisableUserIndex bool

	// PubSub is how events travel between server nodes (docs/DESIGN.md
	// "Scaling out"): "pattern" (every node pattern-subscribes to every
	// room's events, classic PUBLISH: the behaviour before per-room
	// subscriptions), "channels" (classic PUBLISH; a node subscribes to
	// the channels of the rooms and users it serves), "sharded" (as
	// channels, but room and user events use sharded pub/sub, SPUBLISH and
	// SSUBSCRIBE, Redis 7+: on a cluster each event touches only its room's
	// shard). Default "auto": sharded on a Redis Cluster that supports it,
	// else channels; pattern when the backend cannot subscribe to
	// channels (backend.ChannelSubscriber). Every node of a deployment
	// must publish the same way: a sharded node's events do not reach
	// classic subscribers. Pattern and channels nodes can be mixed.
	PubSub string

	// Hooks observe the service for metrics; nil funcs are skipped.
	Hooks Hooks
	// Now is the clock (default time.Now); tests replace it.
	Now func() time.Time
}

// The values of Config.PubSub.
const (
	PubSubAuto     = "auto"
	PubSubPattern  = "pattern"
	PubSubChannels = "channels"
	PubSubSharded  = "sharded"
)

// The values of Config.Locks.
const (
	LocksAdvisory = "advisory"
	LocksEnforced = "enforced"
)

// DefaultBackend is the adapter Open uses when Config.Backend is empty.
const DefaultBackend = "rueidis"

func (c Config) withDefaults() (Config, error) {
	if c.Backend == "" {
		c.Backend = DefaultBackend
	}
	if c.Heartbeat == "" {
		c.Heartbeat = "lua"
	}
	if c.Metadata == "" {
		c.Metadata = "lua"
	}
	if c.TTL == 0 {
		c.TTL = 30 * time.Second
	}
	if c.TTL < time.Millisecond {
		return c, invalid("config: TTL %v must be at least 1ms", c.TTL)
	}
	if c.ReaperInterval == 0 {
		c.ReaperInterval = 3 * time.Second
	}
	if c.ReaperLookback == 0 {
		c.ReaperLookback = c.TTL
	}
	if c.ReaperLookback < c.TTL {
		return c, invalid("config: ReaperLookback %v must be at least TTL %v", c.ReaperLookback, c.TTL)
	}
	switch c.Reaper {
	case "":
		c.Reaper = ReaperSweep
	case ReaperSweep, ReaperNotify:
	default:
		return c, invalid("config: Reaper %q is neither %q nor %q", c.Reaper, ReaperSweep, ReaperNotify)
	}
	switch c.PubSub {
	case "":
		c.PubSub = PubSubAuto
	case PubSubAuto, PubSubPattern, PubSubChannels, PubSubSharded:
	default:
		return c, invalid("config: PubSub %q is none of %q, %q, %q, %q", c.PubSub, PubSubAuto, PubSubPattern, PubSubChannels, PubSubSharded)
	}
	if c.ReaperBackstopInterval <= 0 {
		c.ReaperBackstopInterval = 10 * c.ReaperInterval
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "prs"
	}
	// Braces would move the hash tag; glob characters would make the
	// pattern subscriptions built from the prefix match other
	// deployments' channels; spaces and control characters make keys
	// unreadable in redis-cli and logs.
	if i := strings.IndexFunc(c.KeyPrefix, func(r rune) bool {
		return strings.ContainsRune("{}*?[]\\", r) || r <= ' ' || r == 0x7f
	}); i >= 0 {
		return c, invalid("config: KeyPrefix %q: %q is not allowed (no braces, glob characters *?[]\\, spaces or control characters)", c.KeyPrefix, c.KeyPrefix[i:i+1])
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxIDBytes <= 0 {
		c.MaxIDBytes = 256
	}
	if c.MaxStateBytes <= 0 {
		c.MaxStateBytes = 64 << 10
	}
	if c.MaxMetadataValueBytes <= 0 {
		c.MaxMetadataValueBytes = 1 << 20
	}
	if c.MaxMetadataItems <= 0 {
		c.MaxMetadataItems = 256
	}
	switch c.Locks {
	case "":
		c.Locks = LocksAdvisory
	case LocksAdvisory, LocksEnforced:
	default:
		return c, invalid("config: Locks %q is neither %q nor %q", c.Locks, LocksAdvisory, LocksEnforced)
	}
	if c.MaxLockTTL <= 0 {
		c.MaxLockTTL = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// ConfigFromEnv reads REDIS_URL, PRESENCE_BACKEND, PRESENCE_HEARTBEAT,
// PRESENCE_METADATA, PRESENCE_LOCKS, PRESENCE_TTL_MS, PRESENCE_REAPER_INTERVAL_MS,
// PRESENCE_REAPER_LOOKBACK_MS, PRESENCE_WAIT_REPLICAS, PRESENCE_WAIT_TIMEOUT_MS,
// PRESENCE_REAPER (sweep|notify), PRESENCE_REAPER_BACKSTOP_MS and
// PRESENCE_REAPER_CONFIGURE_NOTIFY (1|0), PRESENCE_PUBSUB
// (auto|pattern|channels|sharded), PRESENCE_USER_INDEX (1|0; 0 sets
// DisableUserIndex). Unset variables leave defaults. REDIS_URL may
// also be a comma-separated host:port list (a cluster's seeds).
func ConfigFromEnv() (Config, error) {
	var c Config
	if u := strings.TrimSpace(os.Getenv("REDIS_URL")); u != "" {
		url, addrs, err := ParseRedisTarget(u)
		if err != nil {
			return c, invalid("REDIS_URL=%q: %v", u, err)
		}
		c.RedisURL, c.Addrs = url, addrs
	}
	c.Backend = os.Getenv("PRESENCE_BACKEND")
	c.Heartbeat = os.Getenv("PRESENCE_HEARTBEAT")
	c.Metadata = os.Getenv("PRESENCE_METADATA")
	c.Locks = os.Getenv("PRESENCE_LOCKS")
	if v := strings.TrimSpace(os.Getenv("PRESENCE_WAIT_REPLICAS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return c, invalid("PRESENCE_WAIT_REPLICAS=%q: want an integer", v)
		}
		c.WaitReplicas = n
	}
	c.Reaper = os.Getenv("PRESENCE_REAPER")
	c.PubSub = os.Getenv("PRESENCE_PUBSUB")
	if v := strings.TrimSpace(os.Getenv("PRESENCE_USER_INDEX")); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return c, invalid("PRESENCE_USER_INDEX=%q: want 1 or 0", v)
		}
		c.DisableUserIndex = !on
	}
	if v := os.Getenv("PRESENCE_REAPER_CONFIGURE_NOTIFY"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, invalid("PRESENCE_REAPER_CONFIGURE_NOTIFY=%q: want 1 or 0", v)
		}
		c.ReaperConfigureNotify = b
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{
		{"PRESENCE_TTL_MS", &c.TTL},
		{"PRESENCE_REAPER_INTERVAL_MS", &c.ReaperInterval},
		{"PRESENCE_REAPER_LOOKBACK_MS", &c.ReaperLookback},
		{"PRESENCE_WAIT_TIMEOUT_MS", &c.WaitReplicasTimeout},
		{"PRESENCE_REAPER_BACKSTOP_MS", &c.ReaperBackstopInterval},
	} {
		s := os.Getenv(d.env)
		if s == "" {
			continue
		}
		v, err := ParseMillis(s)
		if err != nil {
			return c, invalid("%s=%q: %v", d.env, s, err)
		}
		*d.dst = v
	}
	return c, nil
}

// ParseMillis reads a duration setting the way every _MS variable takes
// it: an integer number of milliseconds ("30000") or a duration with its
// unit ("30s").
func ParseMillis(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("want milliseconds (30000) or a duration (30s)")
	}
	return d, nil
}

// ParseRedisTarget reads REDIS_URL: one server's redis:// or rediss:// URL,
// or a cluster's seeds as comma-separated host:port.
func ParseRedisTarget(v string) (url string, addrs []string, err error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", nil, nil
	}
	if strings.Contains(v, "://") {
		if strings.Contains(v, ",") {
			return "", nil, errors.New("a URL names one server; give cluster seeds as host:port,host:port")
		}
		return v, nil, nil
	}
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return "", nil, fmt.Errorf("seed %q: want host:port", a)
		}
		addrs = append(addrs, a)
	}
	return "", addrs, nil
}

// Optimizations are the original Node.js server's optimization options,
// kept so existing deployments map one to one onto strategy specs.
type Optimizations struct {
	EnableHeartbeatBatching     bool
	HeartbeatBatchWindowMs      int // default 50
	HeartbeatMaxBatchSize       int // default 100
	EnableLuaHeartbeat          bool
	EnableTransactionalMetadata bool
	MetadataMaxRetries          int // default 5
}

// Specs maps the options as the original server did: Lua wins over batching; neither
// gives "pipeline"; transactional metadata gives "watch", otherwise the
// atomic "lua" (never an unprotected read-compare-write).
func (o Optimizations) Specs() (heartbeat, metadata string) {
	switch {
	case o.EnableLuaHeartbeat:
		heartbeat = "lua"
	case o.EnableHeartbeatBatching:
		window, max := o.HeartbeatBatchWindowMs, o.HeartbeatMaxBatchSize
		if window <= 0 {
			window = 50
		}
		if max <= 0 {
			max = 100
		}
		heartbeat = fmt.Sprintf("batch?window=%dms&max=%d", window, max)
	default:
		heartbeat = "pipeline"
	}
	metadata = "lua"
	if o.EnableTransactionalMetadata {
		retries := o.MetadataMaxRetries
		if retries <= 0 {
			retries = 5
		}
		metadata = fmt.Sprintf("watch?retries=%d", retries)
	}
	return heartbeat, metadata
}

// Apply sets c's strategy specs from o.
func (o Optimizations) Apply(c Config) Config {
	c.Heartbeat, c.Metadata = o.Specs()
	return c
}
