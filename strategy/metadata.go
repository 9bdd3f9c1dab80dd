package strategy

import (
	"context"

	"github.com/realtime-message/presence/core"
)

// MetaOp is a metadata mutation.
type MetaOp uint8

const (
	OpSet    MetaOp = iota + 1 // replace the whole record
	OpUpdate                   // change existing items only
	OpRemove                   // delete the named items, or all
)

func (o MetaOp) String() string {
	switch o {
	case OpSet:
		return "set"
	case OpUpdate:
		return "update"
	case OpRemove:
		return "remove"
	}
	return "unknown"
}

// MetaItem is one item of a mutation.
type MetaItem struct {
	Key      string
	Value    string
	Revision int64 // < 0: unchecked (update) / default 1 (set)
}

// MetaRequest is a validated metadata mutation.
type MetaRequest struct {
	Op            MetaOp
	Type, Name    string
	Items         []MetaItem // for OpRemove only Key is used; none = remove all
	MajorRevision int64      // < 0: unchecked
	LockName      string     // "" = no lock required
	// FencingToken, when > 0, must be the named lock's last fencing token
	// (AcquireLock's), checked atomically with the write: a writer whose
	// lock was acquired again since, by anyone, gets ErrLocked. Needs
	// LockName.
	FencingToken int64
	Actor        string // acting user ("" = none)
	// EnforceLocks: while any lock of the channel is held, only a
	// mutation that names a lock its Actor holds, by an Actor holding
	// every live lock of the channel, may write; the others fail with
	// ErrLocked. Checked atomically with the write, like LockName.
	EnforceLocks bool
	AddTimestamp bool
	AddUserID    bool
	NowMs        int64
}

// Metadata applies mutations atomically (docs/DESIGN.md §4): a majorRevision or
// item revision mismatch is ErrConflict (a *core.ConflictError carrying
// the record the check read) and never retried; a lock not held
// by the actor, a fencing token that is not the lock's last, or a lock
// that bars the actor under req.EnforceLocks, is ErrLocked; a successful mutation bumps majorRevision by
// exactly one and publishes exactly one event, a failed one publishes
// nothing. Implementations are safe for concurrent use.
type Metadata interface {
	Mutate(ctx context.Context, req MetaRequest) (core.MetaRecord, error)
	Close() error
}

// LockEnforcer is implemented by a Metadata strategy that can say it must
// not run with MetaRequest.EnforceLocks; a strategy without the method is
// taken to enforce locks as its contract says.
type LockEnforcer interface {
	// EnforcesLocks reports whether the strategy applies EnforceLocks
	// atomically with the write.
	EnforcesLocks() bool
}

// MetadataFactory builds a metadata strategy from its spec parameters.
type MetadataFactory func(env Env, p *Params) (Metadata, error)

// Metadatas is the registry of metadata strategies.
var Metadatas = &Registry[MetadataFactory]{kind: "metadata"}

// NewMetadata builds the metadata strategy a spec names.
func NewMetadata(spec string, env Env) (Metadata, error) {
	f, p, err := Metadatas.Lookup(spec)
	if err != nil {
		return nil, err
	}
	if err := env.check(); err != nil {
		return nil, err
	}
	return f(env, p)
}
