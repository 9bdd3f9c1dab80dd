package failover

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
)

// The notify reaper's settings through the faults: its sweep is ten
// minutes away, so a conn reaped within the test was reaped on an
// expired-key event, or by the sweep that follows a (re)subscription.
const (
	notifyTTL      = time.Second
	notifyBackstop = 10 * time.Minute
	// notifyWithin bounds a reap after the conn's key expired: a hang
	// detector, far below the backstop.
	notifyWithin = 20 * time.Second
	// notifySettle bounds the wait for the reaper to follow a new master.
	notifySettle = 45 * time.Second
)

// notifyNode is one service with a notify reaper, and the rooms it uses,
// one per shard.
type notifyNode struct {
	name  string
	svc   *presence.Service
	rooms []string // by shard
	next  int      // probe conns joined so far
}

func openNotifyNode(t *testing.T, cluster *redistest.Replicated, be string) *notifyNode {
	svc := openService(t, cluster.Addrs, presence.Config{
		Backend:                be,
		KeyPrefix:              redistest.Prefix(t) + "-" + be,
		Reaper:                 presence.ReaperNotify,
		ReaperConfigureNotify:  true, // on the masters only: a promoted replica must get it too
		TTL:                    notifyTTL,
		ReaperInterval:         500 * time.Millisecond, // how often the reaper looks at its subscriptions
		ReaperBackstopInterval: notifyBackstop,
	})
	n := &notifyNode{name: be, svc: svc}
	for shard := range redistest.Shards {
		for i := 0; ; i++ {
			room := fmt.Sprintf("s%d-%d", shard, i)
			if cluster.ShardOf(svc.Keys().Conns(room)) == shard {
				n.rooms = append(n.rooms, room)
				break
			}
		}
	}
	for deadline := time.Now().Add(notifySettle); svc.ReaperStatus().Active != presence.ReaperNotify; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: reaper %+v: not running on notifications", be, svc.ReaperStatus())
		}
	}
	return n
}

// reap joins a conn in the room of shard, lets it expire and returns how
// long after its expiry this node's reaper removed it, and whether an
// expired-key event did it (Notified rose with Reaped; else a sweep did).
// One at a time per node: the counters are the node's.
func (n *notifyNode) reap(t *testing.T, shard int) (time.Duration, bool, error) {
	room := n.rooms[shard]
	n.next++
	conn := fmt.Sprintf("c%d", n.next)
	reaped, notified := n.svc.Stats().Reaped, n.svc.ReaperStatus().Notified
	ctx, cancel := context.WithTimeout(context.Background(), notifyWithin)
	defer cancel()
	var err error
	var sent time.Time
	// A write may fail while the cluster's clients learn the new topology.
	for try := 0; try < 50; try++ {
		sent = time.Now()
		if _, err = n.svc.Join(ctx, room, conn, "u", nil); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return 0, false, fmt.Errorf("join %s/%s: %w", room, conn, err)
	}
	// The earliest the key can expire: the figures are upper bounds.
	expiry := sent.Add(notifyTTL)
	for ; ; time.Sleep(5 * time.Millisecond) {
		if n.svc.Stats().Reaped > reaped {
			// Notified is counted just before Reaped.
			return time.Since(expiry), n.svc.ReaperStatus().Notified > notified, nil
		}
		if ctx.Err() != nil {
			return 0, false, fmt.Errorf("%s/%s not reaped %v after its expiry (backstop sweep %v away); reaper %+v",
				room, conn, time.Since(expiry).Round(time.Millisecond), notifyBackstop, n.svc.ReaperStatus())
		}
	}
}

// settle reaps probe conns on shard until one is reaped by an expired-key
// event, the promoted master's, and the reaper reports every master's
// subscription up; every probe must be reaped, whichever way.
func (n *notifyNode) settle(t *testing.T, shard int, fault string) {
	start := time.Now()
	for probes := 1; ; probes++ {
		took, notified, err := n.reap(t, shard)
		if err != nil {
			t.Errorf("%s after %s: %v", n.name, fault, err)
			return
		}
		if notified && n.svc.ReaperStatus().Subscription == nil {
			t.Logf("%s: notify reaper follows the new master %v after %s (%d probes; the last reaped %v after its expiry)",
				n.name, time.Since(start).Round(100*time.Millisecond), fault, probes, took.Round(time.Millisecond))
			return
		}
		if time.Since(start) > notifySettle {
			t.Errorf("%s: no conn of shard %d reaped on an expired-key event within %v after %s; reaper %+v",
				n.name, shard, notifySettle, fault, n.svc.ReaperStatus())
			return
		}
	}
}

// check reaps a conn on every shard, one after the other, and asserts
// each was reaped on its expired-key event.
func (n *notifyNode) check(t *testing.T, phase string) {
	for shard := range n.rooms {
		took, notified, err := n.reap(t, shard)
		switch {
		case err != nil:
			t.Errorf("%s %s: %v", n.name, phase, err)
		case !notified:
			t.Errorf("%s %s: the conn of shard %d was reaped %v after its expiry by a sweep, not on its expired-key event",
				n.name, phase, shard, took.Round(time.Millisecond))
		default:
			t.Logf("%s %s: shard %d: reaped %v after its key's TTL, on its expired-key event", n.name, phase, shard, took.Round(time.Millisecond))
		}
	}
}

// TestNotifyReaperFollowsFailover: a notify reaper on each backend keeps
// reaping on expired-key events through a graceful CLUSTER FAILOVER and a
// kill -9 of a master: conns of the promoted replica's shard are reaped
// on its events (which the reaper enables there, told to configure the
// masters), with the backstop sweep ten minutes away, and its
// ReaperStatus reports every master's subscription up again.
func TestNotifyReaperFollowsFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs a replicated cluster through two faults")
	}
	cluster := redistest.NewReplicated(t, 0)
	var nodes []*notifyNode
	for _, be := range backends {
		nodes = append(nodes, openNotifyNode(t, cluster, be))
	}
	each := func(fn func(n *notifyNode)) {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn(n)
			}()
		}
		wg.Wait()
	}
	each(func(n *notifyNode) { n.check(t, "before the faults") })

	promoted := cluster.Failover(t, 0)
	t.Logf("CLUSTER FAILOVER: node %d is the master of shard 0", promoted)
	each(func(n *notifyNode) { n.settle(t, 0, "CLUSTER FAILOVER") })
	each(func(n *notifyNode) { n.check(t, "after CLUSTER FAILOVER") })

	killed, promoted := cluster.KillMaster(t, 1)
	t.Logf("kill -9 of node %d: node %d is the master of shard 1", killed, promoted)
	each(func(n *notifyNode) { n.settle(t, 1, "kill -9") })
	each(func(n *notifyNode) { n.check(t, "after kill -9") })
	for _, n := range nodes {
		if st := n.svc.ReaperStatus(); st.Active != presence.ReaperNotify || st.Subscription != nil {
			t.Errorf("%s: reaper %+v after the faults: want notify, every master subscribed", n.name, st)
		}
	}
}
