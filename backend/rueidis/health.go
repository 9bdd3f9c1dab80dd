package rueidis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// EachMaster sends cmds as one pipeline to every master of the cluster
// (the one server when standalone), in parallel, and then calls fn once per
// master, in address order, with its replies or the error that kept it
// from answering. A health check uses it: Do would reach only one node.
//
// The masters are those a node lists in CLUSTER SLOTS (the first node that
// answers, in address order), not only those rueidis holds connections
// to: a master rueidis dropped from its topology is reported as failing.
// EachMaster fails only when no node can list the masters.
func (c *Client) EachMaster(ctx context.Context, cmds []backend.Cmd, fn func(addr string, replies []backend.Reply, err error)) error {
	if c.closed.Load() {
		return backend.ErrClosed
	}
	nodes := c.rc.Nodes()
	var masters []string
	if c.Cluster() {
		var err error
		if masters, err = c.clusterMasters(ctx, nodes); err != nil {
			return err
		}
	} else {
		for addr := range nodes {
			masters = append(masters, addr)
		}
	}
	sort.Strings(masters)
	replies := make([][]backend.Reply, len(masters))
	errs := make([]error, len(masters))
	var wg sync.WaitGroup
	for i, addr := range masters {
		node, ok := nodes[addr]
		if !ok {
			errs[i] = errors.New("backend/rueidis: no connection to this master (not in the client's topology)")
			continue
		}
		wg.Go(func() { replies[i], errs[i] = c.doMulti(ctx, node, cmds) })
	}
	wg.Wait()
	for i, addr := range masters {
		fn(addr, replies[i], errs[i])
	}
	return nil
}

// clusterMasters returns the masters listed by clusterSlots, each once.
func (c *Client) clusterMasters(ctx context.Context, nodes map[string]rueidis.Client) ([]string, error) {
	ranges, err := c.clusterSlots(ctx, nodes, nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range ranges {
		if !seen[r.addr] {
			seen[r.addr] = true
			out = append(out, r.addr)
		}
	}
	return out, nil
}

// clusterSlots asks every known node for CLUSTER SLOTS, in parallel so
// that an unreachable node costs no more than the others' answers, and
// returns the slot ranges the first answering node lists: first in
// prefer, then in address order.
func (c *Client) clusterSlots(ctx context.Context, nodes map[string]rueidis.Client, prefer map[string]bool) ([]slotRange, error) {
	addrs := make([]string, 0, len(nodes))
	for addr := range nodes {
		addrs = append(addrs, addr)
	}
	sort.Slice(addrs, func(i, j int) bool {
		if prefer[addrs[i]] != prefer[addrs[j]] {
			return prefer[addrs[i]]
		}
		return addrs[i] < addrs[j]
	})
	answers := make([][]slotRange, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			r, err := c.doMulti(ctx, nodes[addr], []backend.Cmd{{Name: "CLUSTER", Args: []string{"SLOTS"}}})
			if err == nil {
				answers[i], err = slotRanges(r[0], addr)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i := range addrs {
		if errs[i] == nil {
			return answers[i], nil
		}
	}
	return nil, fmt.Errorf("backend/rueidis: no node lists the cluster's masters: %w", errors.Join(errs...))
}

// slotRange is slots first..last, served by the master at addr.
type slotRange struct {
	first, last int
	addr        string
}

// slotRanges reads the master of each slot range of a CLUSTER SLOTS
// reply: [start, end, [host, port, id, ...], replicas...]. An empty host
// is the answering node's own (from is its address); "?" is a master
// without a known endpoint, which no client can reach either.
func slotRanges(r backend.Reply, from string) ([]slotRange, error) {
	ranges, err := r.AsArray()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	fromHost, _, _ := net.SplitHostPort(from)
	var out []slotRange
	for _, rg := range ranges {
		if len(rg.Elems) < 3 || len(rg.Elems[2].Elems) < 2 {
			continue
		}
		first, err1 := rg.Elems[0].AsInt()
		last, err2 := rg.Elems[1].AsInt()
		host, _ := rg.Elems[2].Elems[0].AsString()
		port, err := rg.Elems[2].Elems[1].AsInt()
		if err != nil || err1 != nil || err2 != nil || host == "?" {
			continue
		}
		if host == "" {
			host = fromHost
		}
		out = append(out, slotRange{int(first), int(last), net.JoinHostPort(host, strconv.FormatInt(port, 10))})
	}
	if len(out) == 0 {
		return nil, errors.New("CLUSTER SLOTS lists no master")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	return out, nil
}

// ownerOf returns the master serving slot in ranges (sorted by first
// slot), or "" when no range covers it.
func ownerOf(ranges []slotRange, slot int) string {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i].last >= slot })
	if i < len(ranges) && ranges[i].first <= slot {
		return ranges[i].addr
	}
	return ""
}

var (
	_ backend.MasterRunner      = (*Client)(nil)
	_ backend.SubscriptionState = (*subscription)(nil)
	_ backend.Resubscriber      = (*subscription)(nil)
)
