package strategy

import (
	"errors"

	"github.com/realtime-message/presence/backend"
)

// Errors shared by every strategy; package presence re-exports them.
var (
	ErrConnNotFound    = errors.New("presence: connection not found or expired; join again")
	ErrStaleEpoch      = errors.New("presence: stale epoch: a newer connection owns this id")
	ErrConflict        = errors.New("presence: metadata revision conflict; read again and retry")
	ErrLocked          = errors.New("presence: metadata lock is missing or held by another user")
	ErrInvalidArgument = errors.New("presence: invalid argument")
	ErrClosed          = backend.ErrClosed
)
