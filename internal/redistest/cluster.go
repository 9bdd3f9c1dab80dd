package redistest

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/realtime-message/presence/backend"
)

const (
	clusterNodes = 3
	// clusterTimeout bounds the wait for the cluster to agree it is ready.
	// A master reports cluster_state:ok no sooner than 2s after it started
	// (Redis's CLUSTER_WRITABLE_DELAY), so this is mostly headroom.
	clusterTimeout = 15 * time.Second
)

// clusterFirstSlots are the first slots of each master, as redis-cli
// --cluster create splits 16384 slots over three.
var clusterFirstSlots = []int{0, 5461, 10923}

// startCluster starts three cluster-enabled redis-servers in dir/node<i>,
// gives each a third of the slots and a distinct config epoch, introduces
// them with CLUSTER MEET and waits until every node agrees the cluster is
// ready. It does what redis-cli --cluster create does, without its fixed
// waits.
func startCluster(dir string) (s *Server, err error) {
	procs, buses, err := startClusterNodes(dir, clusterNodes, 5000)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			stopAll(procs)
		}
	}()

	ids, err := assignSlots(procs)
	if err != nil {
		return nil, err
	}
	// Every pair meets directly rather than through gossip: saves a round.
	if err := meetAll(procs, buses); err != nil {
		return nil, err
	}

	s = &Server{Name: KindCluster.String(), Kind: KindCluster, Cluster: true, slots: clusterFirstSlots, procs: procs, dir: dir}
	for _, p := range procs {
		s.Addrs = append(s.Addrs, p.addr)
	}
	if err := waitClusterReady(procs, ids, buses); err != nil {
		return nil, fmt.Errorf("redistest: cluster %v not ready: %w%s", s.Addrs, err, logTails(procs))
	}
	return s, nil
}

// startClusterNodes starts n cluster-enabled redis-servers in dir/node<i>
// in parallel: each takes a few ms, but the 2s writable delay of each
// starts with its process, so starting together saves it n-1 times. It
// returns them with their cluster bus ports.
func startClusterNodes(dir string, n, nodeTimeoutMs int) (procs []*proc, buses []int, err error) {
	procs = make([]*proc, n)
	buses = make([]int, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			procs[i], errs[i] = startRedis(filepath.Join(dir, "node"+strconv.Itoa(i)), func() ([]string, error) {
				bus, err := freePort()
				buses[i] = bus
				return []string{
					"cluster-enabled yes",
					"cluster-config-file nodes.conf",
					"cluster-node-timeout " + strconv.Itoa(nodeTimeoutMs),
					// The bus port is chosen, not port+10000, which may be
					// taken or above 65535.
					"cluster-port " + strconv.Itoa(bus),
					// Without it a node learns its own IP only from peers;
					// until then CLUSTER SLOTS/SHARDS show it with an empty
					// address and clients fail to route.
					"cluster-announce-ip 127.0.0.1",
				}, err
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		stopAll(procs)
		return nil, nil, err
	}
	return procs, buses, nil
}

func stopAll(procs []*proc) {
	for _, p := range procs {
		if p != nil {
			p.stop()
		}
	}
}

func logTails(procs []*proc) string {
	var logs strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&logs, "\n--- %s ---\n%s", filepath.Join(p.dir, "redis.log"), tail(filepath.Join(p.dir, "redis.log")))
	}
	return logs.String()
}

// assignSlots gives masters[i] the i-th third of the slots and config
// epoch i+1, and returns their node ids.
func assignSlots(masters []*proc) ([]string, error) {
	ids := make([]string, len(masters))
	for i, p := range masters {
		hi := 16383
		if i+1 < clusterNodes {
			hi = clusterFirstSlots[i+1] - 1
		}
		steps := [][]string{
			// Distinct epochs up front, as redis-cli does, so the nodes do
			// not spend rounds resolving an epoch collision.
			{"CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i + 1)},
			{"CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(clusterFirstSlots[i]), strconv.Itoa(hi)},
		}
		for _, args := range steps {
			if err := expectOK(p.addr, args...); err != nil {
				return nil, err
			}
		}
		r, err := doAddr(p.addr, doTimeout, "CLUSTER", "MYID")
		if err != nil || r.Kind != backend.KindString {
			return nil, fmt.Errorf("redistest: CLUSTER MYID on %s: %v %v", p.addr, r, err)
		}
		ids[i] = r.Str
	}
	return ids, nil
}

// meetAll introduces every pair of nodes with CLUSTER MEET.
func meetAll(procs []*proc, buses []int) error {
	for i := range procs {
		for j := i + 1; j < len(procs); j++ {
			_, port, _ := strings.Cut(procs[j].addr, ":")
			if err := expectOK(procs[i].addr, "CLUSTER", "MEET", "127.0.0.1", port, strconv.Itoa(buses[j])); err != nil {
				return err
			}
		}
	}
	return nil
}

func expectOK(addr string, args ...string) error {
	r, err := doAddr(addr, doTimeout, args...)
	if err == nil && r.Str != "OK" {
		err = fmt.Errorf("reply %v", r)
	}
	if err != nil {
		return fmt.Errorf("redistest: %s on %s: %w", strings.Join(args, " "), addr, err)
	}
	return nil
}

// waitClusterReady polls every node until each reports cluster_state:ok
// with all slots served and three known nodes, and each one's CLUSTER NODES
// shows the same three connected masters with the same slots. A single
// node's "ok" is not enough: a client that reads the slot map from a node
// still in handshake with the others routes wrongly, and a PUBLISH reaches
// only nodes whose bus links are up.
func waitClusterReady(procs []*proc, ids []string, buses []int) error {
	want := make(map[string]string, len(procs)) // id -> "addr@bus slots"
	for i, p := range procs {
		hi := 16383
		if i+1 < len(procs) {
			hi = clusterFirstSlots[i+1] - 1
		}
		want[ids[i]] = fmt.Sprintf("%s@%d %d-%d", p.addr, buses[i], clusterFirstSlots[i], hi)
	}
	deadline := time.Now().Add(clusterTimeout)
	var last error
	for time.Now().Before(deadline) {
		last = nil
		for _, p := range procs {
			if last = nodeReady(p.addr, want); last != nil {
				break
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("after %v: %w", clusterTimeout, last)
}

func nodeReady(addr string, want map[string]string) error {
	r, err := doAddr(addr, doTimeout, "CLUSTER", "INFO")
	if err != nil {
		return err
	}
	info := map[string]string{}
	for _, line := range strings.Split(r.Str, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			info[k] = v
		}
	}
	for k, v := range map[string]string{
		"cluster_state":       "ok",
		"cluster_slots_ok":    "16384",
		"cluster_known_nodes": strconv.Itoa(len(want)),
		"cluster_size":        strconv.Itoa(len(want)),
	} {
		if info[k] != v {
			return fmt.Errorf("%s: CLUSTER INFO %s:%s, want %s", addr, k, info[k], v)
		}
	}
	r, err = doAddr(addr, doTimeout, "CLUSTER", "NODES")
	if err != nil {
		return err
	}
	// <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(r.Str), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return fmt.Errorf("%s: CLUSTER NODES line %q", addr, line)
		}
		w, ok := want[f[0]]
		if !ok {
			return fmt.Errorf("%s: CLUSTER NODES has unknown node %q", addr, line)
		}
		nodeAddr, _, _ := strings.Cut(f[1], ",") // drop ",hostname"
		got := nodeAddr + " " + strings.Join(f[8:], " ")
		if got != w || (f[2] != "master" && f[2] != "myself,master") || f[7] != "connected" {
			return fmt.Errorf("%s: CLUSTER NODES line %q, want %q master connected", addr, line, w)
		}
		seen++
	}
	if seen != len(want) {
		return fmt.Errorf("%s: CLUSTER NODES lists %d nodes, want %d", addr, seen, len(want))
	}
	return nil
}
