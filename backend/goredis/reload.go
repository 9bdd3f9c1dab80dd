package goredis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/backend"
)

// go-redis's cluster client reloads its slot map on MOVED and READONLY
// replies; a connection error only marks the node failing and is retried
// on the same slot owner. After a master dies, every command for its slots
// kept dialing the dead address ("connection refused") for as long as the
// failover test ran (45s past the promotion). So a connection-level
// failure of a cluster command reloads the map in the background, at most
// once per reloadEvery.

// reloadEvery bounds how often failures reload the slot map.
const reloadEvery = 250 * time.Millisecond

// reloadTimeout bounds one reload.
const reloadTimeout = 5 * time.Second

type reloader struct {
	last atomic.Int64 // unix ns of the last reload started
	wg   sync.WaitGroup
}

// maybeReload starts a slot map reload after err, a failure of a command,
// when it is a failure of the connection rather than a reply, and no reload
// started within reloadEvery.
func (c *Client) maybeReload(err error) {
	if err == nil || isServerError(err) || errors.Is(err, backend.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	c.reloadSoon()
}

// reloadSoon starts a reload of a cluster's slot map in the background,
// unless one started within reloadEvery.
func (c *Client) reloadSoon() {
	if c.cluster == nil {
		return
	}
	now := time.Now().UnixNano()
	last := c.reload.last.Load()
	if now-last < int64(reloadEvery) || !c.reload.last.CompareAndSwap(last, now) {
		return
	}
	c.mu.Lock() // against Close: no reload starts once it waits for them
	defer c.mu.Unlock()
	if c.closed.Load() {
		return
	}
	c.reload.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
		defer cancel()
		c.cluster.ReloadState(ctx)
	})
}
