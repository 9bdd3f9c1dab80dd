//go:build wireinject

package presence

import (
	"context"

	"github.com/google/wire"
)

// initService is the injector wire turns into wire_gen.go. Users never need
// the wire tool: the generated file is committed.
func initService(ctx context.Context, cfg Config) (*Service, func(), error) {
	wire.Build(provideClient, New)
	return nil, nil, nil
}
