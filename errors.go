package presence

import "github.com/realtime-message/presence/core"

// Sentinel errors, usable with errors.Is. Backend failures are returned
// wrapped, never as one of these. Each is the very value package core
// declares for the strategies, so a strategy's error matches too.
var (
	// ErrConnNotFound: the connection is unknown or expired; join again.
	ErrConnNotFound = core.ErrConnNotFound
	// ErrStaleEpoch: the heartbeat's epoch is below the stored one; a newer
	// connection owns the id, and nothing was written.
	ErrStaleEpoch = core.ErrStaleEpoch
	// ErrConflict: a metadata revision check failed (or retries ran out).
	ErrConflict = core.ErrConflict
	// ErrLocked: the named lock is missing, held by another user, or no
	// acting user was given.
	ErrLocked = core.ErrLocked
	// ErrInvalidArgument: bad input; nothing was written.
	ErrInvalidArgument = core.ErrInvalidArgument
	// ErrClosed: the Service (or its backend) was closed.
	ErrClosed = core.ErrClosed
)

// ConflictError is the ErrConflict of a mutation whose majorRevision or
// item revision check failed (errors.Is(err, ErrConflict) holds; get it
// with errors.As). Current is the channel's metadata as that check read
// it, atomically with it, so a compare-and-set writer can retry against
// Current.MajorRevision and the item revisions without a GetMetadata
// first. Its Timestamp is the mutation's. A watch strategy that ran out
// of retries returns a plain ErrConflict instead: what it last read is
// already stale.
type ConflictError struct {
	Current *MetadataResponse
	reason  string
}

func (e *ConflictError) Error() string { return ErrConflict.Error() + ": " + e.reason }

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }
