// Package counting decorates a backend.Client to count round trips, the
// unit the strategies are compared in: tests assert that the lua heartbeat
// costs exactly one, and the benchmarks report round trips per operation.
package counting

import (
	"context"
	"sync/atomic"

	"github.com/realtime-message/presence/backend"
)

// Client counts the round trips made through it: one per Do (a pipeline is
// one round trip however many commands it holds), and for Watch one for
// WATCH, one per read, and one for MULTI/EXEC when the function queued
// commands. Commands counts commands sent. Safe for concurrent use.
type Client struct {
	backend.Client
	roundTrips atomic.Int64
	commands   atomic.Int64
}

var (
	_ backend.Client   = (*Client)(nil)
	_ backend.FlatDoer = (*Client)(nil)
)

// New wraps c.
func New(c backend.Client) *Client { return &Client{Client: c} }

// RoundTrips returns the round trips so far.
func (c *Client) RoundTrips() int64 { return c.roundTrips.Load() }

// Commands returns the commands sent so far.
func (c *Client) Commands() int64 { return c.commands.Load() }

// Reset zeroes the counters.
func (c *Client) Reset() {
	c.roundTrips.Store(0)
	c.commands.Store(0)
}

func (c *Client) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	c.roundTrips.Add(1)
	c.commands.Add(int64(len(cmds)))
	return c.Client.Do(ctx, cmds...)
}

// DoFlat counts like Do and keeps the wrapped client's fast path, if it has
// one (see backend.FlatDoer).
func (c *Client) DoFlat(ctx context.Context, cmd backend.Cmd) (backend.FlatReply, error) {
	c.roundTrips.Add(1)
	c.commands.Add(1)
	return backend.DoFlat(ctx, c.Client, cmd)
}

func (c *Client) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	c.roundTrips.Add(1) // WATCH
	c.commands.Add(1)
	return c.Client.Watch(ctx, keys, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		cmds, err := fn(ctx, countingTx{tx, c})
		if err == nil && len(cmds) > 0 {
			c.roundTrips.Add(1) // MULTI ... EXEC, pipelined
			c.commands.Add(int64(len(cmds) + 2))
		}
		return cmds, err
	})
}

func (c *Client) Publish(ctx context.Context, channel, payload string) error {
	c.roundTrips.Add(1)
	c.commands.Add(1)
	return c.Client.Publish(ctx, channel, payload)
}

type countingTx struct {
	backend.Tx
	c *Client
}

func (t countingTx) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	t.c.roundTrips.Add(1)
	t.c.commands.Add(int64(len(cmds)))
	return t.Tx.Do(ctx, cmds...)
}
