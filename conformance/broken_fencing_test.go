package conformance

import (
	"context"
	"errors"
	"fmt"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/strategy"
)

// Broken metadata strategies of issue 15 (see broken_test.go).
const (
	// brokenFenceIgnored is the lua strategy deaf to fencing tokens: a
	// holder whose lock was acquired again since writes anyway.
	brokenFenceIgnored = "broken-fence-ignored"
	// brokenFenceSplit checks the token in a round trip of its own before
	// the lua strategy writes: an acquisition between the check and the
	// write does not stop the write.
	brokenFenceSplit = "broken-fence-split"
	// brokenConflictBare refuses conflicts right but returns a bare
	// ErrConflict, without the record the check read.
	brokenConflictBare = "broken-conflict-bare"
)

func init() {
	strategy.Metadatas.Register(brokenFenceIgnored, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return fenceIgnored{strategy.NewLuaMetadata(env)}, nil
	})
	strategy.Metadatas.Register(brokenFenceSplit, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return fenceSplit{env, strategy.NewLuaMetadata(env)}, nil
	})
	strategy.Metadatas.Register(brokenConflictBare, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return conflictBare{strategy.NewLuaMetadata(env)}, nil
	})
}

type fenceIgnored struct{ *strategy.LuaMetadata }

func (f fenceIgnored) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	req.FencingToken = 0
	return f.LuaMetadata.Mutate(ctx, req)
}

type fenceSplit struct {
	env strategy.Env
	*strategy.LuaMetadata
}

func (f fenceSplit) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	if req.FencingToken > 0 {
		r, err := f.env.Client.Do(ctx, backend.K("GET", f.env.Keys.Fence(req.Type, req.Name, req.LockName)))
		if err != nil {
			return core.MetaRecord{}, err
		}
		if last, _ := r[0].AsInt(); last != req.FencingToken {
			return core.MetaRecord{}, fmt.Errorf("%w: fencing token %d superseded by %d", core.ErrLocked, req.FencingToken, last)
		}
		req.FencingToken = 0
	}
	return f.LuaMetadata.Mutate(ctx, req)
}

type conflictBare struct{ *strategy.LuaMetadata }

func (c conflictBare) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	rec, err := c.LuaMetadata.Mutate(ctx, req)
	if errors.Is(err, core.ErrConflict) {
		return rec, fmt.Errorf("%w: %s", core.ErrConflict, err.Error())
	}
	return rec, err
}
