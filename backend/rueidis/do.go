package rueidis

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// ErrConnCommand reports a command that would change the state of a
// connection shared by every caller (MULTI, WATCH, SELECT, SUBSCRIBE, ...).
// On an auto-pipelined connection such a command would leak into other
// callers' commands; use Client.Watch for transactions and
// Client.PSubscribe for subscriptions.
var ErrConnCommand = errors.New("backend/rueidis: command changes connection state; use Watch for transactions and PSubscribe for subscriptions")

// connCommands change the state of the connection they are sent on.
var connCommands = map[string]bool{
	"MULTI": true, "EXEC": true, "DISCARD": true, "WATCH": true, "UNWATCH": true,
	"SUBSCRIBE": true, "PSUBSCRIBE": true, "SSUBSCRIBE": true,
	"UNSUBSCRIBE": true, "PUNSUBSCRIBE": true, "SUNSUBSCRIBE": true,
	"MONITOR": true, "SELECT": true, "HELLO": true, "AUTH": true, "QUIT": true,
	"RESET": true, "SYNC": true, "PSYNC": true, "READONLY": true, "READWRITE": true,
}

// blockingCommands may hold a connection for a long time; rueidis sends
// them on a pooled connection of their own instead of the shared one.
var blockingCommands = map[string]bool{
	"BLPOP": true, "BRPOP": true, "BRPOPLPUSH": true, "BLMOVE": true, "BLMPOP": true,
	"BZPOPMIN": true, "BZPOPMAX": true, "BZMPOP": true, "WAIT": true, "WAITAOF": true,
}

// validate checks cmds before anything is built: rueidis's builder panics
// on an empty name, on any name ending in SUBSCRIBE, and (in a cluster) on
// keys of different slots.
func validate(cmds []backend.Cmd) error {
	if err := backend.CheckSlots(cmds); err != nil {
		return err
	}
	for i, c := range cmds {
		if c.Name == "" {
			return fmt.Errorf("backend/rueidis: command %d has no name", i)
		}
		if name := strings.ToUpper(c.Name); connCommands[name] || strings.HasSuffix(name, "SUBSCRIBE") {
			return fmt.Errorf("%w: %s", ErrConnCommand, c.Name)
		}
	}
	return nil
}

// build turns validated cmds into rueidis commands.
func build(b rueidis.Builder, cmds []backend.Cmd) []rueidis.Completed {
	out := make([]rueidis.Completed, len(cmds))
	for i, c := range cmds {
		out[i] = buildOne(b, c)
	}
	return out
}

func buildOne(b rueidis.Builder, c backend.Cmd) rueidis.Completed {
	// Pre goes in through Args: Arbitrary(append(name, pre...)) would
	// allocate a slice per command only to be copied into rueidis's.
	a := b.Arbitrary(c.Name).Args(c.Pre...).Keys(c.Keys...).Args(c.Args...)
	if isBlocking(c) {
		return a.Blocking()
	}
	return a.Build()
}

func isBlocking(c backend.Cmd) bool {
	name := strings.ToUpper(c.Name)
	if blockingCommands[name] {
		return true
	}
	if name == "XREAD" || name == "XREADGROUP" {
		for _, a := range c.Pre {
			if strings.EqualFold(a, "BLOCK") {
				return true
			}
		}
	}
	return false
}

// Do sends cmds as one pipeline through the shared auto-pipelined
// connection(s); in a cluster rueidis splits the pipeline by node and keeps
// the replies in order. See backend.Pipeliner.
func (c *Client) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if err := validate(cmds); err != nil {
		return nil, err
	}
	if c.rc.Mode() != rueidis.ClientModeCluster {
		return c.doMulti(ctx, c.rc, cmds)
	}
	// rueidis's cluster client panics on a pipeline that mixes keyless
	// commands (PUBLISH, SCRIPT, TIME) with keyed commands of several slots.
	// Send such a pipeline as consecutive runs that it accepts, one after
	// the other, so a PUBLISH still follows the writes before it.
	replies := make([]backend.Reply, 0, len(cmds))
	for _, run := range clusterRuns(cmds) {
		r, err := c.doMulti(ctx, c.rc, run)
		if err != nil {
			return nil, err
		}
		replies = append(replies, r...)
	}
	return replies, nil
}

// clusterRuns splits cmds into the fewest consecutive runs each of which
// is either free of keyless commands or keyed in at most one slot.
func clusterRuns(cmds []backend.Cmd) [][]backend.Cmd {
	var runs [][]backend.Cmd
	start, slot, keyless, multiSlot := 0, -1, false, false
	for i, cmd := range cmds {
		s := -1
		if len(cmd.Keys) > 0 {
			s = backend.KeySlot(cmd.Keys[0])
		}
		k, m := keyless, multiSlot
		if s < 0 {
			k = true
		} else if slot >= 0 && s != slot {
			m = true
		}
		if k && m { // adding cmd would mix: close the run before it
			runs = append(runs, cmds[start:i])
			start, slot, keyless, multiSlot = i, s, s < 0, false
			continue
		}
		keyless, multiSlot = k, m
		if slot < 0 {
			slot = s
		}
	}
	return append(runs, cmds[start:])
}

// doMulti builds and sends cmds on cc (the shared client or a dedicated
// one) and converts the results. A panic in rueidis (its builder and its
// cluster routing panic rather than return errors) becomes an error.
func (c *Client) doMulti(ctx context.Context, cc rueidis.CoreClient, cmds []backend.Cmd) (replies []backend.Reply, err error) {
	defer func() {
		if p := recover(); p != nil {
			replies, err = nil, fmt.Errorf("backend/rueidis: rueidis refused the pipeline: %v", p)
		}
	}()
	results := cc.DoMulti(ctx, build(cc.B(), cmds)...)
	if len(results) != len(cmds) {
		return nil, fmt.Errorf("backend/rueidis: %d replies for %d commands", len(results), len(cmds))
	}
	return c.toReplies(ctx, cmds, results)
}

// toReplies converts results; any non-Redis error fails the whole call,
// since the port promises all replies or an error.
func (c *Client) toReplies(ctx context.Context, cmds []backend.Cmd, results []rueidis.RedisResult) ([]backend.Reply, error) {
	for _, r := range results {
		if err := r.NonRedisError(); err != nil {
			return nil, c.wrapErr(ctx, err)
		}
	}
	replies := make([]backend.Reply, len(results))
	for i, r := range results {
		m, _ := r.ToMessage()
		replies[i] = normalize(cmds[i], toReply(&m))
	}
	return replies, nil
}

var _ backend.FlatDoer = (*Client)(nil)

// DoFlat sends one command like Do, reading a reply that is an array of at
// most backend.MaxFlat scalars straight from the rueidis message into the
// returned value: no []backend.Reply, no slice per array, no result slice
// of rueidis's DoMulti. See backend.FlatDoer.
func (c *Client) DoFlat(ctx context.Context, cmd backend.Cmd) (f backend.FlatReply, err error) {
	if c.closed.Load() {
		return f, backend.ErrClosed
	}
	one := [1]backend.Cmd{cmd}
	if err := validate(one[:]); err != nil {
		return f, err
	}
	defer func() {
		if p := recover(); p != nil {
			f, err = backend.FlatReply{}, fmt.Errorf("backend/rueidis: rueidis refused the command: %v", p)
		}
	}()
	res := c.rc.Do(ctx, buildOne(c.rc.B(), cmd))
	if err := res.NonRedisError(); err != nil {
		return backend.FlatReply{}, c.wrapErr(ctx, err)
	}
	m, _ := res.ToMessage()
	flatten(&f, cmd, &m)
	return f, nil
}

// flatten fills f from m: inline when m is an array of at most MaxFlat
// elements none of which is an aggregate, else the reply Do would give.
func flatten(f *backend.FlatReply, cmd backend.Cmd, m *rueidis.RedisMessage) {
	if m.IsArray() {
		elems, _ := m.ToArray()
		if fitsInline(elems) {
			f.Reply = backend.Reply{Kind: backend.KindArray}
			f.N = len(elems)
			for i := range elems {
				f.Inline[i] = toReply(&elems[i])
			}
			return
		}
	}
	f.Reply = normalize(cmd, toReply(m))
}

func fitsInline(elems []rueidis.RedisMessage) bool {
	if len(elems) == 0 || len(elems) > backend.MaxFlat {
		return false
	}
	for i := range elems {
		if elems[i].IsArray() || elems[i].IsMap() {
			return false
		}
	}
	return true
}
