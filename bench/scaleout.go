package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// ScaleScenario measures how events spread over server nodes and shards
// (issue 16, docs/SCALING.md): Nodes services on one Redis Cluster, each
// serving its own rooms (room i has its sockets on node i % Nodes only),
// each following its rooms with a presence.Feed. Every room gets joins,
// state updates (heartbeats with a patch), metadata sets on the channel
// named after it, and leaves; every node counts what its subscriptions
// receive, and every master what it published and sent over the cluster
// bus. The same load runs in each pub/sub mode.
type ScaleScenario struct {
	Backend      string
	Modes        []string // presence.PubSubPattern, PubSubChannels, PubSubSharded
	Nodes        int
	Rooms        int
	ConnsPerRoom int
	Updates      int // heartbeats with a changing patch per conn
	MetaSets     int // metadata sets per room
	// Receive is how many messages redis-benchmark publishes on one room
	// of node 0 to measure this process's CPU per message received (0:
	// skip that phase).
	Receive  int
	Progress io.Writer
}

// DefaultScaleScenario is the layout: 4 nodes on the 3-master
// test cluster.
func DefaultScaleScenario() ScaleScenario {
	return ScaleScenario{
		Backend: "rueidis", Modes: []string{presence.PubSubPattern, presence.PubSubChannels, presence.PubSubSharded},
		Nodes: 4, Rooms: 240, ConnsPerRoom: 4, Updates: 10, MetaSets: 2, Receive: 200_000,
	}
}

// ScaleRow is one mode's figures.
type ScaleRow struct {
	Mode string `json:"mode"`
	// Published events: presence (join, update, leave) and metadata.
	Presence int64 `json:"presence"`
	Metadata int64 `json:"metadata"`
	// Received by each node's subscriptions (presence + metadata).
	PerNode []int64 `json:"perNode"`
	// Own is what each node needs: the events of its own rooms.
	Own []int64 `json:"own"`
	// Rooms followed by all nodes together (channels subscribed).
	NumPat int64       `json:"numpat"` // PUBSUB NUMPAT summed over the masters, under load
	Shards []ShardStat `json:"shards"`
	// ReceiveUs is this process's CPU per message received by one node
	// (adapter, feed, handler), µs; ReceiveRate the messages/s one node
	// took in that phase.
	ReceiveUs   float64 `json:"receiveUs"`
	ReceiveRate float64 `json:"receiveRate"`
	// PublishRedisUs is the masters' CPU (all of them together) per
	// message of that phase: the PUBLISH or SPUBLISH, its cluster bus
	// relays and its deliveries, µs.
	PublishRedisUs float64 `json:"publishRedisUs"`
	Seconds        float64 `json:"seconds"`
}

// ShardStat is one master's share of a mode's run.
type ShardStat struct {
	Addr string `json:"addr"`
	// PUBLISH and SPUBLISH calls (scripts' included), from INFO commandstats.
	Publish  int64 `json:"publish"`
	SPublish int64 `json:"spublish"`
	// Messages this master sent over the cluster bus to relay publishes
	// (cluster_stats_messages_publish_sent + publishshard_sent).
	BusSent int64 `json:"busSent"`
	// Server CPU over the run, ms.
	CPUms float64 `json:"cpuMs"`
	// Channels subscribed on this master (classic + sharded), under load.
	Channels int64 `json:"channels"`
}

func (sc ScaleScenario) logf(format string, args ...any) { progressf(sc.Progress, format, args...) }

// RunScale runs the scenario on a cluster whose masters are t.Addrs.
func RunScale(ctx context.Context, t Target, sc ScaleScenario) ([]ScaleRow, error) {
	if len(t.Addrs) < 2 {
		return nil, errors.New("bench: the scale-out scenario needs a cluster (every master's address)")
	}
	if sc.Nodes < 1 || sc.Rooms < sc.Nodes || sc.ConnsPerRoom < 1 {
		return nil, fmt.Errorf("bench: scale-out: %d nodes, %d rooms, %d conns per room", sc.Nodes, sc.Rooms, sc.ConnsPerRoom)
	}
	var rows []ScaleRow
	for i, mode := range sc.Modes {
		row, err := sc.run(ctx, t, mode, fmt.Sprintf("bscale%d%d", time.Now().UnixNano()%1e6, i))
		if err != nil {
			return rows, fmt.Errorf("bench: scale-out %s: %w", mode, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// scaleNode is one server node: a service and its feed's counters.
type scaleNode struct {
	svc      *presence.Service
	feed     *presence.Feed
	presence atomic.Int64
	metadata atomic.Int64
}

func (sc ScaleScenario) run(ctx context.Context, t Target, mode, prefix string) (ScaleRow, error) {
	row := ScaleRow{Mode: mode, PerNode: make([]int64, sc.Nodes), Own: make([]int64, sc.Nodes)}
	nodes := make([]*scaleNode, sc.Nodes)
	defer func() {
		for _, n := range nodes {
			if n != nil {
				if n.feed != nil {
					n.feed.Close()
				}
				n.svc.Close()
			}
		}
	}()
	for i := range nodes {
		cfg := t.Config(sc.Backend)
		cfg.KeyPrefix, cfg.PubSub, cfg.Logger = prefix, mode, quietLogger()
		cfg.ReaperInterval = -1
		svc, err := presence.Open(ctx, cfg)
		if err != nil {
			return row, err
		}
		if got := svc.PubSub(); got != mode {
			svc.Close()
			return row, fmt.Errorf("asked for pub/sub %q, the service runs %q", mode, got)
		}
		n := &scaleNode{svc: svc}
		nodes[i] = n
		feed, err := svc.NewFeed(ctx, presence.FeedHandlers{
			Presence: func(presence.RawEvent) { n.presence.Add(1) },
			Metadata: func(presence.RawEvent) { n.metadata.Add(1) },
			User:     func(presence.RawEvent) {},
		})
		if err != nil {
			return row, err
		}
		n.feed = feed
	}
	room := func(r int) string { return "room" + strconv.Itoa(r) }
	owner := func(r int) *scaleNode { return nodes[r%sc.Nodes] }
	if err := parallel(ctx, sc.Rooms, func(ctx context.Context, r int) error {
		return owner(r).feed.FollowRoom(ctx, room(r))
	}); err != nil {
		return row, fmt.Errorf("follow rooms: %w", err)
	}

	probes, err := newShardProbes(t.Addrs)
	if err != nil {
		return row, err
	}
	defer probes.close()
	before, err := probes.snapshot(ctx)
	if err != nil {
		return row, err
	}
	sc.logf("scale-out %s: %d nodes, %d rooms × %d conns, %d updates each", mode, sc.Nodes, sc.Rooms, sc.ConnsPerRoom, sc.Updates)
	start := time.Now()
	var published, meta atomic.Int64
	var numpat atomic.Int64
	var channels []int64
	err = parallel(ctx, sc.Rooms*sc.ConnsPerRoom, func(ctx context.Context, i int) error {
		r, c := i/sc.ConnsPerRoom, i%sc.ConnsPerRoom
		svc := owner(r).svc
		conn := "c" + strconv.Itoa(c)
		if _, err := svc.Join(ctx, room(r), conn, "u"+strconv.Itoa(i), nil); err != nil {
			return err
		}
		published.Add(1)
		for u := range sc.Updates {
			res, err := svc.Heartbeat(ctx, room(r), conn, presence.HeartbeatParams{PatchState: json.RawMessage(`{"n":` + strconv.Itoa(u+1) + `}`)})
			if err != nil {
				return err
			}
			if res.Changed {
				published.Add(1)
			}
		}
		if c == 0 {
			for m := range sc.MetaSets {
				ch := presence.Channel{Type: "doc", Name: room(r)}
				if _, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: strconv.Itoa(m)}}, presence.MetadataOptions{}); err != nil {
					return err
				}
				meta.Add(1)
			}
			if r == 0 {
				// Under load, with every room followed: what the masters hold.
				n, chans, err := probes.subscriptions(ctx)
				if err != nil {
					return err
				}
				numpat.Store(n)
				channels = chans
			}
		}
		if err := svc.Leave(ctx, room(r), conn); err != nil {
			return err
		}
		published.Add(1)
		return nil
	})
	if err != nil {
		return row, err
	}
	row.Presence, row.Metadata, row.NumPat = published.Load(), meta.Load(), numpat.Load()
	perRoom := row.Presence/int64(sc.Rooms) + row.Metadata/int64(sc.Rooms)
	for r := range sc.Rooms {
		row.Own[r%sc.Nodes] += perRoom
	}
	// Wait for the deliveries: every node receives its own rooms' events,
	// and in pattern mode everyone's.
	deadline := time.Now().Add(30 * time.Second)
	for {
		done := true
		for i, n := range nodes {
			want := row.Own[i]
			if mode == presence.PubSubPattern {
				want = row.Presence + row.Metadata
			}
			if n.presence.Load()+n.metadata.Load() < want {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return row, err
		}
	}
	if err := sleep(ctx, 500*time.Millisecond); err != nil { // events a node should not get
		return row, err
	}
	row.Seconds = time.Since(start).Seconds()
	after, err := probes.snapshot(ctx)
	if err != nil {
		return row, err
	}
	for i, n := range nodes {
		row.PerNode[i] = n.presence.Load() + n.metadata.Load()
	}
	for i, addr := range t.Addrs {
		st := ShardStat{Addr: addr}
		st.Publish = after[i].publish - before[i].publish
		st.SPublish = after[i].spublish - before[i].spublish
		st.BusSent = after[i].bus - before[i].bus
		st.CPUms = (after[i].cpu - before[i].cpu) * 1000
		if i < len(channels) {
			st.Channels = channels[i]
		}
		row.Shards = append(row.Shards, st)
	}
	if sc.Receive > 0 {
		if err := sc.receiveCost(ctx, t, probes, nodes, room(0), mode, &row); err != nil {
			return row, err
		}
	}
	sc.logf("  received per node %v (own %v); NUMPAT %d", row.PerNode, row.Own, row.NumPat)
	return row, nil
}

// receiveCost has redis-benchmark (another process) publish sc.Receive
// messages on room's event channel and charges this process's CPU to the
// messages its nodes received.
func (sc ScaleScenario) receiveCost(ctx context.Context, t Target, probes shardProbes, nodes []*scaleNode, room, mode string, row *ScaleRow) error {
	svc := nodes[0].svc
	channel := svc.Keys().RoomEvents(room)
	cmd := "PUBLISH"
	addr := t.Addrs[0]
	if mode == presence.PubSubSharded {
		cmd = "SPUBLISH"
		owner, err := probes.slotOwner(ctx, backend.KeySlot(channel))
		if err != nil {
			return err
		}
		addr = owner
	}
	host, port, _ := strings.Cut(addr, ":")
	payload := `{"type":"update","roomId":"` + room + `","userId":"u0","connId":"c0","state":{"n":1},"ts":1764547200000,"epoch":1764547200000,"seq":1}`
	var got0 []int64
	for _, n := range nodes {
		got0 = append(got0, n.presence.Load())
	}
	before, err := probes.snapshot(ctx)
	if err != nil {
		return err
	}
	cpu0 := selfCPU()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-h", host, "-p", port, "-n", strconv.Itoa(sc.Receive),
		"-c", "4", "-P", "32", "-q", cmd, channel, payload).CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-benchmark: %v: %s", err, out)
	}
	want := int64(sc.Receive)
	deadline := time.Now().Add(60 * time.Second)
	for nodes[0].presence.Load()-got0[0] < want && time.Now().Before(deadline) {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	took := time.Since(start)
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	var received int64
	for i, n := range nodes {
		received += n.presence.Load() - got0[i]
	}
	cpu := selfCPU() - cpu0
	after, err := probes.snapshot(ctx)
	if err != nil {
		return err
	}
	var redisCPU float64
	for i := range after {
		redisCPU += after[i].cpu - before[i].cpu
	}
	row.PublishRedisUs = redisCPU / float64(sc.Receive) * 1e6
	if received > 0 {
		row.ReceiveUs = cpu / float64(received) * 1e6
	}
	row.ReceiveRate = float64(nodes[0].presence.Load()-got0[0]) / took.Seconds()
	return nil
}

// shardProbes read each master's counters, a Probe per master.
type shardProbes []*Probe

type shardCounters struct {
	publish, spublish, bus int64
	cpu                    float64
}

func newShardProbes(addrs []string) (shardProbes, error) {
	var p shardProbes
	for _, a := range addrs {
		pr, err := NewProbe(Target{Addrs: []string{a}})
		if err != nil {
			p.close()
			return nil, err
		}
		p = append(p, pr)
	}
	return p, nil
}

func (p shardProbes) close() {
	for _, pr := range p {
		pr.Close()
	}
}

func (p shardProbes) snapshot(ctx context.Context) ([]shardCounters, error) {
	out := make([]shardCounters, len(p))
	for i, pr := range p {
		m, err := pr.info(ctx, "commandstats")
		if err != nil {
			return nil, err
		}
		out[i].publish = statCalls(m["cmdstat_publish"])
		out[i].spublish = statCalls(m["cmdstat_spublish"])
		if out[i].cpu, err = pr.CPU(ctx); err != nil {
			return nil, err
		}
		ci, err := pr.rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return nil, err
		}
		cm := parseInfo(ci)
		a, _ := strconv.ParseInt(cm["cluster_stats_messages_publish_sent"], 10, 64)
		b, _ := strconv.ParseInt(cm["cluster_stats_messages_publishshard_sent"], 10, 64)
		out[i].bus = a + b
	}
	return out, nil
}

// subscriptions returns NUMPAT summed over the masters and each master's
// count of subscribed channels (classic + sharded).
func (p shardProbes) subscriptions(ctx context.Context) (int64, []int64, error) {
	var numpat int64
	var chans []int64
	for _, pr := range p {
		n, err := pr.rdb.PubSubNumPat(ctx).Result()
		if err != nil {
			return 0, nil, err
		}
		numpat += n
		classic, err := pr.rdb.PubSubChannels(ctx, "*").Result()
		if err != nil {
			return 0, nil, err
		}
		sharded, err := pr.rdb.PubSubShardChannels(ctx, "*").Result()
		if err != nil {
			return 0, nil, err
		}
		chans = append(chans, int64(len(classic)+len(sharded)))
	}
	return numpat, chans, nil
}

// slotOwner returns the master serving slot, per the first master's
// CLUSTER SLOTS.
func (p shardProbes) slotOwner(ctx context.Context, slot int) (string, error) {
	slots, err := p[0].rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, s := range slots {
		if slot >= int(s.Start) && slot <= int(s.End) && len(s.Nodes) > 0 {
			return s.Nodes[0].Addr, nil
		}
	}
	return "", fmt.Errorf("no master serves slot %d", slot)
}

// statCalls reads calls=N of an INFO commandstats line.
func statCalls(v string) int64 {
	for _, f := range strings.Split(v, ",") {
		if n, ok := strings.CutPrefix(f, "calls="); ok {
			c, _ := strconv.ParseInt(n, 10, 64)
			return c
		}
	}
	return 0
}

// WriteScaleTable writes the rows as markdown.
func WriteScaleTable(w io.Writer, sc ScaleScenario, rows []ScaleRow) {
	fmt.Fprintf(w, "%d nodes on a %d-master cluster, %d rooms (each on one node) × %d conns, %d updates per conn, %d metadata sets per room; backend %s.\n\n",
		sc.Nodes, len(firstShards(rows)), sc.Rooms, sc.ConnsPerRoom, sc.Updates, sc.MetaSets, sc.Backend)
	fmt.Fprintln(w, "| mode | events published | received per node (own share) | NUMPAT | PUBLISH / SPUBLISH per master | bus messages per master | Redis CPU ms per master | channels per master | µs CPU per message received | Redis µs per message published |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		var per, pub, bus, cpu, chans []string
		for i, n := range r.PerNode {
			per = append(per, fmt.Sprintf("%d (%d)", n, r.Own[i]))
		}
		for _, s := range r.Shards {
			pub = append(pub, fmt.Sprintf("%d/%d", s.Publish, s.SPublish))
			bus = append(bus, strconv.FormatInt(s.BusSent, 10))
			cpu = append(cpu, fmt.Sprintf("%.0f", s.CPUms))
			chans = append(chans, strconv.FormatInt(s.Channels, 10))
		}
		fmt.Fprintf(w, "| %s | %d + %d meta | %s | %d | %s | %s | %s | %s | %.1f (%.0f msg/s) | %.1f |\n", r.Mode, r.Presence, r.Metadata,
			strings.Join(per, ", "), r.NumPat, strings.Join(pub, ", "), strings.Join(bus, ", "), strings.Join(cpu, ", "), strings.Join(chans, ", "), r.ReceiveUs, r.ReceiveRate, r.PublishRedisUs)
	}
}

func firstShards(rows []ScaleRow) []ShardStat {
	if len(rows) == 0 {
		return nil
	}
	return rows[0].Shards
}
