package goredis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// TestNodeSubscriptionSurvivesAClosedNodeClient: go-redis closes a node's
// client once the node has been missing from its cluster state for a
// minute, and makes a new one when the address is listed again. The
// subscription on the closed client must not end silently: Alive reports
// it, and the next listing subscribes through the new client (Resubscribed
// counts it), whose messages arrive. Here the listing stands in for
// go-redis: it closes one master's client and lists a new one for it.
func TestNodeSubscriptionSurvivesAClosedNodeClient(t *testing.T) {
	srv := redistest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, Options{Addrs: srv.Addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var mu sync.Mutex
	replaced := map[string]*redis.Client{} // address → the client listed instead of go-redis's
	list := func(ctx context.Context) (map[string]*redis.Client, error) {
		found, err := c.masterClients(ctx)
		mu.Lock()
		defer mu.Unlock()
		for addr, n := range replaced {
			if _, ok := found[addr]; ok {
				found[addr] = n
			}
		}
		return found, err
	}
	// Expired-key events are node-local, unlike PUBLISH, which the
	// cluster bus would bring to every master's subscription.
	enable := []backend.Cmd{{Name: "CONFIG", Args: []string{"SET", "notify-keyspace-events", "Ex"}}}
	if err := c.EachMaster(ctx, enable, func(addr string, r []backend.Reply, err error) {
		if err == nil {
			err = r[0].Error()
		}
		if err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	const pattern = "__keyevent@*__:expired"
	h := func(m backend.Message) {
		mu.Lock()
		got[m.Payload]++
		mu.Unlock()
	}
	sub, err := c.followMasters(ctx, pattern, h, list)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	nodes, err := c.masterClients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for addr := range nodes {
		victim = addr
		break
	}
	tag := ""
	for i := 0; tag == ""; i++ {
		k := fmt.Sprintf("{nodesub-%s-%d}", redistest.Prefix(t), i)
		if srv.Addrs[srv.NodeForSlot(backend.KeySlot(k))] == victim {
			tag = k
		}
	}
	direct := redis.NewClient(&redis.Options{Addr: victim})
	defer direct.Close()
	// heard expires keys on the victim until its subscription delivers
	// one's event (reading the key expires it at once).
	heard := func(what string) bool {
		for i, deadline := 0, time.Now().Add(10*time.Second); time.Now().Before(deadline); i++ {
			key := fmt.Sprintf("%s:%s-%d", tag, what, i)
			if err := direct.Set(ctx, key, "v", time.Millisecond).Err(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			direct.Get(ctx, key)
			time.Sleep(30 * time.Millisecond)
			mu.Lock()
			n := got[key]
			mu.Unlock()
			if n > 0 {
				return true
			}
		}
		return false
	}
	if !heard("before") {
		t.Fatal("no message before the fault")
	}
	resubs := sub.(backend.Resubscriber).Resubscribed()

	// go-redis's node GC: the victim's client is closed, a new one listed.
	if err := nodes[victim].Close(); err != nil {
		t.Fatal(err)
	}
	fresh := redis.NewClient(nodes[victim].Options())
	defer fresh.Close()
	mu.Lock()
	replaced[victim] = fresh
	mu.Unlock()

	state := sub.(backend.SubscriptionState)
	sawDown := false
	for deadline := time.Now().Add(3 * masterRefresh); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := state.Alive(); err != nil && strings.Contains(err.Error(), victim) {
			sawDown = true
			break
		}
		if sub.(backend.Resubscriber).Resubscribed() > resubs {
			break // replaced before Alive was looked at
		}
	}
	if !heard("after") {
		t.Fatalf("the master's messages stopped after its go-redis client was closed (Alive: %v, resubscribed %d → %d, saw it down: %v)",
			state.Alive(), resubs, sub.(backend.Resubscriber).Resubscribed(), sawDown)
	}
	if r := sub.(backend.Resubscriber).Resubscribed(); r <= resubs {
		t.Fatalf("Resubscribed %d → %d: the new subscription must be counted (its master's messages in between were lost)", resubs, r)
	}
	if err := state.Alive(); err != nil {
		t.Fatalf("Alive after the new subscription: %v", err)
	}
}
