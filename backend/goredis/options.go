package goredis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/luasrc"
)

// Mode says whether to speak to one server or to a Redis Cluster.
type Mode int

const (
	// ModeAuto picks the cluster client when more than one address is given,
	// and otherwise asks the one server (INFO cluster) whether it has
	// cluster_enabled:1. A server that cannot answer that (miniredis, some
	// proxies) is treated as standalone.
	ModeAuto Mode = iota
	// ModeStandalone uses one *redis.Client (one server, DB selectable).
	ModeStandalone
	// ModeCluster uses a *redis.ClusterClient; the addresses are seeds.
	ModeCluster
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeStandalone:
		return "standalone"
	case ModeCluster:
		return "cluster"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Options configures New. The zero value is not usable: set Addrs or URL.
type Options struct {
	// Addrs are host:port addresses: one standalone server, or cluster seed
	// nodes (any subset of the cluster; the rest is discovered). They are
	// added to the addresses of URL, as in backend/rueidis.
	Addrs []string

	// URL is a redis:// or rediss:// (TLS) URL, as redis.ParseURL accepts
	// (also unix:// for a standalone server). More cluster seeds are given
	// as repeated ?addr=host:port parameters, as redis.ParseClusterURL
	// understands. Query parameters go-redis knows (dial_timeout,
	// pool_size, ...) are honoured; the fields below, when set, win.
	URL string

	// Mode selects standalone or cluster. Default ModeAuto: several
	// addresses mean a cluster, one address is probed with INFO cluster.
	Mode Mode

	// Username and Password authenticate (ACL user, or just the password
	// for requirepass). Default: none, or what URL carries.
	Username string
	Password string

	// DB is the database of a standalone server. Default 0, or the URL's
	// path. A cluster has only DB 0, so anything else is an error there.
	DB int

	// Preload lists the scripts loaded with SCRIPT LOAD on the server, or
	// on every cluster master, before New returns. Default (nil):
	// luasrc.All. go-redis falls back from EVALSHA to EVAL only in
	// Script.Run, never inside a pipeline, so scripts are loaded up front to
	// make pipelined EVALSHA succeed; backend.Scripts still resends with EVAL
	// after a NOSCRIPT reply (a restart, a failover or SCRIPT FLUSH), so this
	// saves a round trip, not correctness. Set an empty, non-nil slice to
	// skip preloading.
	Preload []*luasrc.Script

	// DialTimeout bounds connecting to one server. Default 5s (go-redis's
	// default): long enough for a loaded server, short enough that a dead
	// node is noticed.
	DialTimeout time.Duration

	// PoolSize is the number of connections per server. Default go-redis's,
	// 10 per GOMAXPROCS: every pipeline or transaction holds one connection
	// for one round trip, and pub/sub connections are separate.
	PoolSize int

	// Protocol is the RESP version, 2 or 3. Default 2: replies then already
	// have the shapes backend.Reply documents (maps as flat arrays, doubles
	// as strings), exactly as Redis formats them. RESP3 maps, doubles,
	// booleans and big numbers are converted to the same shapes, but some
	// commands change shape under RESP3 beyond that (ZRANGE WITHSCORES
	// answers [member, score] pairs instead of a flat list), so strategies
	// written against RESP2 replies may misread them.
	Protocol int

	// MaxRetries is how often go-redis resends a command after a network
	// error or a LOADING/TRYAGAIN-style reply. Default 0 keeps go-redis's
	// default (3); -1 disables retries. A resent write may run twice if the
	// first attempt reached the server, so set -1 when that matters more
	// than riding out a dropped idle connection.
	MaxRetries int

	// Logger receives what go-redis itself prints (failed dials, dropped
	// connections), at warn level, each kind of line at most once per 10s
	// with a count of its repeats. go-redis has one logger per process:
	// New installs a router as that logger (redis.SetLogger, once per
	// process); lines about a call of this Client go to this Logger, lines
	// go-redis cannot attribute go to the Logger of every live Client (see
	// logging.go). Default nil: go-redis logs as it was configured (plain
	// text on stderr unless the application called redis.SetLogger).
	Logger *slog.Logger
}

// New connects as opt says, detects the mode when asked to, preloads the
// scripts, and returns a Client. Probing and preloading talk to the server,
// so with the defaults a wrong address or password fails here, bounded by
// ctx (with a forced Mode and preloading off, New does no I/O and the first
// call fails instead). The Client owns its go-redis client; Close closes it.
func New(ctx context.Context, opt Options) (*Client, error) {
	rc, err := dial(ctx, opt)
	if err != nil {
		return nil, err
	}
	c := NewFromClient(rc)
	if opt.Logger != nil {
		c.sink = router.acquire(opt.Logger)
	}
	scripts := opt.Preload
	if scripts == nil {
		scripts = luasrc.All
	}
	if len(scripts) > 0 {
		if err := c.LoadScripts(ctx, scripts...); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// dial builds the go-redis client of opt.
func dial(ctx context.Context, opt Options) (redis.UniversalClient, error) {
	if opt.URL == "" && len(opt.Addrs) == 0 {
		return nil, errors.New("backend/goredis: no server address: set Options.Addrs or Options.URL")
	}
	switch opt.Mode {
	case ModeAuto, ModeStandalone, ModeCluster:
	default:
		return nil, fmt.Errorf("backend/goredis: unknown Options.Mode %d", int(opt.Mode))
	}
	if opt.Protocol != 0 && opt.Protocol != 2 && opt.Protocol != 3 {
		return nil, fmt.Errorf("backend/goredis: Options.Protocol is %d, want 2 or 3", opt.Protocol)
	}

	nAddrs, err := countAddrs(opt)
	if err != nil {
		return nil, err
	}
	mode := opt.Mode
	if mode == ModeAuto && nAddrs > 1 {
		mode = ModeCluster
	}
	if mode == ModeStandalone && nAddrs > 1 {
		return nil, fmt.Errorf("backend/goredis: standalone mode takes one address, got %d", nAddrs)
	}

	if mode != ModeCluster {
		so, err := standaloneOptions(opt)
		if err != nil {
			return nil, err
		}
		if mode == ModeAuto {
			isCluster, err := probeCluster(ctx, so)
			if err != nil {
				return nil, fmt.Errorf("backend/goredis: probing %s for cluster mode: %w", so.Addr, annotate(ctx, err))
			}
			if isCluster && so.DB != 0 {
				return nil, fmt.Errorf("backend/goredis: %s is a cluster node, which has no DB %d", so.Addr, so.DB)
			}
			if !isCluster {
				mode = ModeStandalone
			}
		}
		if mode == ModeStandalone {
			return redis.NewClient(so), nil
		}
	}
	if opt.DB != 0 {
		return nil, fmt.Errorf("backend/goredis: a cluster has no DB %d", opt.DB)
	}
	co, err := clusterOptions(opt)
	if err != nil {
		return nil, err
	}
	return redis.NewClusterClient(co), nil
}

// countAddrs returns how many server addresses opt names.
func countAddrs(opt Options) (int, error) {
	if opt.URL == "" {
		return len(opt.Addrs), nil
	}
	u, err := url.Parse(opt.URL)
	if err != nil {
		return 0, fmt.Errorf("backend/goredis: Options.URL: %w", err)
	}
	return 1 + len(u.Query()["addr"]) + len(opt.Addrs), nil
}

func standaloneOptions(opt Options) (*redis.Options, error) {
	var so *redis.Options
	if opt.URL != "" {
		var err error
		if so, err = redis.ParseURL(opt.URL); err != nil {
			return nil, fmt.Errorf("backend/goredis: Options.URL: %w", err)
		}
	} else {
		so = &redis.Options{Addr: opt.Addrs[0]}
		if err := checkAddr(so.Addr); err != nil {
			return nil, err
		}
	}
	if opt.Username != "" {
		so.Username = opt.Username
	}
	if opt.Password != "" {
		so.Password = opt.Password
	}
	if opt.DB != 0 {
		so.DB = opt.DB
	}
	if opt.DialTimeout != 0 {
		so.DialTimeout = opt.DialTimeout
	}
	if opt.PoolSize != 0 {
		so.PoolSize = opt.PoolSize
	}
	if opt.MaxRetries != 0 {
		so.MaxRetries = opt.MaxRetries
	}
	so.Protocol = protocol(opt.Protocol, so.Protocol)
	// Without this go-redis ignores context deadlines on the socket and
	// waits for ReadTimeout (3s) instead.
	so.ContextTimeoutEnabled = true
	return so, nil
}

func clusterOptions(opt Options) (*redis.ClusterOptions, error) {
	var co *redis.ClusterOptions
	if opt.URL != "" {
		var err error
		if co, err = redis.ParseClusterURL(opt.URL); err != nil {
			return nil, fmt.Errorf("backend/goredis: Options.URL: %w", err)
		}
		// ParseClusterURL ignores a path; a DB there would be ignored.
		if u, err := url.Parse(opt.URL); err == nil && strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0" {
			return nil, fmt.Errorf("backend/goredis: Options.URL: a cluster has no DB %s", strings.Trim(u.Path, "/"))
		}
	} else {
		co = &redis.ClusterOptions{}
	}
	for _, a := range opt.Addrs {
		if err := checkAddr(a); err != nil {
			return nil, err
		}
		co.Addrs = append(co.Addrs, a)
	}
	if opt.Username != "" {
		co.Username = opt.Username
	}
	if opt.Password != "" {
		co.Password = opt.Password
	}
	if opt.DialTimeout != 0 {
		co.DialTimeout = opt.DialTimeout
	}
	if opt.PoolSize != 0 {
		co.PoolSize = opt.PoolSize
	}
	if opt.MaxRetries != 0 {
		co.MaxRetries = opt.MaxRetries
	}
	co.Protocol = protocol(opt.Protocol, co.Protocol)
	co.ContextTimeoutEnabled = true
	return co, nil
}

func checkAddr(a string) error {
	if _, _, err := net.SplitHostPort(a); err != nil {
		return fmt.Errorf("backend/goredis: address %q: %w", a, err)
	}
	return nil
}

// protocol returns the RESP version: the option, else the URL's, else 2.
func protocol(fromOpt, fromURL int) int {
	switch {
	case fromOpt != 0:
		return fromOpt
	case fromURL != 0:
		return fromURL
	}
	return 2
}

// probeCluster asks the server of so whether it runs in cluster mode, on a
// connection of its own in DB 0 (a cluster node refuses SELECT). A server
// error (INFO or its cluster section unknown, as on some proxies) means no;
// a network error is returned.
func probeCluster(ctx context.Context, so *redis.Options) (bool, error) {
	po := *so
	po.DB = 0
	po.PoolSize = 1
	rc := redis.NewClient(&po)
	defer rc.Close()
	info, err := rc.Info(ctx, "cluster").Result()
	if err != nil {
		if isServerError(err) {
			return false, nil
		}
		return false, err
	}
	for _, line := range strings.Split(info, "\n") {
		if strings.TrimSpace(line) == "cluster_enabled:1" {
			return true, nil
		}
	}
	return false, nil
}
