// Package conformance is the property-based suite that proves a presence
// deployment correct: every registered heartbeat and metadata strategy,
// run through presence.Service on a backend.Client you supply, is checked
// against the invariants of docs/DESIGN.md §4.
//
// For each heartbeat strategy it runs
//
//   - fencing: the fencing invariants asserted directly, step by step and
//     under concurrent heartbeats and rejoins: a conn's stored epoch never
//     decreases; a heartbeat below the stored epoch fails with
//     ErrStaleEpoch and writes nothing; a join returns an epoch above every
//     epoch the conn had, after leave, expiry and reaping too;
//   - sequential: a pgregory.net/rapid state machine of joins, rejoins,
//     heartbeats with stale, equal, higher and absent epochs and state
//     patches, leaves, expiries and reaper passes on a fake clock, whose
//     model predicts every result and is compared with the store after
//     each step;
//   - linearizable: a history of concurrent clients, checked with
//     github.com/anishathalye/porcupine against the sequential model of
//     presence (epoch, state and membership per conn);
//   - seq: concurrent joins, patching heartbeats and leaves; each room's
//     events carry seq growing by exactly one, and every snapshot equals
//     the room rebuilt from the events up to its seq;
//   - reaper: two nodes running the notify reaper (Config.Reaper "notify")
//     with the backstop sweep minutes away: a conn that stops heartbeating
//     leaves, exactly once, no sooner than the lookback and long before
//     any sweep, on its expired-key event; a conn of the same room that
//     heartbeats is never reaped; a rejoin is strictly newer than the
//     reaped epoch. Where notify cannot run (a client without
//     backend.NodeSubscriber, a server without CONFIG such as the embedded
//     one), the nodes must report the fallback to sweeping and still reap;
//
// and for each metadata strategy cas (the compare-and-set rules, locks,
// events, and a concurrent counter that must lose no increment),
// sequential and linearizable (value and revision per item,
// majorRevision and lock per channel).
//
// A backend's test runs it against every server it supports:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Target{
//			Name: "mybackend",
//			NewClient: func(t testing.TB) backend.Client {
//				c, err := mybackend.New(...)
//				if err != nil {
//					t.Fatal(err)
//				}
//				return c
//			},
//		})
//	}
//
// Calls that end ambiguously (a timeout, a broken connection) are
// modelled as "may or may not have happened". A history that is not
// linearizable is written as porcupine's HTML visualisation, and the path
// is logged. Budgets (Options) default to about a second per property and
// can be raised with -conformance.duration, -conformance.clients,
// -rapid.checks and -rapid.steps, or the matching environment variables;
// go test -short lowers them (ShortDuration, a fifth of rapid's checks).
//
// The suite proves its own power: its tests register deliberately broken
// strategies (a heartbeat that checks the epoch and writes in separate
// round trips, one that accepts lower epochs, a metadata strategy that
// compares revisions in Go between a read and a write) and assert that
// each is reported as a violation in every run.
//
// Nothing in the library imports this package; it imports package
// presence and package testing.
package conformance
