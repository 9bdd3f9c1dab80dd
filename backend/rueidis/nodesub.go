package rueidis

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// masterRefresh is how often a PSubscribeEachMaster subscription lists a
// cluster's masters again, so a master promoted by a failover gets its
// subscription within about this long.
const masterRefresh = 2 * time.Second

// PSubscribeEachMaster subscribes to pattern on every master, on a
// dedicated connection to each, for node-local messages such as keyspace
// notifications (backend.NodeSubscriber). A master that rueidis does not
// hold a connection to yet (it learns a new topology on the next MOVED or
// connection error) is subscribed at a later refresh; meanwhile Alive
// reports it.
func (c *Client) PSubscribeEachMaster(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if !c.Cluster() {
		return backend.FollowMasters(ctx, backend.Masters{
			List: func(context.Context) ([]string, error) { return []string{"server"}, nil },
			Subscribe: func(ctx context.Context, _ string) (backend.Subscription, error) {
				return c.PSubscribe(ctx, pattern, h)
			},
			Log: c.log,
		})
	}
	if h == nil || pattern == "" {
		return nil, fmt.Errorf("backend/rueidis: PSubscribeEachMaster needs a pattern and a handler")
	}
	return backend.FollowMasters(ctx, backend.Masters{
		List: func(ctx context.Context) ([]string, error) { return c.clusterMasters(ctx, c.rc.Nodes()) },
		Subscribe: func(ctx context.Context, addr string) (backend.Subscription, error) {
			return c.psubscribe(ctx, pattern, h, func(ctx context.Context) (rueidis.DedicatedClient, func(), error) {
				node, ok := c.rc.Nodes()[addr]
				if !ok {
					return nil, nil, fmt.Errorf("backend/rueidis: master %s is not in the client's topology yet", addr)
				}
				return c.dedicateFrom(ctx, node)
			})
		},
		Refresh: masterRefresh,
		Log:     c.log,
	})
}

var _ backend.NodeSubscriber = (*Client)(nil)
