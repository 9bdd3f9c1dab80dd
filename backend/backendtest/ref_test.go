package backendtest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendtest"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	redistest.Main(m)
}

// quietLogger drops go-redis's log lines about connections the suite
// breaks on purpose (deadlines, Close while busy).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// TestSuiteAgainstReference runs the suite against refClient, a minimal
// go-redis adapter written here only to show that the suite passes for a
// correct adapter on every kind of server. It is not backend/goredis.
func TestSuiteAgainstReference(t *testing.T) {
	for _, s := range redistest.Targets(t) {
		t.Run(s.Name, func(t *testing.T) {
			backendtest.Run(t, backendtest.Target{
				Name: s.Name, Addrs: s.Addrs, Cluster: s.Cluster, Embedded: s.Embedded,
				NewClient: func(t testing.TB) backend.Client { return newRef(s) },
			})
		})
	}
}

type refClient struct {
	c redis.UniversalClient

	mu     sync.Mutex
	closed bool
	subs   map[*refSub]struct{}
}

func newRef(s *redistest.Server) *refClient {
	var c redis.UniversalClient
	if s.Cluster {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: s.Addrs, Protocol: 2, DisableIdentity: true, ContextTimeoutEnabled: true})
	} else {
		c = redis.NewClient(&redis.Options{Addr: s.Addr(), Protocol: 2, DisableIdentity: true, ContextTimeoutEnabled: true})
	}
	return &refClient{c: c, subs: map[*refSub]struct{}{}}
}

func (r *refClient) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func args(c backend.Cmd) []any {
	line := c.Line()
	out := make([]any, len(line))
	for i, w := range line {
		out[i] = w
	}
	return out
}

// ctxErr reports a failure caused by ctx as ctx's error.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func convert(v any, err error) (backend.Reply, error) {
	var re redis.Error
	switch {
	case errors.Is(err, redis.Nil):
		return backend.NilReply(), nil
	case errors.As(err, &re):
		return backend.ErrReply(re.Error()), nil
	case err != nil:
		return backend.Reply{}, err
	}
	switch v := v.(type) {
	case nil:
		return backend.NilReply(), nil
	case string:
		return backend.StrReply(v), nil
	case int64:
		return backend.IntReply(v), nil
	case []any:
		elems := make([]backend.Reply, len(v))
		for i, e := range v {
			var err error
			if ee, ok := e.(error); ok {
				elems[i], err = convert(nil, ee)
			} else {
				elems[i], err = convert(e, nil)
			}
			if err != nil {
				return backend.Reply{}, err
			}
		}
		return backend.ArrReply(elems...), nil
	}
	return backend.Reply{}, fmt.Errorf("ref: unexpected reply type %T", v)
}

func run(ctx context.Context, p redis.Pipeliner, cmds []backend.Cmd) ([]backend.Reply, error) {
	rc := make([]*redis.Cmd, len(cmds))
	for i, c := range cmds {
		rc[i] = p.Do(ctx, args(c)...)
	}
	p.Exec(ctx)
	out := make([]backend.Reply, len(cmds))
	for i, c := range rc {
		var err error
		if out[i], err = convert(c.Result()); err != nil {
			return nil, ctxErr(ctx, err)
		}
	}
	return out, nil
}

func (r *refClient) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	if r.isClosed() {
		return nil, backend.ErrClosed
	}
	if err := backend.CheckSlots(cmds); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return run(ctx, r.c.Pipeline(), cmds)
}

type refTx struct{ tx *redis.Tx }

func (t refTx) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	return run(ctx, t.tx.Pipeline(), cmds)
}

func (r *refClient) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	if r.isClosed() {
		return nil, backend.ErrClosed
	}
	if err := backend.SameSlot(keys); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []backend.Reply
	var fnErr error
	err := r.c.Watch(ctx, func(tx *redis.Tx) error {
		cmds, err := fn(ctx, refTx{tx})
		if err != nil {
			fnErr = err
			return err
		}
		if len(cmds) == 0 {
			return nil
		}
		if err := backend.CheckSlots(cmds); err != nil {
			return err
		}
		rc := make([]*redis.Cmd, len(cmds))
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i, c := range cmds {
				rc[i] = p.Do(ctx, args(c)...)
			}
			return nil
		})
		if errors.Is(err, redis.TxFailedErr) {
			return backend.ErrTxAborted
		}
		out = make([]backend.Reply, len(cmds))
		for i, c := range rc {
			if out[i], err = convert(c.Result()); err != nil {
				return err
			}
		}
		return nil
	}, keys...)
	if fnErr != nil && err == fnErr {
		return nil, fnErr
	}
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return out, nil
}

func (r *refClient) Publish(ctx context.Context, channel, payload string) error {
	if r.isClosed() {
		return backend.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c := redis.Cmdable(r.c)
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		// PUBLISH has no key, so go-redis would pick any node; publishing
		// on the channel's node keeps one channel's messages in order.
		m, err := cc.MasterForKey(ctx, channel)
		if err != nil {
			return ctxErr(ctx, err)
		}
		c = m
	}
	return ctxErr(ctx, c.Publish(ctx, channel, payload).Err())
}

type refSub struct {
	r    *refClient
	ps   *redis.PubSub
	done chan struct{}
	once sync.Once
}

func (r *refClient) PSubscribe(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	if r.isClosed() {
		return nil, backend.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ps := r.c.PSubscribe(ctx, pattern)
	if _, err := ps.Receive(ctx); err != nil { // the confirmation
		ps.Close()
		return nil, ctxErr(ctx, err)
	}
	s := &refSub{r: r, ps: ps, done: make(chan struct{})}
	ch := ps.Channel()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		ps.Close()
		return nil, backend.ErrClosed
	}
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	go func() {
		defer close(s.done)
		for m := range ch {
			h(backend.Message{Pattern: m.Pattern, Channel: m.Channel, Payload: m.Payload})
		}
	}()
	return s, nil
}

func (s *refSub) Close() error {
	s.once.Do(func() {
		s.ps.Close()
		<-s.done
		s.r.mu.Lock()
		delete(s.r.subs, s)
		s.r.mu.Unlock()
	})
	return nil
}

func (r *refClient) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	subs := make([]*refSub, 0, len(r.subs))
	for s := range r.subs {
		subs = append(subs, s)
	}
	r.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	return r.c.Close()
}
