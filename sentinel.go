package presence

import (
	"context"
	"fmt"
	"time"

	"github.com/realtime-message/presence/backend"
)

// TouchSentinel refreshes node's sentinel key with ttl and reports whether
// it was still there, in one round trip. A node writes it at start and then
// more often than ttl: Redis only loses it with its data (a restart without
// persistence, a failover to a replica that never saw it, FLUSHALL), or
// when the node could not reach Redis for longer than ttl, and in both
// cases the node's conns may be gone too, so found=false tells the caller
// to join its live conns again. The first call of a node returns false.
//
// On a cluster the key lives on one master only, so it detects the data
// loss of that master alone.
func (s *Service) TouchSentinel(ctx context.Context, node string, ttl time.Duration) (found bool, err error) {
	if err := s.checkOpen(); err != nil {
		return false, err
	}
	if err := checkID("node", node, s.cfg.MaxIDBytes, ""); err != nil {
		return false, err
	}
	ms := max(ttl.Milliseconds(), 1)
	// SET … GET answers the previous value: the check and the refresh are
	// one command, so no other writer can come between them.
	r, err := s.client.Do(ctx, backend.K("SET", s.sentinelKey(node), "1", "PX", fmt.Sprint(ms), "GET"))
	if err != nil {
		return false, fmt.Errorf("presence: sentinel: %w", err)
	}
	if err := r[0].Error(); err != nil {
		return false, fmt.Errorf("presence: sentinel: %w", err)
	}
	return !r[0].IsNil(), nil
}

// DropSentinel deletes node's sentinel key, for a node that stops.
func (s *Service) DropSentinel(ctx context.Context, node string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := checkID("node", node, s.cfg.MaxIDBytes, ""); err != nil {
		return err
	}
	r, err := s.client.Do(ctx, backend.K("DEL", s.sentinelKey(node)))
	if err == nil {
		err = r[0].Error()
	}
	if err != nil {
		return fmt.Errorf("presence: sentinel: %w", err)
	}
	return nil
}

func (s *Service) sentinelKey(node string) string {
	return s.keys.Prefix + ":node:{" + node + "}:alive"
}

// Resubscriptions returns how often sub, a subscription of this package,
// reconnected and subscribed again: events published while it was down
// were not delivered, so a caller that sees it grow resynchronises. 0 for
// a subscription whose adapter does not count.
func Resubscriptions(sub Subscription) uint64 {
	if f, ok := sub.(*Feed); ok {
		return f.Resubscribed()
	}
	s, ok := sub.(*subscription)
	if !ok || s.sub == nil {
		return 0
	}
	if r, ok := s.sub.(backend.Resubscriber); ok {
		return r.Resubscribed()
	}
	return 0
}
