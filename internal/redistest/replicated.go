package redistest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
)

// DefaultNodeTimeout is the cluster-node-timeout of NewReplicated's nodes:
// low, so a killed master's replica takes over within a few seconds, yet
// well above a stall of a loaded test machine, so no healthy node is
// failed over by mistake.
const DefaultNodeTimeout = 1500 * time.Millisecond

// failoverTimeout bounds the wait for a cluster to settle after a fault:
// the node timeout, the election (a second or so), gossip to every node,
// and the replication link of a demoted master, with headroom for a
// loaded machine.
const failoverTimeout = 30 * time.Second

// Replicated is a private Redis Cluster of three masters with one replica
// each, for failover tests. Node i (0, 1, 2) starts as the master of shard
// i (clusterFirstSlots[i] up to the next shard's first slot - 1) and node
// i+3 as its replica; Failover and KillMaster change who is master.
// Server.Addrs lists every node, masters first: clients seeded with all of
// them find the cluster whichever node is down.
type Replicated struct {
	*Server
	ids []string // node ids, by node index

	mu   sync.Mutex
	dead []bool // killed by KillMaster
}

// Shards is the number of shards (masters) of a Replicated cluster.
const Shards = clusterNodes

// NewReplicated starts a 3 master + 3 replica cluster with the given
// cluster-node-timeout (0: DefaultNodeTimeout), ready when returned: every
// node reports cluster_state:ok and agrees on the masters, and every master
// has its replica online. It is stopped when the test ends.
func NewReplicated(t testing.TB, nodeTimeout time.Duration) *Replicated {
	t.Helper()
	requireRedis(t)
	if nodeTimeout <= 0 {
		nodeTimeout = DefaultNodeTimeout
	}
	r, err := startReplicated(t.TempDir(), int(nodeTimeout/time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func startReplicated(dir string, nodeTimeoutMs int) (r *Replicated, err error) {
	procs, buses, err := startClusterNodes(dir, 2*clusterNodes, nodeTimeoutMs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			stopAll(procs)
		}
	}()
	masterIDs, err := assignSlots(procs[:clusterNodes])
	if err != nil {
		return nil, err
	}
	if err := meetAll(procs, buses); err != nil {
		return nil, err
	}
	ids := slices.Clone(masterIDs)
	for _, p := range procs[clusterNodes:] {
		rep, err := doAddr(p.addr, doTimeout, "CLUSTER", "MYID")
		if err != nil || rep.Kind != backend.KindString {
			return nil, fmt.Errorf("redistest: CLUSTER MYID on %s: %v %v", p.addr, rep, err)
		}
		ids = append(ids, rep.Str)
	}
	r = &Replicated{
		Server: &Server{Name: "replicated", Kind: KindCluster, Cluster: true, slots: clusterFirstSlots, procs: procs, dir: dir},
		ids:    ids,
		dead:   make([]bool, len(procs)),
	}
	for _, p := range procs {
		r.Addrs = append(r.Addrs, p.addr)
	}
	// A replica can REPLICATE a master only once it knows the master's id
	// (through MEET and gossip): retry until then.
	deadline := time.Now().Add(clusterTimeout)
	for i := clusterNodes; i < len(procs); i++ {
		for {
			err := expectOK(procs[i].addr, "CLUSTER", "REPLICATE", ids[i-clusterNodes])
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%w%s", err, logTails(procs))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := r.waitMasters([]int{0, 1, 2}, clusterTimeout); err != nil {
		return nil, fmt.Errorf("redistest: replicated cluster %v not ready: %w%s", r.Addrs, err, logTails(procs))
	}
	return r, nil
}

// ShardOf returns the shard serving key.
func (r *Replicated) ShardOf(key string) int { return r.NodeForSlot(backend.KeySlot(key)) }

// Masters returns the index of each shard's master, as the first live
// node's CLUSTER NODES says.
func (r *Replicated) Masters(t testing.TB) []int {
	t.Helper()
	m, err := r.masters()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *Replicated) masters() ([]int, error) {
	for i, p := range r.procs {
		if r.isDead(i) {
			continue
		}
		view, err := r.nodesView(p.addr)
		if err != nil {
			return nil, err
		}
		out := make([]int, Shards)
		for shard := range out {
			out[shard] = -1
			for n, v := range view {
				if v.master && !v.failing && v.firstSlot == clusterFirstSlots[shard] {
					out[shard] = n
				}
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redistest: no live node")
}

// NodeAddr returns the address of node i.
func (r *Replicated) NodeAddr(i int) string { return r.procs[i].addr }

// Failover runs CLUSTER FAILOVER on the replica of shard's master (a
// graceful, coordinated switch: the master stops writes until its replica
// has caught up) and waits until the replica is the master, the old
// master its replica with the link up, and the cluster ok on every live
// node. It returns the new master's node index.
func (r *Replicated) Failover(t testing.TB, shard int) int {
	t.Helper()
	masters := r.Masters(t)
	replica := r.replicaOf(masters[shard])
	if replica < 0 {
		t.Fatalf("redistest: shard %d has no live replica", shard)
	}
	if err := expectOK(r.procs[replica].addr, "CLUSTER", "FAILOVER"); err != nil {
		t.Fatal(err)
	}
	masters[shard] = replica
	if err := r.waitMasters(masters, failoverTimeout); err != nil {
		t.Fatalf("redistest: after CLUSTER FAILOVER of shard %d: %v", shard, err)
	}
	return replica
}

// KillMaster kills shard's master with SIGKILL, as a crash would, and
// waits until the cluster has promoted its replica and every live node
// reports cluster_state:ok. It returns the killed and the promoted node's
// indexes. The killed node stays down.
func (r *Replicated) KillMaster(t testing.TB, shard int) (killed, promoted int) {
	t.Helper()
	masters := r.Masters(t)
	killed = masters[shard]
	promoted = r.replicaOf(killed)
	if promoted < 0 {
		t.Fatalf("redistest: shard %d has no live replica to promote", shard)
	}
	if err := r.procs[killed].stop(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.dead[killed] = true
	r.mu.Unlock()
	masters[shard] = promoted
	if err := r.waitMasters(masters, failoverTimeout); err != nil {
		t.Fatalf("redistest: after killing node %d (master of shard %d): %v", killed, shard, err)
	}
	return killed, promoted
}

// replicaOf returns the live node that replicates master, or -1; node
// i's partner is i±3 whichever of them is master.
func (r *Replicated) replicaOf(master int) int {
	partner := (master + clusterNodes) % len(r.procs)
	if r.isDead(partner) {
		return -1
	}
	return partner
}

func (r *Replicated) isDead(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead[i]
}

// nodeView is one line of CLUSTER NODES.
type nodeView struct {
	master, failing, connected bool
	masterID                   string // of a replica
	firstSlot                  int    // of a master with slots, else -1
	slots                      string
}

// nodesView parses addr's CLUSTER NODES by node index.
func (r *Replicated) nodesView(addr string) (map[int]nodeView, error) {
	rep, err := doAddr(addr, doTimeout, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	if rep.Kind != backend.KindString {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %v", addr, rep)
	}
	out := map[int]nodeView{}
	// <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
	for _, line := range strings.Split(strings.TrimSpace(rep.Str), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("%s: CLUSTER NODES line %q", addr, line)
		}
		n := slices.Index(r.ids, f[0])
		if n < 0 {
			return nil, fmt.Errorf("%s: CLUSTER NODES has unknown node %q", addr, line)
		}
		flags := strings.Split(f[2], ",")
		v := nodeView{
			master:    slices.Contains(flags, "master"),
			failing:   slices.Contains(flags, "fail") || slices.Contains(flags, "fail?") || slices.Contains(flags, "handshake") || slices.Contains(flags, "noaddr"),
			connected: f[7] == "connected" || slices.Contains(flags, "myself"),
			masterID:  f[3],
			firstSlot: -1,
			slots:     strings.Join(f[8:], " "),
		}
		if len(f) > 8 {
			lo, _, _ := strings.Cut(f[8], "-")
			v.firstSlot, _ = strconv.Atoi(lo)
		}
		out[n] = v
	}
	return out, nil
}

// waitMasters polls until the cluster matches: node masters[s] is the
// master of shard s with all its slots, every other live node is the
// replica of its shard's master, the link between each live pair is up,
// every live node says cluster_state:ok, and every master with a live
// replica has it online (so WAIT can count it).
func (r *Replicated) waitMasters(masters []int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for {
		if last = r.checkMasters(masters); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not settled after %v: %w", within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Replicated) checkMasters(masters []int) error {
	shardOf := map[int]int{} // node -> shard, for live nodes
	for s, m := range masters {
		shardOf[m] = s
		shardOf[(m+clusterNodes)%len(r.procs)] = s
	}
	for i, p := range r.procs {
		if r.isDead(i) {
			continue
		}
		info, err := clusterInfo(p.addr)
		if err != nil {
			return err
		}
		if info["cluster_state"] != "ok" || info["cluster_slots_ok"] != "16384" {
			return fmt.Errorf("%s: cluster_state:%s cluster_slots_ok:%s", p.addr, info["cluster_state"], info["cluster_slots_ok"])
		}
		view, err := r.nodesView(p.addr)
		if err != nil {
			return err
		}
		for n := range r.procs {
			if r.isDead(n) {
				continue
			}
			v, ok := view[n]
			if !ok {
				return fmt.Errorf("%s does not know node %d", p.addr, n)
			}
			if v.failing || !v.connected {
				return fmt.Errorf("%s sees node %d failing or disconnected", p.addr, n)
			}
			shard := shardOf[n]
			if masters[shard] == n {
				hi := 16383
				if shard+1 < Shards {
					hi = clusterFirstSlots[shard+1] - 1
				}
				if want := fmt.Sprintf("%d-%d", clusterFirstSlots[shard], hi); !v.master || v.slots != want {
					return fmt.Errorf("%s sees node %d as master %v with slots %q, want master of %s", p.addr, n, v.master, v.slots, want)
				}
			} else if v.master || v.masterID != r.ids[masters[shard]] {
				return fmt.Errorf("%s sees node %d as master %v of %s, want replica of node %d", p.addr, n, v.master, v.masterID, masters[shard])
			}
		}
	}
	for _, m := range masters {
		if r.replicaOf(m) < 0 {
			continue
		}
		rep, err := doAddr(r.procs[m].addr, doTimeout, "INFO", "replication")
		if err != nil {
			return err
		}
		if !strings.Contains(rep.Str, "connected_slaves:1") || !strings.Contains(rep.Str, "state=online") {
			return fmt.Errorf("%s: replica not online: %q", r.procs[m].addr, rep.Str)
		}
	}
	return nil
}

func clusterInfo(addr string) (map[string]string, error) {
	rep, err := doAddr(addr, doTimeout, "CLUSTER", "INFO")
	if err != nil {
		return nil, err
	}
	info := map[string]string{}
	for _, line := range strings.Split(rep.Str, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			info[k] = v
		}
	}
	return info, nil
}

// DoKey sends one command to the current master of key's shard, following
// MOVED from whichever live node it asks first.
func (r *Replicated) DoKey(t testing.TB, key string, args ...string) backend.Reply {
	t.Helper()
	masters := r.Masters(t)
	return doFollow(t, r.procs[masters[r.ShardOf(key)]].addr, args)
}

// Logs returns the end of every node's log, for a failure message.
func (r *Replicated) Logs() string { return logTails(r.procs) }

// NodePid returns node i's process id (to stop it with SIGSTOP, e.g.).
func (r *Replicated) NodePid(i int) int { return r.procs[i].cmd.Process.Pid }
