package strategy

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"

	"github.com/realtime-message/presence/backend"
)

// Env is what a strategy is built with.
type Env struct {
	Client  backend.Client
	Scripts *backend.Scripts // runs luasrc scripts over Client
	Keys    core.Keys
	TTL     time.Duration // presence TTL of a conn hash
	Logger  *slog.Logger
	Hooks   Hooks

	// Publish is the command that publishes room events: "PUBLISH", or
	// "SPUBLISH" when the service uses sharded pub/sub. Empty means
	// PUBLISH, so an Env built before sharded pub/sub keeps its behaviour.
	Publish string
	// MetaEvents names the channel of channel (typ, name)'s metadata
	// events, always published with classic PUBLISH. Nil means
	// Keys.MetaEvents, the channel before per-room subscriptions.
	MetaEvents func(typ, name string) string
}

// check refuses an Env whose Publish is not a publish command: it is sent
// as a command, in a MULTI or as a script's argument.
func (e Env) check() error {
	switch e.Publish {
	case "", "PUBLISH", "SPUBLISH":
		return nil
	}
	return fmt.Errorf("%w: strategy.Env.Publish %q: want PUBLISH or SPUBLISH", core.ErrInvalidArgument, e.Publish)
}

// publish is Env.Publish with its default applied.
func (e Env) publish() string {
	if e.Publish == "" {
		return "PUBLISH"
	}
	return e.Publish
}

// metaEvents is Env.MetaEvents with its default applied.
func (e Env) metaEvents(typ, name string) string {
	if e.MetaEvents == nil {
		return e.Keys.MetaEvents(typ, name)
	}
	return e.MetaEvents(typ, name)
}

// publishCmd is the command that publishes payload on channel with cmd.
// SPUBLISH names its channel as a key: a cluster routes it by the
// channel's slot, and the channels here share their slot with the keys
// written beside them.
func publishCmd(cmd, channel, payload string) backend.Cmd {
	if cmd == "SPUBLISH" {
		return backend.K(cmd, channel, payload)
	}
	return backend.C(cmd, nil, channel, payload)
}

// Hooks let the owner observe a strategy (for metrics). Nil funcs are
// skipped; they must be fast and safe for concurrent use.
type Hooks struct {
	BatchFlushed     func(size int)         // a batch of heartbeats was sent
	MetadataAttempt  func()                 // one transaction or script attempt of a mutation
	MetadataRetry    func(attempt, max int) // an EXEC abort is being retried
	MetadataConflict func()                 // a mutation failed with core.ErrConflict
}

// HeartbeatRequest is a validated heartbeat.
type HeartbeatRequest struct {
	Room, Conn string
	HasEpoch   bool
	Epoch      int64
	// Patch holds top-level state keys and their canonical JSON
	// values, sorted by Key, keys unique.
	Patch []luacall.KeyValue
	NowMs int64
	// ConnKeys, optional, are Keys.ConnKeys(Room, Conn) built beforehand,
	// so the heartbeat concatenates no key. Keys of another room, conn or
	// prefix are ignored (the keys are then built from Room and Conn).
	ConnKeys *core.ConnKeys
}

// HeartbeatResult is the outcome of a heartbeat that was applied.
type HeartbeatResult struct {
	Changed bool  // at least one patched value differed
	Epoch   int64 // the conn's epoch after the heartbeat
}

// Heartbeat applies heartbeats with epoch fencing (docs/DESIGN.md §4): unknown
// or expired conn → ErrConnNotFound; epoch below the stored one →
// ErrStaleEpoch with nothing written; a higher epoch is adopted; last_seen,
// TTL and the reaper's index are refreshed; an "update" event is published
// iff the state changed. Implementations are safe for concurrent use.
type Heartbeat interface {
	Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResult, error)
	// Close finishes or fails work in flight (a batcher fails pending
	// callers with ErrClosed) and releases resources. Idempotent.
	Close() error
}

// BufferSizer is implemented by strategies that hold heartbeats in a
// buffer (the batcher), for monitoring.
type BufferSizer interface {
	BufferSize() int
}

// HeartbeatFactory builds a heartbeat strategy from its spec parameters.
type HeartbeatFactory func(env Env, p *Params) (Heartbeat, error)

// Heartbeats is the registry of heartbeat strategies.
var Heartbeats = &Registry[HeartbeatFactory]{kind: "heartbeat"}

// NewHeartbeat builds the heartbeat strategy a spec names.
func NewHeartbeat(spec string, env Env) (Heartbeat, error) {
	f, p, err := Heartbeats.Lookup(spec)
	if err != nil {
		return nil, err
	}
	if err := env.check(); err != nil {
		return nil, err
	}
	return f(env, p)
}
