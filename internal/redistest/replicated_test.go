package redistest

import (
	"testing"
	"time"
)

// A graceful failover swaps a shard's master and replica; a killed master
// is replaced by its replica; data written before each fault and
// replicated (WAIT) is on the new master.
func TestReplicated(t *testing.T) {
	r := NewReplicated(t, 0)
	if got := r.Masters(t); got[0] != 0 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("initial masters %v, want [0 1 2]", got)
	}
	key := Prefix(t) + ":k"
	shard := r.ShardOf(key)
	if rep := r.DoKey(t, key, "SET", key, "v1"); rep.Str != "OK" {
		t.Fatalf("SET: %v", rep)
	}

	start := time.Now()
	promoted := r.Failover(t, shard)
	t.Logf("CLUSTER FAILOVER of shard %d settled in %v", shard, time.Since(start))
	if promoted != shard+Shards || r.Masters(t)[shard] != promoted {
		t.Fatalf("after Failover: promoted %d, masters %v", promoted, r.Masters(t))
	}
	if rep := r.DoKey(t, key, "GET", key); rep.Str != "v1" {
		t.Fatalf("GET after failover: %v", rep)
	}
	// The old master replicates the new one: a write is acknowledged by it.
	r.DoKey(t, key, "SET", key, "v2")
	if rep := r.DoKey(t, key, "WAIT", "1", "5000"); rep.Int != 1 {
		t.Fatalf("WAIT after failover: %v", rep)
	}

	start = time.Now()
	killed, promoted := r.KillMaster(t, shard)
	t.Logf("kill -9 of node %d: node %d promoted in %v", killed, promoted, time.Since(start))
	if killed != shard+Shards || promoted != shard || r.Masters(t)[shard] != shard {
		t.Fatalf("after KillMaster: killed %d promoted %d masters %v", killed, promoted, r.Masters(t))
	}
	if rep := r.DoKey(t, key, "GET", key); rep.Str != "v2" {
		t.Fatalf("GET after kill: %v", rep)
	}
	if rep := r.DoKey(t, key, "WAIT", "1", "100"); rep.Int != 0 {
		t.Fatalf("WAIT with the replica dead: %v, want 0", rep)
	}
}
