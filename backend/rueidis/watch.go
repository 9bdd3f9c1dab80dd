package rueidis

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// Watch runs WATCH keys, fn, then MULTI, fn's commands and EXEC as one
// pipeline, all on one dedicated connection taken from rueidis's pool (a
// cluster client binds it to the node of keys' slot). The connection goes
// back to the pool only in a known state (after EXEC or UNWATCH); after a
// network or context error, or a panic in fn, it is closed instead, so a
// stale WATCH can never leak into the next transaction.
//
// Keys must share one slot, and so must every keyed command fn sends through
// tx or returns: a transaction runs on one node. See backend.Transactor.
func (c *Client) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	return c.watchTx(ctx, keys, fn, nil)
}

// watchTx is Watch; with wait set, WAIT follows EXEC in the same pipeline
// (see WaitingReplicas).
func (c *Client) watchTx(ctx context.Context, keys []string, fn backend.TxFunc, wait *backend.ReplicaWait) ([]backend.Reply, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if len(keys) == 0 {
		return nil, errors.New("backend/rueidis: Watch needs at least one key")
	}
	if fn == nil {
		return nil, errors.New("backend/rueidis: Watch needs a TxFunc")
	}
	if err := backend.SameSlot(keys); err != nil {
		return nil, err
	}
	slot := backend.KeySlot(keys[0])

	dc, release, err := c.watch(ctx, keys)
	if err != nil {
		return nil, err
	}
	clean := false // the connection holds no WATCH or MULTI: it may be reused
	defer func() {
		if clean {
			release()
		} else {
			dc.Close()
		}
	}()

	t := &tx{c: c, dc: dc, slot: slot}
	cmds, err := fn(ctx, t)
	t.done.Store(true)
	if err == nil && len(cmds) > 0 {
		err = validateTx(cmds, slot)
	}
	if err != nil || len(cmds) == 0 {
		clean = unwatch(ctx, dc)
		return nil, err
	}

	results, err := execute(ctx, dc, cmds, wait)
	if err != nil {
		return nil, err
	}
	var waitReply rueidis.RedisResult
	if wait != nil {
		waitReply, results = results[len(results)-1], results[:len(results)-1]
	}
	for _, r := range results {
		if err := r.NonRedisError(); err != nil {
			return nil, c.wrapErr(ctx, err)
		}
	}
	// EXEC ran (or failed): either way the server has dropped the WATCH
	// and the MULTI state; a WAIT cut short may still block the connection.
	clean = wait == nil || waitReply.NonRedisError() == nil
	if err := c.resultErr(ctx, results[0]); err != nil {
		return nil, err
	}
	exec, _ := results[len(results)-1].ToMessage()
	switch {
	case exec.IsNil():
		return nil, backend.ErrTxAborted
	case exec.Error() != nil:
		// EXECABORT: a command was refused while queuing (wrong arity, an
		// unknown command, OOM); report that command's error.
		for i, r := range results[1 : len(results)-1] {
			if m, _ := r.ToMessage(); m.Error() != nil {
				return nil, fmt.Errorf("backend/rueidis: transaction discarded, %s refused: %w", cmds[i].Name, toReply(&m).Err)
			}
		}
		return nil, toReply(&exec).Err
	}
	elems, err := exec.ToArray()
	if err != nil || len(elems) != len(cmds) {
		return nil, fmt.Errorf("backend/rueidis: EXEC answered %s for %d commands", exec.String(), len(cmds))
	}
	replies := make([]backend.Reply, len(elems))
	for i := range elems {
		replies[i] = normalize(cmds[i], toReply(&elems[i]))
	}
	if wait != nil {
		if err := waitReply.NonRedisError(); err != nil {
			return nil, c.wrapErr(ctx, err)
		}
		m, _ := waitReply.ToMessage()
		if err := wait.CheckWait(cmds, replies, toReply(&m)); err != nil {
			return nil, err
		}
	}
	return replies, nil
}

// watch takes a dedicated connection and sends WATCH keys on it. A pooled
// connection can be dead without rueidis knowing yet (its idle PING runs
// every second), e.g. just after a Redis restart; since nothing has
// happened on it but WATCH, one network failure is retried on a new
// connection.
func (c *Client) watch(ctx context.Context, keys []string) (rueidis.DedicatedClient, func(), error) {
	for attempt := 1; ; attempt++ {
		dc, release, err := c.dedicate(ctx)
		if err != nil {
			return nil, nil, err
		}
		r := dc.Do(ctx, dc.B().Arbitrary("WATCH").Keys(keys...).Build())
		if r.NonRedisError() == nil {
			if err := c.resultErr(ctx, r); err != nil {
				release()
				return nil, nil, err
			}
			return dc, release, nil
		}
		dc.Close()
		if attempt == 2 || ctx.Err() != nil {
			return nil, nil, c.wrapErr(ctx, r.NonRedisError())
		}
	}
}

// dedicate takes a connection out of rueidis's pool. A standalone client's
// Dedicate dials a new connection, when the pool has none idle, ignoring any
// context (bounded by DialTimeout only); wait for it only as long as ctx
// allows. A cluster client's Dedicate returns at once and connects on the
// first command, which takes ctx.
func (c *Client) dedicate(ctx context.Context) (rueidis.DedicatedClient, func(), error) {
	if c.rc.Mode() == rueidis.ClientModeCluster {
		dc, release := c.rc.Dedicate()
		return dc, release, nil
	}
	type dedicated struct {
		dc      rueidis.DedicatedClient
		release func()
	}
	ch := make(chan dedicated, 1)
	go func() {
		dc, release := c.rc.Dedicate()
		ch <- dedicated{dc, release}
	}()
	select {
	case d := <-ch:
		return d.dc, d.release, nil
	case <-ctx.Done():
		go func() { (<-ch).release() }() // unused: back to the pool
		return nil, nil, c.wrapErr(ctx, ctx.Err())
	}
}

// execute sends MULTI, cmds and EXEC as one pipeline on dc. A panic of
// rueidis (its builder and its dedicated cluster client panic rather than
// return errors) becomes an error; the caller then closes dc.
func execute(ctx context.Context, dc rueidis.DedicatedClient, cmds []backend.Cmd, wait *backend.ReplicaWait) (results []rueidis.RedisResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			results, err = nil, fmt.Errorf("backend/rueidis: rueidis refused the transaction: %v", p)
		}
	}()
	multi := make([]rueidis.Completed, 0, len(cmds)+3)
	multi = append(multi, dc.B().Multi().Build())
	multi = append(multi, build(dc.B(), cmds)...)
	multi = append(multi, dc.B().Exec().Build())
	if wait != nil {
		multi = append(multi, buildOne(dc.B(), wait.Cmd()))
	}
	results = dc.DoMulti(ctx, multi...)
	if len(results) != len(multi) {
		return nil, fmt.Errorf("backend/rueidis: %d replies for a transaction of %d commands", len(results), len(multi))
	}
	return results, nil
}

// resultErr returns the error of a result whose value is not needed: the
// server's error as a *backend.RedisError, or a wrapped non-Redis error.
func (c *Client) resultErr(ctx context.Context, r rueidis.RedisResult) error {
	if err := r.NonRedisError(); err != nil {
		return c.wrapErr(ctx, err)
	}
	m, _ := r.ToMessage()
	if m.IsNil() {
		return nil
	}
	return toReply(&m).Error()
}

// unwatch ends a transaction without EXEC and reports whether the
// connection is known clean.
func unwatch(ctx context.Context, dc rueidis.DedicatedClient) bool {
	if ctx.Err() != nil {
		return false
	}
	return dc.Do(ctx, dc.B().Unwatch().Build()).Error() == nil
}

// validateTx checks commands bound for the transaction's connection.
func validateTx(cmds []backend.Cmd, slot int) error {
	if err := validate(cmds); err != nil {
		return err
	}
	for _, cmd := range cmds {
		if len(cmd.Keys) > 0 && backend.KeySlot(cmd.Keys[0]) != slot {
			return fmt.Errorf("%w: %s %q is not in the slot of the watched keys", backend.ErrCrossSlot, cmd.Name, cmd.Keys[0])
		}
	}
	return nil
}

// tx is the backend.Tx of one Watch call: reads on its dedicated
// connection, after WATCH.
type tx struct {
	c    *Client
	dc   rueidis.DedicatedClient
	slot int
	done atomic.Bool
}

var errTxDone = errors.New("backend/rueidis: Tx used after its TxFunc returned")

func (t *tx) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	if t.done.Load() {
		return nil, errTxDone
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if err := validateTx(cmds, t.slot); err != nil {
		return nil, err
	}
	return t.c.doMulti(ctx, t.dc, cmds)
}
