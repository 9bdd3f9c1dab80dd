package bench

import (
	"os/exec"
	"testing"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
)

// TestScaleScenario checks what the scale-out figures rest on, with a tiny
// load on a private cluster (so no other test's publishes count): in the
// per-room modes a node receives exactly its own rooms' events and the
// masters hold no pattern subscription; in pattern mode every node
// receives every event; sharded room events cross no cluster bus link, so
// only the metadata events (classic) do.
func TestScaleScenario(t *testing.T) {
	srv := redistest.NewCluster(t)
	sc := DefaultScaleScenario()
	sc.Rooms, sc.ConnsPerRoom, sc.Updates, sc.MetaSets, sc.Receive = 12, 2, 3, 1, 0
	if _, err := exec.LookPath("redis-benchmark"); err == nil {
		sc.Receive = 2000
	}
	rows, err := RunScale(t.Context(), Target{Addrs: srv.Addrs}, sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want one per mode", len(rows))
	}
	wantPresence := int64(sc.Rooms * sc.ConnsPerRoom * (2 + sc.Updates))
	wantMeta := int64(sc.Rooms * sc.MetaSets)
	for _, r := range rows {
		if r.Presence != wantPresence || r.Metadata != wantMeta {
			t.Errorf("%s: published %d presence + %d metadata events, want %d + %d", r.Mode, r.Presence, r.Metadata, wantPresence, wantMeta)
		}
		var bus, spub int64
		for _, s := range r.Shards {
			bus += s.BusSent
			spub += s.SPublish
		}
		for i, got := range r.PerNode {
			want := r.Own[i]
			if r.Mode == presence.PubSubPattern {
				want = r.Presence + r.Metadata
			}
			if got != want {
				t.Errorf("%s: node %d received %d events, want %d", r.Mode, i, got, want)
			}
		}
		switch r.Mode {
		case presence.PubSubPattern:
			if r.NumPat == 0 {
				t.Errorf("pattern: NUMPAT 0 under load")
			}
		case presence.PubSubSharded:
			if r.NumPat != 0 {
				t.Errorf("sharded: NUMPAT %d under load, want 0", r.NumPat)
			}
			if spub < r.Presence {
				t.Errorf("sharded: %d SPUBLISH calls for %d presence events", spub, r.Presence)
			}
			if want := r.Metadata * int64(len(srv.Addrs)-1); bus != want {
				t.Errorf("sharded: %d bus messages, want %d: the metadata events' alone", bus, want)
			}
		case presence.PubSubChannels:
			if r.NumPat != 0 {
				t.Errorf("channels: NUMPAT %d under load, want 0", r.NumPat)
			}
			if spub != 0 || bus < (r.Presence+r.Metadata)*int64(len(srv.Addrs)-1) {
				t.Errorf("channels: %d SPUBLISH, %d bus messages for %d events", spub, bus, r.Presence+r.Metadata)
			}
		}
		if sc.Receive > 0 && r.ReceiveUs <= 0 {
			t.Errorf("%s: no receive cost measured", r.Mode)
		}
	}
}
