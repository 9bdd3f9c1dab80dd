// Package rueidis implements backend.Client on github.com/redis/rueidis.
//
// Commands of [Client.Do] go through rueidis's shared, auto-pipelined
// connections: concurrent callers are batched onto one connection per node
// without any locking on our side. Standalone servers and Redis Cluster are
// told apart by rueidis at construction (it asks CLUSTER SLOTS); the same
// Client serves both.
//
// Transactions ([Client.Watch]) and subscriptions ([Client.PSubscribe]) each
// take a dedicated connection from rueidis's pool, so nothing of anyone else
// can slip between WATCH and EXEC, and a slow subscriber delays only itself.
// A channel subscription ([Client.SubscribeChannels]) holds thousands of
// channels on one dedicated connection (classic pub/sub), or on one per
// master owning them (sharded pub/sub on a cluster).
//
// A Client is safe for concurrent use by many goroutines.
package rueidis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

var _ backend.Client = (*Client)(nil)

// Options configure [New]. The zero value is not usable: set Addrs or URL.
type Options struct {
	// Addrs are the seed addresses ("host:port"). One address of a
	// standalone server gives a standalone client; addresses of cluster nodes
	// give a cluster client that discovers the rest of the cluster. They are
	// added to the addresses of URL.
	Addrs []string

	// URL is an alternative to Addrs in the form
	// redis://[user:password@]host:port[/db][?addr=host2:port2&addr=...] or
	// rediss://... for TLS; extra addr= parameters are more cluster seeds.
	// It is parsed with rueidis.ParseURL, so its other parameters
	// (dial_timeout, protocol=2, client_cache=0, client_name, ...) work too.
	// The fields below override what the URL says when they are set.
	URL string

	// Username and Password authenticate every connection (ACL user or the
	// legacy requirepass when Username is empty). Default: none, or the
	// URL's.
	Username string
	Password string

	// DisableCache stops rueidis from sending CLIENT TRACKING on each
	// connection. This adapter never uses client-side caching itself, so the
	// only reason to keep tracking on (the default, as in rueidis) is code
	// that uses [Client.Raw] for DoCache. It is set automatically when the
	// server refuses CLIENT TRACKING (miniredis, some proxies): New then
	// reconnects with DisableCache and AlwaysRESP2.
	DisableCache bool

	// AlwaysRESP2 makes rueidis speak RESP2 instead of trying RESP3 first.
	// Replies have the same shape either way (see backend.Reply). Default
	// false: RESP3, the protocol rueidis is built around.
	AlwaysRESP2 bool

	// Preload lists the scripts loaded with SCRIPT LOAD on every node
	// (every master and replica of a cluster) by New, so that the first
	// EVALSHA of a pipeline does not cost a NOSCRIPT round trip. A script
	// that does not compile, or whose SHA1 differs from the generated one,
	// fails New. nil means luasrc.All; an empty non-nil slice loads nothing.
	Preload []*luasrc.Script

	// DialTimeout bounds each connection attempt (TCP, TLS and the HELLO
	// handshake). Default: rueidis.DefaultDialTimeout (5s). The context of
	// New bounds construction as a whole as well.
	DialTimeout time.Duration

	// ClientName is sent with CLIENT SETNAME on each connection, so CLIENT
	// LIST shows who is connected. Default: none, or the URL's.
	ClientName string

	// Logger receives the reconnects of subscriptions (warnings) and their
	// recovery. Default: slog.Default().
	Logger *slog.Logger

	// Customize, when set, is called with the rueidis options just before
	// the client is built, for settings this struct does not cover (TLS
	// configuration, pool sizes, ...). Do not set DisableAutoPipelining:
	// auto-pipelining is what makes Do cheap under concurrency.
	Customize func(*rueidis.ClientOption)
}

// clientOption turns o into rueidis options.
func (o Options) clientOption() (rueidis.ClientOption, error) {
	var co rueidis.ClientOption
	if o.URL != "" {
		var err error
		if co, err = rueidis.ParseURL(o.URL); err != nil {
			return co, fmt.Errorf("backend/rueidis: Options.URL: %w", err)
		}
	}
	co.InitAddress = append(co.InitAddress, o.Addrs...)
	if len(co.InitAddress) == 0 {
		return co, errors.New("backend/rueidis: no server address: set Options.Addrs or Options.URL")
	}
	if o.Username != "" {
		co.Username = o.Username
	}
	if o.Password != "" {
		co.Password = o.Password
	}
	if o.ClientName != "" {
		co.ClientName = o.ClientName
	}
	if o.DialTimeout > 0 {
		co.Dialer.Timeout = o.DialTimeout
	}
	co.DisableCache = co.DisableCache || o.DisableCache
	co.AlwaysRESP2 = co.AlwaysRESP2 || o.AlwaysRESP2
	if o.Customize != nil {
		o.Customize(&co)
	}
	return co, nil
}

// Client is a backend.Client on a rueidis.Client. Build it with [New] or
// [NewFromClient].
type Client struct {
	rc    rueidis.Client
	owned bool // Close closes rc
	log   *slog.Logger

	closed    atomic.Bool
	closeOnce sync.Once
	mu        sync.Mutex                 // guards subs, and closed against track
	subs      map[any]context.CancelFunc // live subscriptions and how to stop each
	wg        sync.WaitGroup             // one per live subscription goroutine
}

// New connects to the server(s) of opt, detects standalone or cluster, and
// preloads opt.Preload on every node. ctx bounds the whole construction.
func New(ctx context.Context, opt Options) (*Client, error) {
	co, err := opt.clientOption()
	if err != nil {
		return nil, err
	}
	rc, err := dial(ctx, co)
	if err != nil && errors.Is(err, rueidis.ErrNoCache) && !co.DisableCache {
		// The server refused CLIENT TRACKING or RESP3: it is not a full
		// Redis (miniredis, a proxy). Such servers are also the ones that
		// mishandle RESP3 pub/sub, so fall back to RESP2 as well.
		co.DisableCache, co.AlwaysRESP2 = true, true
		rc, err = dial(ctx, co)
	}
	if err == nil && len(co.InitAddress) == 1 && !co.ForceSingleClient && rc.Mode() == rueidis.ClientModeCluster {
		rc, err = standaloneUnlessCluster(ctx, rc, co)
	}
	if err != nil {
		return nil, fmt.Errorf("backend/rueidis: connect to %v: %w", co.InitAddress, err)
	}
	c := newClient(rc, true, opt.Logger)
	scripts := opt.Preload
	if scripts == nil {
		scripts = luasrc.All
	}
	if err := c.LoadScripts(ctx, scripts...); err != nil {
		rc.Close()
		return nil, err
	}
	return c, nil
}

// standaloneUnlessCluster checks a cluster client built from one seed:
// rueidis takes any server that answers CLUSTER SLOTS for a cluster, and
// some that are not (miniredis, the embedded server, answers as a one-node
// cluster) would then be addressed as one. As backend/goredis does, the
// server's own INFO cluster decides: without cluster_enabled:1 (or without
// an answer to it) the client is rebuilt as a standalone one. So the
// embedded server needs no option of its own.
func standaloneUnlessCluster(ctx context.Context, rc rueidis.Client, co rueidis.ClientOption) (rueidis.Client, error) {
	info, err := rc.Do(ctx, rc.B().Info().Section("cluster").Build()).ToString()
	if err == nil && strings.Contains(info, "cluster_enabled:1") {
		return rc, nil
	}
	var rerr *rueidis.RedisError
	if err != nil && !errors.As(err, &rerr) {
		rc.Close()
		return nil, err // not the server's answer: the network or ctx failed
	}
	rc.Close()
	co.ForceSingleClient = true
	return dial(ctx, co)
}

// dial runs rueidis.NewClient, which takes no context, so that ctx can cut
// the wait short; a client that arrives after ctx ended is closed.
func dial(ctx context.Context, co rueidis.ClientOption) (rueidis.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type result struct {
		c   rueidis.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := rueidis.NewClient(co)
		if err != nil && c != nil {
			// With ForceSingleClient, rueidis returns a client along with
			// the dial error, to connect later; New wants a working one.
			c.Close()
			c = nil
		}
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// NewFromClient wraps a rueidis client the caller already owns. Close of the
// returned Client stops its subscriptions but leaves rc open: its owner
// closes it. Scripts are not preloaded; call [Client.LoadScripts] if
// wanted (EVALSHA falls back to EVAL without it). On miniredis, rc must have
// been built with DisableCache and AlwaysRESP2.
func NewFromClient(rc rueidis.Client) *Client {
	return newClient(rc, false, nil)
}

func newClient(rc rueidis.Client, owned bool, log *slog.Logger) *Client {
	if log == nil {
		log = slog.Default()
	}
	return &Client{rc: rc, owned: owned, log: log, subs: make(map[any]context.CancelFunc)}
}

// Raw returns the underlying rueidis client, for what the port does not
// cover. Do not close it; do not use it after Close.
func (c *Client) Raw() rueidis.Client { return c.rc }

// Cluster reports whether the client talks to a Redis Cluster. A Client
// over no rueidis client (NewFromClient(nil), for code that never sends a
// command) is not one: presence.New asks while choosing its pub/sub mode.
func (c *Client) Cluster() bool { return c.rc != nil && c.rc.Mode() == rueidis.ClientModeCluster }

// Close stops every subscription, waiting for its handler to return, then
// closes the rueidis client (unless it came from NewFromClient). It is
// idempotent and safe to call concurrently; afterwards every method returns
// backend.ErrClosed. Do not call it from a subscription handler.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed.Store(true)
		stops := make([]context.CancelFunc, 0, len(c.subs))
		for _, stop := range c.subs {
			stops = append(stops, stop)
		}
		c.mu.Unlock()
		for _, stop := range stops {
			stop()
		}
		c.wg.Wait()
		if c.owned {
			c.rc.Close()
		}
	})
	return nil
}

// track registers a subscription (any comparable key) and the function
// that stops it; false once the client is closed.
func (c *Client) track(s any, stop context.CancelFunc) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.subs[s] = stop
	c.wg.Add(1)
	return true
}

// firstAttempt runs the first connection attempt of a tracked
// subscription s. ctx bounds it, and so does the subscription's life, which
// Close of the client ends. When it fails, s is stopped and untracked, and
// the error is ErrClosed if the client closed meanwhile.
func (c *Client) firstAttempt(ctx context.Context, s any, life context.Context, stop context.CancelFunc, attempt func(context.Context) error) error {
	cctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(life, cancel)
	err := attempt(cctx)
	unhook()
	cancel()
	if err != nil {
		stop()
		c.untrack(s)
		if c.closed.Load() {
			return backend.ErrClosed
		}
	}
	return err
}

// untrack is the last thing a subscription's goroutine does.
func (c *Client) untrack(s any) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
	c.wg.Done()
}

// wrapErr wraps a non-Redis error (network, context, closed client) of a
// call made with ctx. When ctx has ended, its error is in the chain even if
// rueidis reported the end differently (an i/o timeout, a closed pipe).
func (c *Client) wrapErr(ctx context.Context, err error) error {
	if c.closed.Load() && errors.Is(err, rueidis.ErrClosing) {
		return fmt.Errorf("%w: %w", backend.ErrClosed, err)
	}
	cerr := ctx.Err()
	if cerr == nil {
		// A dial or read bounded by ctx's deadline can fail on the clock
		// before ctx's own timer has marked it done (seen on a loaded
		// machine: "dial tcp: i/o timeout" with ctx.Err() still nil).
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("backend/rueidis: %w: %w", cerr, err)
	}
	return fmt.Errorf("backend/rueidis: %w", err)
}
