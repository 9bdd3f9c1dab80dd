package core

import (
	"errors"

	"github.com/realtime-message/presence/backend"
)

// The sentinel errors of the library. Package presence exports these very
// values (presence.ErrConflict is ErrConflict), so errors.Is works whichever
// package a caller names; their messages say "presence:" because that is
// the package users call.
var (
	ErrConnNotFound    = errors.New("presence: connection not found or expired; join again")
	ErrStaleEpoch      = errors.New("presence: stale epoch: a newer connection owns this id")
	ErrConflict        = errors.New("presence: metadata revision conflict; retry against the current record")
	ErrLocked          = errors.New("presence: metadata lock is missing or held by another user")
	ErrInvalidArgument = errors.New("presence: invalid argument")
	ErrClosed          = backend.ErrClosed
)

// ConflictError is the ErrConflict of a mutation whose majorRevision or
// item revision check failed: Record is the channel's metadata as the
// check read it, in the same atomic step, so a compare-and-set writer can
// retry against it without reading again. errors.Is(err, ErrConflict)
// holds for it.
type ConflictError struct {
	Record MetaRecord
	Reason string // what did not match, e.g. `majorRevision is 4, not 3`
}

func (e *ConflictError) Error() string { return ErrConflict.Error() + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }
