package goredis

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// errNoWatchKeys is returned by Watch without keys: there is nothing to
// guard, and a cluster could not pick a node.
var errNoWatchKeys = errors.New("backend/goredis: Watch needs at least one key")

// Watch implements backend.Transactor with go-redis's Watch: WATCH keys,
// fn's reads and MULTI/EXEC of fn's commands run on one connection taken
// from the pool for the call (on a cluster, a connection to the master of
// the keys' slot); go-redis sends UNWATCH when the call ends without EXEC.
//
// The commands fn returns must use keys of the watched slot (keyless ones
// such as PUBLISH are fine): a cluster refuses a transaction spanning slots,
// so Watch refuses it up front, with an error wrapping backend.ErrCrossSlot,
// on a standalone server too.
//
// A queued command the server rejects when running it (WRONGTYPE) is a
// KindError reply among the others, which did run, as EXEC reports. One it
// rejects while queuing (a wrong number of arguments) makes EXEC fail with
// EXECABORT: nothing runs, and every reply is a KindError (that command's
// own error, EXECABORT for the others).
//
// On a cluster, go-redis retries a WATCH that was answered MOVED or ASK (or
// failed on the network) on the right node. Such a retry happens before fn
// runs: once fn has been called, its error, or the outcome of EXEC, is
// returned as it is, so fn runs at most once per Watch.
func (c *Client) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	return c.watchTx(ctx, keys, fn, nil)
}

// watchTx is Watch; with wait set, WAIT follows EXEC on the transaction's
// connection (see WaitingReplicas).
func (c *Client) watchTx(ctx context.Context, keys []string, fn backend.TxFunc, wait *backend.ReplicaWait) ([]backend.Reply, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if len(keys) == 0 {
		return nil, errNoWatchKeys
	}
	if err := backend.SameSlot(keys); err != nil {
		return nil, err
	}
	slot := backend.KeySlot(keys[0])

	var (
		out     []backend.Reply
		fnErr   error // fn's own error, returned unchanged
		ranFunc bool
	)
	ctx = c.tag(ctx)
	err := c.rc.Watch(ctx, func(tx *redis.Tx) error {
		ranFunc = true
		t := &txReader{c: c, tx: tx}
		cmds, err := fn(ctx, t)
		t.done = true
		if err != nil {
			fnErr = err
			return err
		}
		if len(cmds) == 0 {
			return nil
		}
		if err := checkTxSlots(keys[0], slot, cmds); err != nil {
			return err
		}
		rcs := newCmds(ctx, cmds)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, rc := range rcs {
				_ = p.Process(ctx, rc)
			}
			return nil
		})
		if errors.Is(err, redis.TxFailedErr) {
			return backend.ErrTxAborted
		}
		if out, err = replies(ctx, rcs, err); err != nil || wait == nil {
			return err
		}
		wr := newCmd(ctx, wait.Cmd())
		_ = tx.Process(ctx, wr)
		r, err := replies(ctx, []*redis.Cmd{wr}, nil)
		if err != nil {
			return err
		}
		if err := wait.CheckWait(cmds, out, r[0]); err != nil {
			fnErr = err // returned as it is
			return err
		}
		return nil
	}, keys...)
	switch {
	case fnErr != nil:
		return nil, fnErr
	case err == nil:
		return out, nil
	case errors.Is(err, backend.ErrTxAborted), errors.Is(err, backend.ErrCrossSlot):
		return nil, err
	case ranFunc:
		// A failure of EXEC, already converted.
		return nil, c.closedErr(err)
	}
	// WATCH itself failed.
	err = toErr(ctx, err)
	if _, ok := err.(*backend.RedisError); ok {
		return nil, err
	}
	return nil, c.closedErr(err)
}

// checkTxSlots checks that every queued command stays in the watched slot.
func checkTxSlots(key0 string, slot int, cmds []backend.Cmd) error {
	if err := backend.CheckSlots(cmds); err != nil {
		return err
	}
	for _, cmd := range cmds {
		if len(cmd.Keys) > 0 && backend.KeySlot(cmd.Keys[0]) != slot {
			return fmt.Errorf("%w: %s %q is not in the slot of the watched key %q",
				backend.ErrCrossSlot, cmd.Name, cmd.Keys[0], key0)
		}
	}
	return nil
}

// txReader is the backend.Tx given to a TxFunc: reads on the transaction's
// connection, after WATCH.
type txReader struct {
	c    *Client
	tx   *redis.Tx
	done bool
}

var errTxDone = errors.New("backend/goredis: the Tx of a Watch call used after its TxFunc returned")

func (t *txReader) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	if t.done {
		return nil, errTxDone
	}
	if err := backend.CheckSlots(cmds); err != nil {
		return nil, err
	}
	r, err := run(ctx, t.tx, cmds)
	if err != nil {
		return nil, t.c.closedErr(err)
	}
	return r, nil
}
