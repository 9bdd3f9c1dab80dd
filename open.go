package presence

import (
	"context"
	"errors"
	"fmt"

	"github.com/realtime-message/presence/backend"
)

// Open connects to Redis as cfg says (Backend, RedisURL or Addrs) and
// builds a Service that owns the connection: Close closes it. It is
// assembled by the wire injector in wire.go; New stays usable by hand with
// any backend.Client.
//
// The adapter is looked up by name in the backend registry, which this
// package fills with nothing: import _
// "github.com/realtime-message/presence/backend/builtin" for rueidis and
// goredis, or the package of the adapter you use.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	s, cleanup, err := initService(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.onClose = append(s.onClose, cleanup)
	return s, nil
}

// NewClient connects the adapter cfg.Backend names (default "rueidis") in
// the backend registry (backend.Register).
func NewClient(ctx context.Context, cfg Config) (backend.Client, error) {
	if cfg.RedisURL == "" && len(cfg.Addrs) == 0 {
		return nil, invalid("config: RedisURL or Addrs is required (or use package embedded for development)")
	}
	name := cfg.Backend
	if name == "" {
		name = DefaultBackend
	}
	// The adapters log what their libraries report (lost subscriptions,
	// failed dials) through the service's logger, so its format and level
	// hold for every line.
	c, err := backend.Open(ctx, name, backend.OpenOptions{URL: cfg.RedisURL, Addrs: cfg.Addrs, Logger: cfg.Logger})
	if errors.Is(err, backend.ErrUnknownAdapter) {
		return nil, fmt.Errorf("%w: config: Backend: %w", ErrInvalidArgument, err)
	}
	return c, err
}

// provideClient is the wire provider of the backend client.
func provideClient(ctx context.Context, cfg Config) (backend.Client, func(), error) {
	c, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("presence: open: %w", err)
	}
	return c, func() { c.Close() }, nil
}
