package failover

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"go.uber.org/goleak"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
	"github.com/realtime-message/presence/socketio"
)

const (
	clients = 40
	rooms   = 8
	// pace is each client's pause between two rounds of a heartbeat and a
	// metadata write: about 2 x 40 / 0.1 = 800 events/s offered, less as
	// acks slow down.
	pace = 100 * time.Millisecond
	// ackTimeout is the client's wait for an ack; the server's own call
	// timeout is below it, so a missing ack is a server that hangs.
	ackTimeout  = 4 * time.Second
	callTimeout = 2 * time.Second
	// recoverWithin bounds the wait for every client to get ok acks again
	// after a fault has settled: generous, it is a hang detector, not a
	// speed threshold.
	recoverWithin = 45 * time.Second
	// steady is how long the load runs between phases.
	steady = 2 * time.Second
)

// The presence server under load from 40 Socket.IO clients (heartbeats
// with a state patch and metadata writes, each acked before the next)
// through a graceful CLUSTER FAILOVER and then a kill -9 of a master of a
// 3+3 Redis Cluster, for both backends, with WaitReplicas off and on.
// Asserted: every client gets ok acks again after each fault, no socket
// is dropped, every socket is in its room's snapshot and heartbeats ok at
// the end, no goroutine outlives the server; with WaitReplicas on no
// acknowledged metadata write is lost to the CLUSTER FAILOVER. Logged:
// acks per phase (ok / error code / timeout), time to settle and recover,
// acknowledged writes lost per fault.
func TestFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the failover test runs four clusters through faults")
	}
	for _, be := range backends {
		for _, wait := range []int{0, 1} {
			t.Run(fmt.Sprintf("%s/wait=%d", be, wait), func(t *testing.T) {
				runFailover(t, be, wait)
			})
		}
	}
}

// phase names, in order.
var phases = []string{"before", "failover", "after failover", "kill -9", "after kill -9"}

// ackStats counts acks by phase, event kind and outcome.
type ackStats struct {
	mu     sync.Mutex
	phase  int
	counts [5]map[string]int
}

func (s *ackStats) setPhase(p int) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

func (s *ackStats) current() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase
}

// note records one outcome: "ok", "timeout", "closed" or the ack's code.
func (s *ackStats) note(kind, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.counts[s.phase]
	if m == nil {
		m = map[string]int{}
		s.counts[s.phase] = m
	}
	m[kind+" "+outcome]++
}

func (s *ackStats) report() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for i, name := range phases {
		keys := make([]string, 0, len(s.counts[i]))
		for k := range s.counts[i] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "\n  %-15s", name+":")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k, s.counts[i][k])
		}
	}
	return b.String()
}

// ackedWrite is a metadata write the server acknowledged.
type ackedWrite struct {
	channel, value string
	phase          int
}

type loadClient struct {
	c      *siotest.Client
	room   string
	lastHB atomic.Int64 // unix ns of the last ok heartbeat ack
	lastMD atomic.Int64 // unix ns of the last ok metadata ack
	closed atomic.Bool  // the server dropped the socket
}

func runFailover(t *testing.T, backendName string, waitReplicas int) {
	cluster := redistest.NewReplicated(t, 0)
	ignore := goleak.IgnoreCurrent()

	prefix := redistest.Prefix(t)
	svc := openService(t, cluster.Addrs, presence.Config{
		Backend:             backendName,
		KeyPrefix:           prefix,
		TTL:                 10 * time.Second,
		WaitReplicas:        waitReplicas,
		WaitReplicasTimeout: time.Second,
	})
	io := socket.NewServer(nil, socketio.ServerOptions(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	binding, err := socketio.Bind(ctx, io, svc, socketio.Options{
		CallTimeout:  callTimeout,
		HealInterval: 500 * time.Millisecond,
		Logger:       svc.Config().Logger,
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	url, hs := siotest.Listen(t, io)
	stopped := false
	stopServer := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		binding.Shutdown(ctx)
		io.Close(nil)
		hs.Close()
		svc.Close()
	}
	t.Cleanup(stopServer)

	// Connect and join.
	cs := make([]*loadClient, clients)
	for i := range cs {
		c, err := siotest.Dial(context.Background(), url, siotest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		lc := &loadClient{c: c, room: fmt.Sprintf("room-%s-%d", prefix, i%rooms)}
		ack := call(t, c, "presence:join", map[string]any{"roomId": lc.room, "userId": fmt.Sprintf("u%d", i)})
		if ack["ok"] != true {
			t.Fatalf("join: %v", ack)
		}
		cs[i] = lc
	}

	// Load.
	stats := &ackStats{}
	var ackedMu sync.Mutex
	var acked []ackedWrite
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, lc := range cs {
		wg.Go(func() {
			for seq := 0; loadCtx.Err() == nil; seq++ {
				ack, outcome := try(lc.c, "presence:heartbeat", map[string]any{"patchState": map[string]any{"seq": seq}})
				stats.note("heartbeat", outcome)
				if outcome == "ok" {
					lc.lastHB.Store(time.Now().UnixNano())
				}
				name := fmt.Sprintf("c-%d-%d", i, seq)
				value := strconv.Itoa(seq)
				phase := stats.current()
				ack, outcome = try(lc.c, "metadata:setChannel", map[string]any{
					"channelType": "doc", "channelName": name,
					"data": []any{map[string]any{"key": "v", "value": value}},
				})
				_ = ack
				stats.note("metadata", outcome)
				if outcome == "ok" {
					lc.lastMD.Store(time.Now().UnixNano())
					ackedMu.Lock()
					acked = append(acked, ackedWrite{name, value, phase})
					ackedMu.Unlock()
				}
				if outcome == "closed" {
					lc.closed.Store(true)
					return
				}
				select {
				case <-loadCtx.Done():
				case <-time.After(pace):
				}
			}
		})
	}
	// /healthz's view, polled through the faults.
	var health [5]struct{ ok, bad int }
	var healthMu sync.Mutex
	var firstBad [5]string
	wg.Go(func() {
		for loadCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(loadCtx, time.Second)
			checks, ok := svc.Health(ctx)
			cancel()
			p := stats.current()
			healthMu.Lock()
			if ok {
				health[p].ok++
			} else {
				health[p].bad++
				if firstBad[p] == "" {
					for _, c := range checks {
						if !c.OK {
							firstBad[p] = c.Name + ": " + c.Error
							break
						}
					}
				}
			}
			healthMu.Unlock()
			select {
			case <-loadCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	defer func() {
		stopLoad()
		wg.Wait()
	}()

	// waitRecovered polls until every client had an ok heartbeat and an ok
	// metadata write after since, and returns when that was.
	waitRecovered := func(what string, since time.Time) time.Time {
		t.Helper()
		deadline := time.Now().Add(recoverWithin)
		for {
			behind := 0
			for _, lc := range cs {
				if lc.lastHB.Load() <= since.UnixNano() || lc.lastMD.Load() <= since.UnixNano() {
					behind++
				}
			}
			if behind == 0 {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %d of %d clients still without ok acks %v later; acks:%s", what, behind, clients, recoverWithin, stats.report())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	time.Sleep(steady)
	waitRecovered("start", time.Now().Add(-steady))

	// Fault 1: graceful failover of shard 0.
	stats.setPhase(1)
	start := time.Now()
	promoted := cluster.Failover(t, 0)
	settled := time.Now()
	stats.setPhase(2)
	recovered := waitRecovered("CLUSTER FAILOVER", settled)
	t.Logf("CLUSTER FAILOVER of shard 0 (node %d promoted): cluster settled in %v, every client acked ok again %v after the fault",
		promoted, settled.Sub(start).Round(time.Millisecond), recovered.Sub(start).Round(time.Millisecond))
	time.Sleep(steady)

	// Fault 2: kill -9 of shard 1's master.
	stats.setPhase(3)
	start = time.Now()
	killed, promoted := cluster.KillMaster(t, 1)
	settled = time.Now()
	stats.setPhase(4)
	recovered = waitRecovered("kill -9", settled)
	healed := waitPresence(t, svc, cs, recoverWithin)
	t.Logf("kill -9 of node %d (master of shard 1; node %d promoted): cluster settled in %v, every client acked ok again %v and every socket was in its room's snapshot %v after the kill",
		killed, promoted, settled.Sub(start).Round(time.Millisecond), recovered.Sub(start).Round(time.Millisecond), healed.Sub(start).Round(time.Millisecond))
	time.Sleep(steady)

	stopLoad()
	wg.Wait()
	t.Logf("acks by phase:%s", stats.report())
	for i, name := range phases {
		t.Logf("Health during %q: ok %d, failing %d (first: %s)", name, health[i].ok, health[i].bad, firstBad[i])
	}
	// A dead master makes the node unhealthy until its replica serves.
	if health[3].bad == 0 {
		t.Errorf("Health never failed while a master was dead: %+v", health)
	}
	eventually(t, "Health after the faults", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if checks, ok := svc.Health(ctx); !ok {
			return fmt.Errorf("%+v", checks)
		}
		return nil
	})

	// No socket dropped; presence whole; each heartbeat acked.
	for i, lc := range cs {
		if lc.closed.Load() {
			t.Errorf("client %d: the server dropped the socket: %v", i, lc.c.Err())
		}
	}
	waitPresence(t, svc, cs, recoverWithin)
	for i, lc := range cs {
		if ack := call(t, lc.c, "presence:heartbeat", map[string]any{}); ack["ok"] != true {
			t.Errorf("client %d: heartbeat after the faults: %v", i, ack)
		}
	}

	// Acknowledged writes that are gone.
	var lost [5]int
	var total [5]int
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, w := range acked {
		total[w.phase]++
		got, err := svc.GetMetadata(ctx, presence.Channel{Type: "doc", Name: w.channel})
		if err != nil {
			t.Fatalf("reading back %s: %v", w.channel, err)
		}
		if got.Metadata["v"].Value != w.value {
			lost[w.phase]++
		}
	}
	var b strings.Builder
	for i, name := range phases {
		fmt.Fprintf(&b, " %s: %d of %d;", name, lost[i], total[i])
	}
	t.Logf("acknowledged metadata writes lost (WaitReplicas=%d), by the phase they were sent in:%s", waitReplicas, b.String())
	if waitReplicas > 0 {
		// A write acked under WAIT 1 is on the replica the failover
		// promotes; the graceful failover has no other way to lose it.
		if n := lost[0] + lost[1] + lost[2]; n > 0 {
			t.Errorf("with WaitReplicas=%d, %d acknowledged writes sent before the kill were lost", waitReplicas, n)
		}
	}

	// Everything the server started ends with it.
	for _, lc := range cs {
		lc.c.Close()
	}
	stopServer()
	// go-redis stops redialing a dead node up to a second after Close:
	// poll past goleak's own short retries.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := goleak.Find(ignore)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines outlived the server: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPresence polls until every client's socket is in its room's
// snapshot, and returns when.
func waitPresence(t *testing.T, svc *presence.Service, cs []*loadClient, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing := 0
		var last error
		byRoom := map[string][]string{}
		for _, lc := range cs {
			byRoom[lc.room] = append(byRoom[lc.room], lc.c.ID())
		}
		for room, conns := range byRoom {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			snap, err := svc.Snapshot(ctx, room)
			cancel()
			if err != nil {
				last = err
				missing += len(conns)
				continue
			}
			for _, id := range conns {
				if !slices.ContainsFunc(snap, func(e presence.Entry) bool { return e.ConnID == id }) {
					missing++
				}
			}
		}
		if missing == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets still missing from their rooms' snapshots after %v (last error %v)", missing, within, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// try emits event and classifies the outcome: "ok", the ack's code,
// "timeout" (no ack within ackTimeout) or "closed" (the socket is gone).
func try(c *siotest.Client, event string, payload any) (map[string]any, string) {
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	ack, err := c.CallMap(ctx, event, payload)
	switch {
	case err == nil && ack["ok"] == true:
		return ack, "ok"
	case err == nil:
		code, _ := ack["code"].(string)
		return ack, "error:" + code
	case ctx.Err() != nil:
		return nil, "timeout"
	}
	select {
	case <-c.Done():
		return nil, "closed"
	default:
		return nil, "error:" + err.Error()
	}
}

func call(t *testing.T, c *siotest.Client, event string, payload any) map[string]any {
	t.Helper()
	ack, outcome := try(c, event, payload)
	if ack == nil {
		t.Fatalf("%s: %s", event, outcome)
	}
	return ack
}
