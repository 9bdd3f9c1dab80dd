// Package bench holds the benchmarks that reproduce the seed's heartbeat
// and metadata tables for every strategy on both backends, and add what the
// seed's tables hide: round trips per operation, lost updates, and the
// distance to what Redis itself can do on the same machine.
package bench
