package presence

import "github.com/realtime-message/presence/strategy"

// Sentinel errors, usable with errors.Is. Backend failures are returned
// wrapped, never as one of these.
var (
	// ErrConnNotFound: the connection is unknown or expired; join again.
	ErrConnNotFound = strategy.ErrConnNotFound
	// ErrStaleEpoch: the heartbeat's epoch is below the stored one; a newer
	// connection owns the id, and nothing was written.
	ErrStaleEpoch = strategy.ErrStaleEpoch
	// ErrConflict: a metadata revision check failed (or retries ran out).
	ErrConflict = strategy.ErrConflict
	// ErrLocked: the named lock is missing, held by another user, or no
	// acting user was given.
	ErrLocked = strategy.ErrLocked
	// ErrInvalidArgument: bad input; nothing was written.
	ErrInvalidArgument = strategy.ErrInvalidArgument
	// ErrClosed: the Service (or its backend) was closed.
	ErrClosed = strategy.ErrClosed
)
