package rueidis

import (
	"context"

	"github.com/realtime-message/presence/backend"
)

var _ backend.ReplicaWaiter = (*Client)(nil)

// WaitingReplicas implements backend.ReplicaWaiter. Do of the returned
// Client sends the pipeline and WAIT on a dedicated connection (one from
// rueidis's pool, bound to the slot's master on a cluster): on the shared
// auto-pipelined connection WAIT would block every caller's commands
// behind it, and rueidis's cluster client would follow a MOVED write to the
// new master while WAIT still ran on the old one. A MOVED reply is returned
// as it is (the write did not run) and makes rueidis refresh its slot map.
func (c *Client) WaitingReplicas(w backend.ReplicaWait) (backend.Client, error) {
	if err := w.Check(); err != nil {
		return nil, err
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
	if !hasKeys(cmds) {
		return c.Do(ctx, cmds...) // nothing written to a key: nothing to wait for
	}
	if err := validate(cmds); err != nil {
		return nil, err
	}
	if c.Cluster() {
		if err := backend.SameSlot(keysOf(cmds)); err != nil {
			return nil, err
		}
	}
	dc, release, err := c.dedicate(ctx)
	if err != nil {
		return nil, err
	}
	all := append(cmds[:len(cmds):len(cmds)], wc.w.Cmd())
	replies, err := c.doMulti(ctx, dc, all)
	if err != nil {
		dc.Close() // a WAIT cut short may still block it
		return nil, err
	}
	release()
	n := len(cmds)
	if err := wc.w.CheckWait(cmds, replies[:n], replies[n]); err != nil {
		return nil, err
	}
	return replies[:n], nil
}

func (wc *waitingClient) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	return wc.c.watchTx(ctx, keys, fn, &wc.w)
}

func hasKeys(cmds []backend.Cmd) bool {
	for _, c := range cmds {
		if len(c.Keys) > 0 {
			return true
		}
	}
	return false
}

func keysOf(cmds []backend.Cmd) []string {
	var keys []string
	for _, c := range cmds {
		if len(c.Keys) > 0 {
			keys = append(keys, c.Keys[0])
		}
	}
	return keys
}
