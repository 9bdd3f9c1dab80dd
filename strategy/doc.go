// Package strategy defines how presence heartbeats and channel-metadata
// mutations reach Redis, as interchangeable strategies chosen by a spec
// string ("lua", "batch?window=50ms&max=100", "watch?retries=5").
//
// Built-in strategies register themselves; users may register their own
// with [Heartbeats].Register or [Metadatas].Register, and the conformance
// suite checks every registered strategy. A strategy value is safe for
// concurrent use by many goroutines.
package strategy
