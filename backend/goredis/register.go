package goredis

import (
	"context"

	"github.com/realtime-message/presence/backend"
)

// Name is the adapter's name in the backend registry (presence.Config.Backend,
// PRESENCE_BACKEND).
const Name = "goredis"

func init() {
	backend.Register(Name, func(ctx context.Context, o backend.OpenOptions) (backend.Client, error) {
		return New(ctx, Options{URL: o.URL, Addrs: o.Addrs, Logger: o.Logger})
	})
}
