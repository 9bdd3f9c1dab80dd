//go:build wireinject

package main

import (
	"context"
	"log/slog"

	"github.com/google/wire"
)

// initApp is the injector wire turns into wire_gen.go (go generate). The
// generated file is committed, so building the server never needs wire.
func initApp(ctx context.Context, s Settings, log *slog.Logger) (*App, func(), error) {
	wire.Build(
		provideRedis,
		newMetrics,
		provideService,
		provideSocketServer,
		provideBinding,
		provideAdminUI,
		provideHTTP,
		provideDashboard,
		wire.Struct(new(App), "*"),
	)
	return nil, nil, nil
}
