// Package bench reproduces the seed's heartbeat and metadata tables for
// every strategy on both backends, and adds what the seed's tables hide:
// round trips per operation (counted by backend/counting between the
// Service and the adapter), updates lost by a compare-and-set, and the
// distance to what Redis itself can do on the same machine (the ceiling:
// heartbeat.lua sent as raw pipelined EVALSHA with no service logic).
//
// Three ways in:
//
//	go test -bench . ./bench                  # Go benchmarks, b.RunParallel, shared test redis-server
//	go run ./bench/cmd/presence-bench [-quick] [-json] [-out tables.md] [-svg chart.svg]
//	go run ./bench/cmd/loadtest               # end to end, against a running presence server
//
// Scenarios (presence-bench, and Run):
//
//   - heartbeat, the seed's: 100 connections, each heartbeating every 5 s
//     (open loop), for a bounded time;
//   - heartbeat saturation: 16, 64, 256 and 1024 connections, each sending
//     its next heartbeat when the last is answered (closed loop);
//   - ceiling: the same heartbeat.lua calls, as strategy.HeartbeatEval builds
//     them, sent by rueidis directly (auto-pipelined, and as DoMulti batches);
//     every saturation row is reported as a fraction of the best of them;
//   - metadata: W writers (default 20) each reading the channel and updating
//     a counter item to the value read + 1 with MajorRevision set to the
//     majorRevision read; lost updates = successful updates − final counter.
//     Beside the lua and watch strategies runs the seed's application-level
//     CAS (read, compare in Go, write without WATCH), implemented here only.
//
// Loopback hides what round trips cost; DelayProxy (presence-bench
// -redis-delay) puts a network's latency between the clients and Redis
// without leaving the machine.
//
// Every load loop is bounded in time and in count; every scenario uses keys
// under a prefix of its own and removes them, so a shared Redis (REDIS_URL)
// is left as found. Tests run each scenario for a tiny budget and check
// correctness only (round trips per strategy, no lost update for lua and
// watch), never speed.
package bench
