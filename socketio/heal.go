package socketio

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence"
)

// Self-healing presence. Redis can lose conns while their sockets stay
// connected: a restart without persistence, a failover to a replica that
// lagged, FLUSHALL. Clients must not have to notice, so the binding joins
// such sockets again by itself, with the state it remembers for them:
//   - a heartbeat whose conn is gone (heartbeatReq) rejoins at once;
//   - a sentinel key per binding, refreshed every HealInterval, reveals the
//     loss for sockets that are not heartbeating (watch);
//   - after an event subscription reconnected, the events published while
//     it was down are lost for good, so local members are announced again.

// healParallel bounds the rejoins in flight after a detected loss.
const healParallel = 16

func decodeState(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if len(raw) > 0 && json.Unmarshal(raw, &m) != nil {
		m = nil // unreachable: the service validated it
	}
	return m
}

// remember keeps an acknowledged patch for the state a rejoin would use.
// Decoding it into the state on every heartbeat cost 3.5% of the server's
// CPU for a state that is almost never needed, so patches are kept as
// received and folded in only when they add up (or a rejoin needs them).
// c.mu is held.
func (c *conn) remember(patch json.RawMessage) {
	if len(patch) == 0 {
		return
	}
	c.patches = append(c.patches, patch)
	c.patchLen += len(patch)
	if len(c.patches) >= maxPendingPatches || c.patchLen >= maxPendingPatchBytes {
		c.fold()
	}
}

// Bounds of the patches kept unfolded per socket.
const (
	maxPendingPatches    = 32
	maxPendingPatchBytes = 8 << 10
)

// fold applies the kept patches to the remembered state, in order. c.mu
// is held.
func (c *conn) fold() {
	for _, p := range c.patches {
		c.state = c.withPatch(p)
	}
	clear(c.patches)
	c.patches, c.patchLen = c.patches[:0], 0
}

// withPatch returns the socket's remembered state with patch applied, as a
// new map (a patch replaces top-level keys; null is a value). A state that
// would outgrow MaxStateBytes keeps what it was: a rejoin with it would be
// refused, and presence with an older state beats no presence.
func (c *conn) withPatch(patch json.RawMessage) map[string]json.RawMessage {
	if len(patch) == 0 {
		return c.state
	}
	m := maps.Clone(c.state)
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	if patchInto(m, patch) != nil {
		return c.state // unreachable: the service validated it
	}
	if c.b.maxState > 0 && encodedSize(m) > c.b.maxState {
		return c.state
	}
	return m
}

// encodedSize estimates the length of m as a JSON object without encoding it
// (this runs on every heartbeat with a patch).
func encodedSize(m map[string]json.RawMessage) int {
	n := 2
	for k, v := range m {
		n += len(k) + len(v) + 4 // quotes, colon, comma; a key that needs escapes is rare, and a state slightly over the bound only fails its rejoin
	}
	return n
}

// rejoin joins the socket again to room, which Redis no longer has it in,
// with its remembered state and patch, and answers as the heartbeat that
// found it missing would have.
func (c *conn) rejoin(ctx context.Context, room string, patch json.RawMessage) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.room != room {
		return nil, errNotJoined
	}
	c.fold()
	state := c.withPatch(patch)
	changed := false
	for k, v := range decodeState(patch) {
		if old, ok := c.state[k]; !ok || !bytes.Equal(old, v) {
			changed = true
		}
	}
	epoch, err := c.joinAgain(ctx, state)
	if err != nil {
		return nil, err
	}
	c.b.healed.Add(1)
	return heartbeatAck{OK: true, Changed: changed, Epoch: epoch}, nil
}

// joinAgain joins with state; c.mu is held and the socket is joined.
func (c *conn) joinAgain(ctx context.Context, state map[string]json.RawMessage) (int64, error) {
	var raw json.RawMessage
	if len(state) > 0 {
		enc, err := json.Marshal(state)
		if err != nil {
			return 0, err
		}
		raw = enc
	}
	res, err := c.b.svc.Join(ctx, c.room, c.id, c.user, raw)
	if err != nil {
		if errors.Is(err, presence.ErrInvalidArgument) {
			// The remembered state is at fault, not the client's event.
			c.b.log.Warn("socketio: could not re-join a socket Redis lost", "room", c.room, "connId", c.id, "err", err)
			return 0, presence.ErrConnNotFound
		}
		return 0, err
	}
	c.epoch, c.healed, c.state = res.Epoch, true, state
	return res.Epoch, nil
}

// rejoinIdle is rejoin for the watcher: no patch, no ack. It reports
// whether the socket was joined again.
func (c *conn) rejoinIdle(ctx context.Context) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.room == "" || c.b.closing.Load() {
		return false, nil
	}
	c.fold()
	if _, err := c.joinAgain(ctx, c.state); err != nil {
		return false, err
	}
	return true, nil
}

// Healed returns how many times the binding re-joined a socket by itself
// because Redis had lost its conn or missed its events.
func (b *Binding) Healed() int64 { return b.healed.Load() }

func newNodeID() string {
	var r [12]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// startWatch writes the sentinel and starts the watcher.
func (b *Binding) startWatch(ctx context.Context) {
	b.watchDone = make(chan struct{})
	every := b.opts.HealInterval
	if every < 0 {
		close(b.watchDone)
		return
	}
	b.node = newNodeID()
	// Long enough to survive a missed refresh or two; a sentinel that
	// expires anyway only costs a rejoin of every local socket.
	ttl := 3*every + time.Second
	tctx, cancel := context.WithTimeout(ctx, b.opts.CallTimeout)
	_, err := b.svc.TouchSentinel(tctx, b.node, ttl)
	cancel()
	armed := err == nil
	if err != nil {
		b.failures.note("presence sentinel failed", "", err)
	}
	resubs := b.resubscriptions()
	go func() {
		defer close(b.watchDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case <-t.C:
			}
			if b.closing.Load() {
				return
			}
			tctx, cancel := context.WithTimeout(b.ctx, b.opts.CallTimeout)
			found, err := b.svc.TouchSentinel(tctx, b.node, ttl)
			cancel()
			switch {
			case err != nil:
				b.failures.note("presence sentinel failed", "", err)
			case !found && armed:
				b.rejoinAll("Redis lost this node's presence data")
			default:
				if n := b.resubscriptions(); n != resubs {
					resubs = n
					b.rejoinAll("the presence event subscription reconnected")
				}
			}
			armed = armed || err == nil
		}
	}()
}

// resubscriptions counts how often the binding's event subscriptions
// were restored (lost connections, and sharded channels that moved).
func (b *Binding) resubscriptions() uint64 { return presence.Resubscriptions(b.feed) }

// rejoinAll joins every joined local socket again, a few at a time, each
// within CallTimeout, and logs one line for the whole recovery.
func (b *Binding) rejoinAll(reason string) {
	var joined, failed atomic.Int64
	var lastErr atomic.Pointer[error]
	stop := func() bool { return b.ctx.Err() != nil || b.closing.Load() }
	b.eachConn(healParallel, stop, func(c *conn) {
		ctx, cancel := context.WithTimeout(b.ctx, b.opts.CallTimeout)
		defer cancel()
		ok, err := c.rejoinIdle(ctx)
		switch {
		case err != nil:
			failed.Add(1)
			lastErr.Store(&err)
		case ok:
			joined.Add(1)
			b.healed.Add(1)
		}
	})
	attrs := []any{"reason", reason, "rejoined", joined.Load(), "failed", failed.Load()}
	if p := lastErr.Load(); p != nil {
		attrs = append(attrs, "err", *p)
	}
	b.log.Warn("socketio: re-joined local sockets to presence", attrs...)
	b.announceResync()
}
