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
	return c.followMasters(ctx, pattern, h, c.masterClients)
}

// masterClients lists the masters of the cluster, each with the go-redis
// client go-redis uses for it now.
func (c *Client) masterClients(ctx context.Context) (map[string]*redis.Client, error) {
	found := map[string]*redis.Client{}
	var mu sync.Mutex
	err := c.cluster.ForEachMaster(c.tag(ctx), func(_ context.Context, n *redis.Client) error {
		mu.Lock()
		found[n.Options().Addr] = n
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, wrapErr(ctx, err)
	}
	return found, nil
}

// followMasters subscribes on every master list returns, through that
// master's go-redis client.
//
// go-redis closes the client of a node that has been missing from its
// cluster state for a minute (its node GC) and makes a new one if the
// address comes back. A subscription reading on a closed client ends
// without an error, so one left on a master's former client would never
// deliver again while the master stays listed under the same address. So
// a master is keyed by its address and a generation, which moves on when
// its listed client is not the one its subscription reads from, or that
// subscription has ended: backend.FollowMasters then drops the old
// subscription and makes a new one (counted by Resubscribed, so a caller
// resynchronises), and Alive reports an ended one meanwhile.
func (c *Client) followMasters(ctx context.Context, pattern string, h backend.Handler, list func(context.Context) (map[string]*redis.Client, error)) (backend.Subscription, error) {
	var (
		mu    sync.Mutex
		nodes = map[string]*redis.Client{} // by key, as of the last listing
		held  = map[string]*nodeSub{}      // by key: the subscription made on nodes[key]
		gen   = map[string]uint64{}        // by address
	)
	key := func(addr string) string {
		if g := gen[addr]; g > 0 {
			return fmt.Sprintf("%s#%d", addr, g)
		}
		return addr
	}
	return backend.FollowMasters(ctx, backend.Masters{
		List: func(ctx context.Context) ([]string, error) {
			found, err := list(ctx)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			defer mu.Unlock()
			listed := make(map[string]*redis.Client, len(found))
			keys := make([]string, 0, len(found))
			for addr, n := range found {
				if s := held[key(addr)]; s != nil && (s.node != n || s.ended()) {
					gen[addr]++
				}
				k := key(addr)
				listed[k] = n
				keys = append(keys, k)
			}
			for k := range held {
				if listed[k] == nil {
					delete(held, k) // FollowMasters drops it
				}
			}
			nodes = listed
			return keys, nil
		},
		Subscribe: func(ctx context.Context, k string) (backend.Subscription, error) {
			mu.Lock()
			n := nodes[k]
			mu.Unlock()
			if n == nil {
				return nil, fmt.Errorf("backend/goredis: master %s is not in the client's cluster state", k)
			}
			sub, err := c.psubscribe(ctx, n, pattern, h)
			if err != nil {
				return nil, err
			}
			s := &nodeSub{subscription: sub.(*subscription), node: n}
			mu.Lock()
			held[k] = s
			mu.Unlock()
			return s, nil
		},
		Refresh: masterRefresh,
		Log:     slog.Default(),
	})
}

// nodeSub is a subscription on one master's go-redis client.
type nodeSub struct {
	*subscription
	node *redis.Client
}

// ended reports whether the subscription stopped reading without being
// closed: its client was closed under it.
func (s *nodeSub) ended() bool {
	select {
	case <-s.done:
		return !s.closing.Load()
	default:
		return false
	}
}

// Alive is the subscription's, and an error once it has ended.
func (s *nodeSub) Alive() error {
	if s.ended() {
		return errors.New("backend/goredis: subscription ended: the node's go-redis client was closed (subscribing again at the next listing of the masters)")
	}
	return s.subscription.Alive()
}

var (
	_ backend.NodeSubscriber    = (*Client)(nil)
	_ backend.SubscriptionState = (*nodeSub)(nil)
	_ backend.Resubscriber      = (*nodeSub)(nil)
)
