package goredis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

var _ backend.ReplicaWaiter = (*Client)(nil)

// WaitingReplicas implements backend.ReplicaWaiter. Do of the returned
// Client sends the commands and WAIT as one pipeline to the node client
// that serves them (the standalone client, or ClusterClient.MasterForKey on
// a cluster): a go-redis pipeline runs on one connection. A node client
// does not follow MOVED: such a reply is returned as it is (the write did
// not run) and the cluster's slot map is reloaded, so the next call goes
// to the new master.
func (c *Client) WaitingReplicas(w backend.ReplicaWait) (backend.Client, error) {
	if err := w.Check(); err != nil {
		return nil, err
	}
	switch c.rc.(type) {
	case *redis.Client, *redis.ClusterClient:
	default:
		return nil, fmt.Errorf("goredis: WAIT after writes needs a *redis.Client or *redis.ClusterClient, not %T", c.rc)
	}
	return &waitingClient{Borrowed: backend.Borrowed{Client: c}, c: c, w: w}, nil
}

// waitingClient overrides Do and Watch; Publish and PSubscribe are c's.
type waitingClient struct {
	backend.Borrowed
	c *Client
	w backend.ReplicaWait
}

func (wc *waitingClient) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	c := wc.c
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	var key string
	for _, cmd := range cmds {
		if len(cmd.Keys) > 0 {
			key = cmd.Keys[0]
			break
		}
	}
	if key == "" {
		return c.Do(ctx, cmds...) // nothing written to a key: nothing to wait for
	}
	if err := backend.CheckSlots(cmds); err != nil {
		return nil, err
	}
	ctx = c.tag(ctx)
	node, _ := c.rc.(*redis.Client)
	if c.cluster != nil {
		for _, cmd := range cmds {
			if len(cmd.Keys) > 0 && backend.KeySlot(cmd.Keys[0]) != backend.KeySlot(key) {
				return nil, fmt.Errorf("%w: WAIT after writes needs one slot per pipeline: %q and %q", backend.ErrCrossSlot, key, cmd.Keys[0])
			}
		}
		var err error
		if node, err = c.cluster.MasterForKey(ctx, key); err != nil {
			return nil, c.closedErr(wrapErr(ctx, err))
		}
	}
	rcs := newCmds(ctx, append(cmds[:len(cmds):len(cmds)], wc.w.Cmd()))
	pipe := node.Pipeline()
	for _, rc := range rcs {
		_ = pipe.Process(ctx, rc)
	}
	_, err := pipe.Exec(ctx)
	r, err := replies(ctx, rcs, err)
	if err != nil {
		return nil, c.closedErr(err) // reloads the slot map, see reload.go
	}
	n := len(cmds)
	for _, reply := range r[:n] {
		if backend.IsRedisError(reply.Err, "MOVED") || backend.IsRedisError(reply.Err, "ASK") {
			c.reloadSoon()
			break
		}
	}
	if err := wc.w.CheckWait(cmds, r[:n], r[n]); err != nil {
		return nil, err
	}
	return r[:n], nil
}

func (wc *waitingClient) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	return wc.c.watchTx(ctx, keys, fn, &wc.w)
}
