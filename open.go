package presence

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/backend/rueidis"
)

// Backends lists the adapter names Config.Backend accepts.
var Backends = []string{"rueidis", "goredis"}

// Open connects to Redis as cfg says (Backend, RedisURL or Addrs) and
// builds a Service that owns the connection: Close closes it. It is
// assembled by the wire injector in wire.go; New stays usable by hand with
// any backend.Client.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	s, cleanup, err := initService(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.onClose = append(s.onClose, cleanup)
	return s, nil
}

// NewClient connects the adapter cfg.Backend names.
func NewClient(ctx context.Context, cfg Config) (backend.Client, error) {
	if cfg.RedisURL == "" && len(cfg.Addrs) == 0 {
		return nil, invalid("config: RedisURL or Addrs is required (or use package embedded for development)")
	}
	// The adapters log what their libraries report (lost subscriptions,
	// failed dials) through the service's logger, so its format and level
	// hold for every line.
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	switch cfg.Backend {
	case "", "rueidis":
		return rueidis.New(ctx, rueidis.Options{Addrs: cfg.Addrs, URL: cfg.RedisURL, Embedded: cfg.Embedded, Logger: log})
	case "goredis":
		return goredis.New(ctx, goredis.Options{Addrs: cfg.Addrs, URL: cfg.RedisURL, Logger: log})
	}
	return nil, invalid("config: unknown backend %q (accepted: %v)", cfg.Backend, Backends)
}

// provideClient is the wire provider of the backend client.
func provideClient(ctx context.Context, cfg Config) (backend.Client, func(), error) {
	c, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("presence: open: %w", err)
	}
	return c, func() { c.Close() }, nil
}
