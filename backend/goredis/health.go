package goredis

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// Cluster reports whether the client talks to a Redis Cluster.
func (c *Client) Cluster() bool { return c.cluster != nil }

// EachMaster sends cmds as one pipeline to every master the client routes
// to (the one server when standalone), in parallel, and then calls fn once
// per master, in address order, with its replies or the error that kept it
// from answering. A health check uses it: Do would reach only one node. It
// fails only when the masters cannot be listed.
func (c *Client) EachMaster(ctx context.Context, cmds []backend.Cmd, fn func(addr string, replies []backend.Reply, err error)) error {
	if c.closed.Load() {
		return backend.ErrClosed
	}
	ctx = c.tag(ctx)
	type result struct {
		addr    string
		replies []backend.Reply
		err     error
	}
	var (
		mu      sync.Mutex
		results []result
	)
	each := func(ctx context.Context, node *redis.Client) error {
		r, err := run(ctx, node, cmds)
		mu.Lock()
		results = append(results, result{node.Options().Addr, r, err})
		mu.Unlock()
		return nil // one master's failure is its result, not the walk's
	}
	switch rc := c.rc.(type) {
	case *redis.ClusterClient:
		if err := rc.ForEachMaster(ctx, each); err != nil {
			return wrapErr(ctx, err)
		}
	case *redis.Client:
		_ = each(ctx, rc)
	default:
		return fmt.Errorf("backend/goredis: cannot address the masters of a %T", c.rc)
	}
	sort.Slice(results, func(i, j int) bool { return results[i].addr < results[j].addr })
	for _, r := range results {
		fn(r.addr, r.replies, r.err)
	}
	return nil
}

var (
	_ backend.MasterRunner      = (*Client)(nil)
	_ backend.SubscriptionState = (*subscription)(nil)
	_ backend.Resubscriber      = (*subscription)(nil)
)
