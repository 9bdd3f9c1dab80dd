package goredis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// masterRefresh is how often a PSubscribeEachMaster subscription lists a
// cluster's masters again, so a master promoted by a failover gets its
// subscription within about this long (plus go-redis's own reload of its
// cluster state).
const masterRefresh = 2 * time.Second

// PSubscribeEachMaster subscribes to pattern on every master, through
// that master's go-redis client, for node-local messages such as keyspace
// notifications (backend.NodeSubscriber). The masters are those of
// ClusterClient.ForEachMaster, which reloads its cluster state lazily.
func (c *Client) PSubscribeEachMaster(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	if h == nil || pattern == "" {
		return nil, errors.New("backend/goredis: PSubscribeEachMaster needs a pattern and a handler")
	}
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if c.cluster == nil {
		return backend.FollowMasters(ctx, backend.Masters{
			List: func(context.Context) ([]string, error) { return []string{"server"}, nil },
			Subscribe: func(ctx context.Context, _ string) (backend.Subscription, error) {
				return c.PSubscribe(ctx, pattern, h)
			},
			Log: slog.Default(),
		})
	}
	var (
		mu    sync.Mutex
		nodes map[string]*redis.Client // as of the last listing
	)
	return backend.FollowMasters(ctx, backend.Masters{
		List: func(ctx context.Context) ([]string, error) {
			found := map[string]*redis.Client{}
			var fmu sync.Mutex
			err := c.cluster.ForEachMaster(c.tag(ctx), func(_ context.Context, n *redis.Client) error {
				fmu.Lock()
				found[n.Options().Addr] = n
				fmu.Unlock()
				return nil
			})
			if err != nil {
				return nil, wrapErr(ctx, err)
			}
			mu.Lock()
			nodes = found
			mu.Unlock()
			addrs := make([]string, 0, len(found))
			for a := range found {
				addrs = append(addrs, a)
			}
			return addrs, nil
		},
		Subscribe: func(ctx context.Context, addr string) (backend.Subscription, error) {
			mu.Lock()
			n := nodes[addr]
			mu.Unlock()
			if n == nil {
				return nil, fmt.Errorf("backend/goredis: master %s is not in the client's cluster state", addr)
			}
			return c.psubscribe(ctx, n, pattern, h)
		},
		Refresh: masterRefresh,
		Log:     slog.Default(),
	})
}

var _ backend.NodeSubscriber = (*Client)(nil)
