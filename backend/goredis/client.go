// Package goredis implements backend.Client on github.com/redis/go-redis/v9,
// for a standalone server and for a Redis Cluster.
//
// Things of go-redis this adapter relies on or works around:
//
//   - Cluster routing. go-redis finds the key of a generic command from
//     COMMAND info it fetches lazily, and guesses "the first argument" while
//     that cache is cold. Our commands say where their keys are
//     (backend.Cmd.Keys), so each one is sent with its first key position set
//     (Cmd.SetFirstKeyPos) and goes to the node owning that slot, EVALSHA
//     included. PUBLISH is routed by its channel (see Client.Publish), other
//     keyless commands go to any node.
//   - Scripts. go-redis's Script.Run falls back from EVALSHA to EVAL, but
//     not inside a pipeline, where a NOSCRIPT reply is just a reply. New
//     loads the scripts on every master (ClusterClient.ForEachMaster), and
//     backend.Scripts resends NOSCRIPT calls with EVAL.
//   - Errors. A server error reply implements redis.Error, but so do
//     redis.Nil and redis.TxFailedErr, which are mapped to a nil reply and
//     backend.ErrTxAborted first. Any other error (network, pool, context)
//     fails the whole call.
//   - Deadlines. ContextTimeoutEnabled is set, or go-redis would ignore a
//     context deadline on the socket; and since a socket deadline surfaces
//     as an i/o timeout, errors are wrapped so that errors.Is(err,
//     context.DeadlineExceeded) holds when the context expired.
//   - Retries. go-redis resends a command after a network error (MaxRetries,
//     default 3) and dials up to five times per attempt, 100ms apart; so an
//     unreachable server fails a call after about a second or more unless
//     the context ends it sooner, and a write whose reply was lost may run
//     twice (Options.MaxRetries = -1 prevents that).
//   - Pub/sub. PubSub.Channel starts goroutines that may outlive Close by up
//     to a minute and drops messages a slow reader does not take within a
//     minute; each subscription here runs its own Receive loop instead.
//     go-redis reconnects and resubscribes after a connection error on its
//     own; a silently dead peer is noticed by TCP keep-alive (about 45s).
//   - Channel subscriptions (channels.go). PubSub.Subscribe returns before
//     the server confirms, so Add waits for the confirmation the reader
//     receives. After a reconnect go-redis resubscribes every shard channel
//     in one SSUBSCRIBE, which a cluster refuses (CROSSSLOT) when they span
//     slots: they are sent again slot by slot. The SUNSUBSCRIBE a master
//     pushes when a slot leaves it reaches Receive only (ReceiveMessage and
//     Channel drop it), hence the readers use Receive.
package goredis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

// Client is a backend.Client over a go-redis client. It is safe for
// concurrent use by many goroutines.
type Client struct {
	rc      redis.UniversalClient
	cluster *redis.ClusterClient // rc when it is a cluster client, else nil

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	mu   sync.Mutex                        // guards subs, and closed transitions against PSubscribe
	subs map[backend.Subscription]struct{} // pattern and channel subscriptions, closed by Close

	sink *logSink // where go-redis lines about this client go; nil: go-redis's own logger

	reload reloader // slot map reloads after connection failures (reload.go)
}

var _ backend.Client = (*Client)(nil)

// NewFromClient wraps a go-redis client (*redis.Client, *redis.ClusterClient
// or another redis.UniversalClient). The Client takes ownership: its Close
// closes rc. Nothing is preloaded (see LoadScripts), and rc is used as
// configured: set ContextTimeoutEnabled on it, or go-redis bounds socket
// reads by its ReadTimeout instead of the context's deadline.
func NewFromClient(rc redis.UniversalClient) *Client {
	c := &Client{rc: rc, subs: make(map[backend.Subscription]struct{})}
	c.cluster, _ = rc.(*redis.ClusterClient)
	return c
}

// Raw returns the underlying go-redis client, for what the port does not
// cover (pool statistics, hooks). Commands sent through it bypass the slot
// checks of Do.
func (c *Client) Raw() redis.UniversalClient { return c.rc }

// LoadScripts loads scripts with SCRIPT LOAD on the server, or on every
// master of a cluster, and checks that the server's SHA1 of each is the
// generated one. Call it after adding masters or a failover if you want to
// spare the first calls their NOSCRIPT retry.
func (c *Client) LoadScripts(ctx context.Context, scripts ...*luasrc.Script) error {
	if c.closed.Load() {
		return backend.ErrClosed
	}
	if len(scripts) == 0 {
		return nil
	}
	load := func(ctx context.Context, node *redis.Client) error {
		pipe := node.Pipeline()
		cmds := make([]*redis.StringCmd, len(scripts))
		for i, s := range scripts {
			cmds[i] = pipe.ScriptLoad(ctx, s.Source)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("SCRIPT LOAD on %s: %w", node.Options().Addr, err)
		}
		for i, s := range scripts {
			if got := cmds[i].Val(); got != s.SHA1 {
				return fmt.Errorf("script %s: %s computes SHA1 %s, the generated one is %s (run go generate ./luasrc)",
					s.Name, node.Options().Addr, got, s.SHA1)
			}
		}
		return nil
	}
	ctx = c.tag(ctx)
	var err error
	switch rc := c.rc.(type) {
	case *redis.ClusterClient:
		err = rc.ForEachMaster(ctx, load)
	case *redis.Client:
		err = load(ctx, rc)
	default:
		return fmt.Errorf("backend/goredis: cannot load scripts through a %T", c.rc)
	}
	if err != nil {
		return fmt.Errorf("backend/goredis: loading scripts: %w", annotate(ctx, err))
	}
	return nil
}

// Do implements backend.Pipeliner. One command is sent as it is, several
// as one go-redis pipeline (one per node on a cluster, in parallel).
func (c *Client) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if err := backend.CheckSlots(cmds); err != nil {
		return nil, err
	}
	r, err := run(c.tag(ctx), c.rc, cmds)
	if err != nil {
		return nil, c.closedErr(err)
	}
	return r, nil
}

// processor is what run needs of a go-redis client or transaction.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
	Pipeline() redis.Pipeliner
}

// run sends cmds through p and converts the replies.
func run(ctx context.Context, p processor, cmds []backend.Cmd) ([]backend.Reply, error) {
	switch len(cmds) {
	case 0:
		return nil, nil
	case 1:
		rc := newCmd(ctx, cmds[0])
		_ = p.Process(ctx, rc)
		return replies(ctx, []*redis.Cmd{rc}, nil)
	}
	rcs := newCmds(ctx, cmds)
	pipe := p.Pipeline()
	for _, rc := range rcs {
		_ = pipe.Process(ctx, rc)
	}
	_, err := pipe.Exec(ctx)
	return replies(ctx, rcs, err)
}

func newCmds(ctx context.Context, cmds []backend.Cmd) []*redis.Cmd {
	rcs := make([]*redis.Cmd, len(cmds))
	for i, cmd := range cmds {
		rcs[i] = newCmd(ctx, cmd)
	}
	return rcs
}

// newCmd turns a backend.Cmd into a go-redis command that knows where its
// first key is, so a cluster client routes it by that key.
func newCmd(ctx context.Context, cmd backend.Cmd) *redis.Cmd {
	line := cmd.Line()
	args := make([]any, len(line))
	for i, w := range line {
		args[i] = w
	}
	rc := redis.NewCmd(ctx, args...)
	switch pos := 1 + len(cmd.Pre); {
	case len(cmd.Keys) > 0 && pos <= 127:
		rc.SetFirstKeyPos(int8(pos))
	case len(line) > 1 && strings.EqualFold(cmd.Name, "PUBLISH"):
		// Route by the channel, as a key: see Publish.
		rc.SetFirstKeyPos(1)
	}
	return rc
}

// replies converts executed commands. execErr is the pipeline's own error,
// consulted in case go-redis failed the pipeline without marking its
// commands.
func replies(ctx context.Context, rcs []*redis.Cmd, execErr error) ([]backend.Reply, error) {
	out := make([]backend.Reply, len(rcs))
	for i, rc := range rcs {
		r, err := toReply(rc.Val(), rc.Err())
		if err != nil {
			return nil, wrapErr(ctx, err)
		}
		out[i] = r
	}
	if execErr != nil && execErr != redis.Nil && !isServerError(execErr) {
		return nil, wrapErr(ctx, execErr)
	}
	return out, nil
}

// Publish implements backend.PubSub. On a cluster the cluster bus brings a
// message to subscribers on every node, whichever node it was published on;
// but messages published on different nodes may overtake each other on the
// way. So PUBLISH is sent to the master of the channel's slot, as if the
// channel were a key, here and in Do: messages of one channel then keep
// their order, also relative to those that scripts publish on channels
// tagged like their keys (prs:{room:R}:events).
func (c *Client) Publish(ctx context.Context, channel, payload string) error {
	if c.closed.Load() {
		return backend.ErrClosed
	}
	cmd := redis.NewCmd(ctx, "publish", channel, payload)
	cmd.SetFirstKeyPos(1)
	_ = c.rc.Process(c.tag(ctx), cmd)
	err := toErr(ctx, cmd.Err())
	if _, ok := err.(*backend.RedisError); ok {
		return err
	}
	return c.closedErr(err)
}

// closedErr makes a failure of a call that Close overtook (go-redis closes
// connections in use) report backend.ErrClosed.
func (c *Client) closedErr(err error) error {
	c.maybeReload(err)
	if err != nil && c.closed.Load() && !errors.Is(err, backend.ErrClosed) {
		return fmt.Errorf("%w: %w", backend.ErrClosed, err)
	}
	return err
}

// Close implements backend.Client: it closes every live subscription,
// waiting for its handler, then the go-redis client. Idempotent; a
// concurrent second call waits for the first.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed.Store(true)
		subs := make([]backend.Subscription, 0, len(c.subs))
		for s := range c.subs {
			subs = append(subs, s)
		}
		c.mu.Unlock()
		for _, s := range subs {
			_ = s.Close()
		}
		c.reload.wg.Wait()
		c.closeErr = c.rc.Close()
		if c.sink != nil {
			router.release(c.sink)
		}
	})
	return c.closeErr
}

// toErr converts the error of a command whose reply is not needed.
func toErr(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case isServerError(err):
		return &backend.RedisError{Msg: err.Error()}
	}
	return wrapErr(ctx, err)
}

// isServerError reports whether err is an error reply of the server (and
// not redis.Nil, which go-redis also marks as redis.Error). Only the error
// itself counts: go-redis wraps a server error only when reporting a
// failure of its own (a failed AUTH while connecting, an unusable
// connection), and those are not replies to our command.
func isServerError(err error) bool {
	if err == redis.Nil {
		return false
	}
	_, ok := err.(redis.Error)
	return ok
}

// wrapErr wraps a client-side failure for returning it: see annotate.
func wrapErr(ctx context.Context, err error) error {
	return fmt.Errorf("backend/goredis: %w", annotate(ctx, err))
}

// annotate adds to a client-side failure what errors.Is should find:
// backend.ErrClosed when go-redis was closed, and the context's error when
// it is done (go-redis reports an expired deadline as a socket i/o timeout,
// which is not context.DeadlineExceeded).
func annotate(ctx context.Context, err error) error {
	if errors.Is(err, redis.ErrClosed) && !errors.Is(err, backend.ErrClosed) {
		err = fmt.Errorf("%w: %w", backend.ErrClosed, err)
	}
	cerr := ctx.Err()
	if cerr == nil {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}
