package redistest

import (
	"strconv"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
)

// MoveSlot gives an empty slot of cluster s from its master Addrs[from] to
// Addrs[to], as a resharding's last step does, and gives it back when the
// test ends (other tests share the cluster's slot layout). The former
// owner drops the slot's shard channels, pushing SUNSUBSCRIBE to their
// subscribers. NodeForSlot keeps reporting the original layout.
func (s *Server) MoveSlot(t testing.TB, slot, from, to int) {
	t.Helper()
	if r := s.DoNode(t, from, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)); r.Int != 0 {
		t.Fatalf("redistest: slot %d holds %v keys: only an empty slot moves without MIGRATE", slot, r)
	}
	s.setSlot(t, slot, from, to)
	t.Cleanup(func() { s.setSlot(t, slot, to, from) })
}

// setSlot moves slot from node from to node to: IMPORTING and MIGRATING,
// then NODE on the importer (which bumps its epoch so the change wins),
// the former owner and the others; then waits until every node routes the
// slot to its new owner.
func (s *Server) setSlot(t testing.TB, slot, from, to int) {
	t.Helper()
	id := func(i int) string {
		r := s.DoNode(t, i, "CLUSTER", "MYID")
		if r.Error() != nil {
			t.Fatalf("redistest: CLUSTER MYID: %v", r.Err)
		}
		return r.Str
	}
	sl := strconv.Itoa(slot)
	toID, fromID := id(to), id(from)
	type step struct {
		node int
		args []string
	}
	steps := []step{
		{to, []string{"CLUSTER", "SETSLOT", sl, "IMPORTING", fromID}},
		{from, []string{"CLUSTER", "SETSLOT", sl, "MIGRATING", toID}},
		{to, []string{"CLUSTER", "SETSLOT", sl, "NODE", toID}},
		// The importer's claim must carry the cluster's highest epoch, or
		// gossip can hand the slot back to the former owner (SETSLOT NODE
		// bumps it only when the importer is not already the one holding
		// the greatest epoch, which a previous move may have left tied).
		{to, []string{"CLUSTER", "BUMPEPOCH"}},
		{from, []string{"CLUSTER", "SETSLOT", sl, "NODE", toID}},
	}
	for i := range s.Addrs {
		if i != to && i != from {
			steps = append(steps, step{i, []string{"CLUSTER", "SETSLOT", sl, "NODE", toID}})
		}
	}
	for _, st := range steps {
		if r := s.DoNode(t, st.node, st.args...); r.Error() != nil {
			t.Fatalf("redistest: %v on %s: %v", st.args, s.Addrs[st.node], r.Err)
		}
	}
	deadline := time.Now().Add(clusterTimeout)
	for i := 0; i < len(s.Addrs); {
		if s.SlotOwner(t, i, slot) == s.Addrs[to] {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: slot %d: node %s does not route it to %s within %v", slot, s.Addrs[i], s.Addrs[to], clusterTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SlotOwner returns host:port of the master that node i's CLUSTER SLOTS
// names for slot, or "" if none.
func (s *Server) SlotOwner(t testing.TB, i, slot int) string {
	t.Helper()
	r := s.DoNode(t, i, "CLUSTER", "SLOTS")
	if r.Error() != nil {
		t.Fatalf("redistest: CLUSTER SLOTS on %s: %v", s.Addrs[i], r.Err)
	}
	for _, rng := range r.Elems {
		if len(rng.Elems) < 3 || int64(slot) < rng.Elems[0].Int || int64(slot) > rng.Elems[1].Int {
			continue
		}
		if m := rng.Elems[2].Elems; len(m) >= 2 {
			return m[0].Str + ":" + strconv.FormatInt(m[1].Int, 10)
		}
	}
	return ""
}

// EmptySlotName returns "{prefix-N}:" + suffix for the smallest N whose
// slot holds no key on its master, so MoveSlot can move it: tests sharing
// the cluster leave keys in random slots (nothing is flushed).
func (s *Server) EmptySlotName(t testing.TB, prefix, suffix string) string {
	t.Helper()
	for n := 0; n < 1000; n++ {
		name := "{" + prefix + "-" + strconv.Itoa(n) + "}:" + suffix
		slot := backend.KeySlot(name)
		if s.DoNode(t, s.NodeForSlot(slot), "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)).Int == 0 {
			return name
		}
	}
	t.Fatalf("redistest: no empty slot among 1000 names of %q", prefix)
	return ""
}
