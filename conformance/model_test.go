package conformance

import (
	"flag"
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds a porcupine operation; ret < 0 makes it ambiguous.
func op(client int, in, out any, call, ret int64) porcupine.Operation {
	if ret < 0 {
		ret = math.MaxInt64
	}
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func TestPresenceModel(t *testing.T) {
	const T = 1000
	join := pInput{Kind: pJoin, Room: "r0", Conn: "c0", User: "u0", Fields: [numKeys]string{"1"}}
	hb := func(e int64, patch string) pInput {
		return pInput{Kind: pHeartbeat, Room: "r0", Conn: "c0", HasEpoch: e >= 0, Epoch: e, Fields: [numKeys]string{patch}}
	}
	obs := pInput{Kind: pObserve, Room: "r0", Conn: "c0"}
	seen := func(e int64, v string) pOutput {
		return pOutput{Out: outOK, Present: true, User: "u0", Epoch: e, State: [numKeys]string{v}}
	}
	for _, c := range []struct {
		name  string
		ops   []porcupine.Operation
		legal bool
	}{
		{"join, stale heartbeat, snapshot", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T-1, "2"), pOutput{Out: outStale}, 20, 30),
			op(1, obs, seen(T, "1"), 40, 50),
		}, true},
		{"a rejoin returns the same epoch", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, join, pOutput{Out: outOK, Epoch: T}, 20, 30),
		}, false},
		{"the old epoch is accepted after a rejoin", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(1, join, pOutput{Out: outOK, Epoch: T + 1}, 20, 30),
			op(0, hb(T, "2"), pOutput{Out: outOK, Epoch: T, Changed: true}, 40, 50),
		}, false},
		{"a stale heartbeat wrote its patch", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, ""), pOutput{Out: outOK, Epoch: T + 5}, 20, 30),
			op(1, hb(T+1, "2"), pOutput{Out: outStale}, 40, 50),
			op(0, obs, seen(T+5, "2"), 60, 70),
		}, false},
		{"the stored epoch went down", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, ""), pOutput{Out: outOK, Epoch: T + 5}, 20, 30),
			op(1, obs, seen(T+5, "1"), 40, 50),
			op(1, obs, seen(T+3, "1"), 60, 70),
		}, false},
		{"a concurrent heartbeat linearizes after a read", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+2, "2"), pOutput{Out: outOK, Epoch: T + 2, Changed: true}, 20, 100),
			op(1, obs, seen(T, "1"), 30, 40),
			op(1, obs, seen(T+2, "2"), 110, 120),
		}, true},
		{"an ambiguous heartbeat that had not happened yet, then had", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, ""), pOutput{Out: outAmbiguous}, 20, -1),
			op(1, obs, seen(T, "1"), 30, 40),
			op(1, obs, seen(T+5, "1"), 50, 60),
		}, true},
		{"an ambiguous heartbeat that never happened", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, ""), pOutput{Out: outAmbiguous}, 20, -1),
			op(1, obs, seen(T, "1"), 30, 40),
		}, true},
		{"an ambiguous heartbeat undone", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, ""), pOutput{Out: outAmbiguous}, 20, -1),
			op(1, obs, seen(T+5, "1"), 30, 40),
			op(1, obs, seen(T, "1"), 50, 60),
		}, false},
		{"an injected fault: the heartbeat did not happen", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, "2"), pOutput{Out: outAmbiguous}, 20, 30),
			op(1, obs, seen(T, "1"), 40, 50),
		}, true},
		{"an injected fault: the heartbeat happened", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, "2"), pOutput{Out: outAmbiguous}, 20, 30),
			op(1, obs, seen(T+5, "2"), 40, 50),
		}, true},
		{"an injected fault: the heartbeat happened after it returned", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+5, "2"), pOutput{Out: outAmbiguous}, 20, 30),
			op(1, obs, seen(T, "1"), 40, 50),
			op(1, obs, seen(T+5, "2"), 60, 70),
		}, false},
		{"a heartbeat resurrects a conn after leave", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, pInput{Kind: pLeave, Room: "r0", Conn: "c0"}, pOutput{Out: outOK}, 20, 30),
			op(1, hb(-1, "3"), pOutput{Out: outOK, Epoch: T, Changed: true}, 40, 50),
		}, false},
		{"a rejoin after expiry continues the epochs", []porcupine.Operation{
			op(0, join, pOutput{Out: outOK, Epoch: T}, 0, 10),
			op(0, hb(T+9, ""), pOutput{Out: outOK, Epoch: T + 9}, 20, 30),
			op(0, pInput{Kind: pExpire, Room: "r0", Conn: "c0"}, pOutput{Out: outOK}, 40, 50),
			op(0, hb(T+9, ""), pOutput{Out: outNotFound}, 60, 70),
			op(0, join, pOutput{Out: outOK, Epoch: T + 10}, 80, 90),
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(presenceModel(T), c.ops); got != c.legal {
				t.Errorf("linearizable = %v, want %v", got, c.legal)
			}
		})
	}
}

func TestMetadataModel(t *testing.T) {
	set := mInput{Kind: mSet, Chan: "n0", Major: 0, Items: []mItemIn{{Idx: 0, Value: "x"}}}
	upd := mInput{Kind: mUpdate, Chan: "n0", Major: -1, Items: []mItemIn{{Idx: 0, Value: "y", Rev: 1}}}
	get := mInput{Kind: mGet, Chan: "n0", Major: -1}
	rec := func(major int64, val string, rev int64) mOutput {
		o := mOutput{Out: outOK, Major: major}
		if val != "" {
			o.Items[0] = mItem{Exists: true, Value: val, Rev: rev}
		}
		return o
	}
	for _, c := range []struct {
		name  string
		ops   []porcupine.Operation
		legal bool
	}{
		{"set, update, get", []porcupine.Operation{
			op(0, set, rec(1, "x", 1), 0, 10),
			op(0, upd, rec(2, "y", 2), 20, 30),
			op(1, get, rec(2, "y", 2), 40, 50),
		}, true},
		{"two compare-and-sets of one revision both succeed", []porcupine.Operation{
			op(0, set, rec(1, "x", 1), 0, 10),
			op(0, upd, rec(2, "y", 2), 20, 40),
			op(1, upd, rec(2, "y", 2), 20, 40),
		}, false},
		{"two sets at majorRevision 0 both succeed", []porcupine.Operation{
			op(0, set, rec(1, "x", 1), 0, 10),
			op(1, set, rec(1, "x", 1), 0, 10),
		}, false},
		{"a conflict changes nothing", []porcupine.Operation{
			op(0, set, rec(1, "x", 1), 0, 10),
			op(0, set, mOutput{Out: outConflict}, 20, 30),
			op(1, get, rec(1, "x", 1), 40, 50),
		}, true},
		{"a conflict that wrote", []porcupine.Operation{
			op(0, set, rec(1, "x", 1), 0, 10),
			op(0, mInput{Kind: mSet, Chan: "n0", Major: 0, Items: []mItemIn{{Idx: 0, Value: "z"}}}, mOutput{Out: outConflict}, 20, 30),
			op(1, get, rec(2, "z", 1), 40, 50),
		}, false},
		{"an unknown item is invalid", []porcupine.Operation{
			op(0, upd, mOutput{Out: outInvalid}, 0, 10),
		}, true},
		{"an unknown item is updated", []porcupine.Operation{
			op(0, upd, rec(1, "y", 1), 0, 10),
		}, false},
		{"a mutation under someone else's lock", []porcupine.Operation{
			op(0, mInput{Kind: mAcquire, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 0, 10),
			op(1, mInput{Kind: mSet, Chan: "n0", Major: -1, Locked: true, Actor: "u1"}, rec(1, "", 0), 20, 30),
		}, false},
		{"a mutation under one's own lock", []porcupine.Operation{
			op(0, mInput{Kind: mAcquire, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 0, 10),
			op(1, mInput{Kind: mSet, Chan: "n0", Major: -1, Locked: true, Actor: "u1"}, mOutput{Out: outLocked}, 20, 30),
			op(0, mInput{Kind: mSet, Chan: "n0", Major: -1, Locked: true, Actor: "u0"}, rec(1, "", 0), 40, 50),
			op(1, mInput{Kind: mRelease, Chan: "n0", Actor: "u1"}, mOutput{Out: outLocked}, 60, 70),
		}, true},
		{"enforced: a mutation without the lock while it is held", []porcupine.Operation{
			op(0, mInput{Kind: mAcquire, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 0, 10),
			op(1, mInput{Kind: mSet, Chan: "n0", Major: -1, Actor: "u1", Enforced: true}, rec(1, "", 0), 20, 30),
		}, false},
		{"enforced: the holder without lockName is refused, with it writes", []porcupine.Operation{
			op(0, mInput{Kind: mAcquire, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 0, 10),
			op(0, mInput{Kind: mSet, Chan: "n0", Major: -1, Actor: "u0", Enforced: true}, mOutput{Out: outLocked}, 20, 30),
			op(0, mInput{Kind: mSet, Chan: "n0", Major: -1, Locked: true, Actor: "u0", Enforced: true}, rec(1, "", 0), 40, 50),
		}, true},
		{"enforced: a second lock, held by another, bars the holder of the first", []porcupine.Operation{
			op(0, mInput{Kind: mAcquire, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 0, 10),
			op(1, mInput{Kind: mAcquire, Chan: "n0", Lock: 1, Actor: "u1"}, mOutput{Out: outOK}, 20, 30),
			op(0, mInput{Kind: mSet, Chan: "n0", Major: -1, Locked: true, Actor: "u0", Enforced: true}, rec(1, "", 0), 40, 50),
		}, false},
		{"advisory: a mutation without lockName ignores the lock", []porcupine.Operation{
			op(0, mInput{Kind: mAcquire, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 0, 10),
			op(1, mInput{Kind: mSet, Chan: "n0", Major: -1, Actor: "u1"}, rec(1, "", 0), 20, 30),
			op(0, mInput{Kind: mRelease, Chan: "n0", Actor: "u0"}, mOutput{Out: outOK}, 40, 50),
			op(1, mInput{Kind: mSet, Chan: "n0", Major: -1, Actor: "u1", Enforced: true}, rec(2, "", 0), 60, 70),
		}, true},
		{"an ambiguous set seen, or not", []porcupine.Operation{
			op(0, set, mOutput{Out: outAmbiguous}, 0, -1),
			op(1, get, rec(0, "", 0), 10, 20),
			op(1, get, rec(1, "x", 1), 30, 40),
		}, true},
		{"an injected fault: the update happened or not, as the reads say", []porcupine.Operation{
			op(0, set, rec(1, "x", 1), 0, 10),
			op(0, upd, mOutput{Out: outAmbiguous}, 20, 30),
			op(1, get, rec(2, "y", 2), 40, 50),
			op(0, upd, mOutput{Out: outAmbiguous}, 60, 70),
			op(1, get, rec(2, "y", 2), 80, 90),
		}, true},
		{"a remove of nothing keeps majorRevision", []porcupine.Operation{
			op(0, mInput{Kind: mRemove, Chan: "n0", Major: -1, Items: []mItemIn{{Idx: 1}}}, rec(0, "", 0), 0, 10),
			op(0, set, rec(1, "x", 1), 20, 30),
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(metadataModel(), c.ops); got != c.legal {
				t.Errorf("linearizable = %v, want %v", got, c.legal)
			}
		})
	}
}

func TestOptionsPrecedence(t *testing.T) {
	o, err := Options{}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if o.Clients != DefaultClients || o.Nodes != DefaultNodes || o.Duration != defaultDuration() || o.MaxOps != DefaultMaxOps {
		t.Errorf("defaults: %+v", o)
	}
	o, _ = Options{Clients: 3, Duration: 2 * time.Second}.resolve()
	if o.Clients != 3 || o.Duration != 2*time.Second || o.Nodes != 2 {
		t.Errorf("fields: %+v", o)
	}
	t.Setenv("CONFORMANCE_DURATION", "5s")
	t.Setenv("CONFORMANCE_CLIENTS", "1")
	o, _ = Options{Duration: 2 * time.Second}.resolve()
	if o.Duration != 5*time.Second || o.Clients != 1 || o.Nodes != 1 {
		t.Errorf("environment over fields: %+v", o)
	}
	f := flag.Lookup("conformance.duration")
	f.Value.Set("7s")
	t.Cleanup(func() { f.Value.Set("0s") })
	if o, _ = (Options{}).resolve(); o.Duration != 7*time.Second {
		t.Errorf("flag over environment: %+v", o)
	}
	t.Setenv("CONFORMANCE_CLIENTS", "many")
	if _, err := (Options{}).resolve(); err == nil {
		t.Error("CONFORMANCE_CLIENTS=many was accepted")
	}
	if got := (Options{}).spec("batch"); got != DefaultSpecs["batch"] {
		t.Errorf("spec(batch) = %q", got)
	}
	if got := (Options{Specs: map[string]string{"batch": "batch?window=3ms"}}).spec("batch"); got != "batch?window=3ms" {
		t.Errorf("spec with Specs = %q", got)
	}
	if got := (Options{}).spec("mine?x=1"); got != "mine?x=1" {
		t.Errorf("spec of a full spec = %q", got)
	}
}

// TestRun runs the suite as a backend's test would, on the built-in lua
// strategies (the backend packages run it on every strategy and server).
func TestRun(t *testing.T) {
	RunOptions(t, selfTestTarget(t, 0), Options{Heartbeats: []string{"lua"}, Metadatas: []string{"lua"}})
}
