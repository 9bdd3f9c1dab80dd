package conformance

import (
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/strategy"
)

// Target is the store under test: a backend.Client factory and, optionally,
// how to keep test cases apart in it.
type Target struct {
	// Name describes the target in failure messages, e.g.
	// "rueidis/cluster". Optional.
	Name string

	// NewClient returns a new client connected to the store under test.
	// Required. The suite asks for a few clients per property (concurrent
	// checks use Options.Nodes of them, as several server nodes would) and
	// closes each one when the property ends; Close must be idempotent, as
	// the backend.Client contract requires, so a factory may also register
	// its own t.Cleanup(c.Close). Call t.Fatal on failure.
	NewClient func(t testing.TB) backend.Client

	// Prefix returns a fresh key prefix (a presence.Config.KeyPrefix: no
	// '{' or '}') for one test case. Default: "conformance-" followed by
	// random characters. Cases keep apart by prefix rather than FLUSHALL,
	// so the suite can run against a Redis shared with other data; it
	// deletes the keys it knows it created when a case ends (keys a custom
	// strategy adds beyond the layout of package strategy are left to
	// their TTLs).
	Prefix func() string
}

// Properties the suite checks, in the order Run runs them. A heartbeat
// strategy gets fencing, sequential, linearizable, users, seq and reaper; a metadata strategy
// gets cas, sequential and linearizable.
const (
	// PropFencing asserts docs/DESIGN.md §4's fencing invariants directly:
	// stored epochs never decrease (also under concurrent heartbeats), a
	// stale heartbeat fails and writes nothing (state, last_seen, TTL,
	// epoch, events), rejoin epochs strictly increase (after leave,
	// expiry and reaping too), and an update event is published iff the
	// state changed.
	PropFencing = "fencing"
	// PropCAS asserts the metadata compare-and-set rules directly: right
	// and wrong majorRevision and item revisions, unknown items, locks,
	// lock fencing tokens (each acquisition's is greater, renew keeps it,
	// a write under a superseded token fails, also after its lock
	// expired, and no write under an older token commits after one under
	// a newer token, among concurrent holders), the record a conflict
	// carries, exactly one event per successful mutation, and no lost
	// update among concurrent compare-and-set increments.
	PropCAS = "cas"
	// PropSequential runs a rapid state machine whose model predicts the
	// result of every action and is compared with the store after each
	// step.
	PropSequential = "sequential"
	// PropLinearizable records a concurrent history of Options.Clients
	// clients and checks it with porcupine against the sequential model.
	PropLinearizable = "linearizable"
	// PropUsers asserts the user index guarantee (docs/DESIGN.md, "User
	// index"): after concurrent joins, leaves, expiries and reaps on
	// several nodes, with failed calls retried, and one reaper and one
	// repair pass, each user's index is the union of its conns in the
	// rooms, and its online/offline events alternate and end where the
	// index is.
	PropUsers = "users"
)

// DefaultSpecs are the specs the suite uses for built-in strategies whose
// defaults suit production rather than a test: the batcher's window is
// short so sequential steps stay fast, yet long enough that concurrent
// clients share batches, and its size limit is below the default 8
// clients, so batches are flushed both when full and when the window
// ends.
var DefaultSpecs = map[string]string{
	"batch": "batch?window=1ms&max=4",
}

// Run checks every registered heartbeat and metadata strategy against
// target, with default budgets adjusted by flags and environment variables
// (see Options). Each strategy and property is a subtest named
// "heartbeat=<name>/<property>" or "metadata=<name>/<property>", e.g.
// "heartbeat=lua/linearizable", so -run selects any part.
func Run(t *testing.T, target Target) {
	t.Helper()
	RunOptions(t, target, Options{})
}

// RunOptions is Run with explicit options; zero fields take their
// defaults.
func RunOptions(t *testing.T, target Target, opts Options) {
	t.Helper()
	if target.NewClient == nil {
		t.Fatal("conformance: Target.NewClient is nil")
	}
	opts, err := opts.resolve()
	if err != nil {
		t.Fatal(err)
	}
	hb := opts.Heartbeats
	if hb == nil {
		hb = strategy.Heartbeats.Names()
	}
	md := opts.Metadatas
	if md == nil {
		md = strategy.Metadatas.Names()
	}
	if len(hb) == 0 && len(md) == 0 {
		t.Fatal("conformance: no strategies to check")
	}
	t.Logf("conformance: target %s; %s", targetName(target), opts)
	for _, s := range hb {
		spec := opts.spec(s)
		t.Run("heartbeat="+specName(spec), func(t *testing.T) {
			for _, p := range heartbeatProps {
				if !opts.wants(p.name) {
					continue
				}
				t.Run(p.name, func(t *testing.T) {
					h := newHarness(t, target, opts, spec, "")
					p.run(t, h)
				})
			}
		})
	}
	for _, s := range md {
		spec := opts.spec(s)
		t.Run("metadata="+specName(spec), func(t *testing.T) {
			for _, p := range metadataProps {
				if !opts.wants(p.name) {
					continue
				}
				t.Run(p.name, func(t *testing.T) {
					h := newHarness(t, target, opts, "", spec)
					p.run(t, h)
				})
			}
		})
	}
}

// property is one check of a strategy. It reports violations through tb
// (a *testing.T in Run; the self-test passes a recorder) and may call
// tb.Fatalf, which ends the calling goroutine.
type property struct {
	name string
	run  func(tb rapid.TB, h *harness)
}

var (
	heartbeatProps = []property{
		{PropFencing, checkFencing},
		{PropSequential, checkPresenceSequential},
		{PropLinearizable, checkPresenceLinearizable},
		{PropUsers, checkUsers},
		{PropSeq, checkSeq},
		{PropReaper, checkReaper},
	}
	metadataProps = []property{
		{PropCAS, checkCAS},
		{PropSequential, checkMetadataSequential},
		{PropLinearizable, checkMetadataLinearizable},
	}
)

func targetName(t Target) string {
	if t.Name != "" {
		return t.Name
	}
	return "(unnamed)"
}

// specName is the strategy name of a spec: "batch" for
// "batch?window=1ms".
func specName(spec string) string {
	name, _, _ := strings.Cut(spec, "?")
	return name
}

// spec returns the spec to use for a strategy name or spec.
func (o Options) spec(s string) string {
	if strings.Contains(s, "?") {
		return s
	}
	if sp, ok := o.Specs[s]; ok {
		return sp
	}
	if sp, ok := DefaultSpecs[s]; ok {
		return sp
	}
	return s
}

func (o Options) wants(prop string) bool {
	if len(o.Properties) == 0 {
		return true
	}
	for _, p := range o.Properties {
		if p == prop {
			return true
		}
	}
	return false
}

func (o Options) String() string {
	return fmt.Sprintf("clients=%d nodes=%d duration=%v maxops=%d faults=%g optimeout=%v (rapid: -rapid.checks, -rapid.steps)",
		o.Clients, o.Nodes, o.Duration, o.MaxOps, o.FaultRate, o.OpTimeout)
}
