package strategy

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

func init() {
	Metadatas.Register("lua", nil, func(env Env, _ *Params) (Metadata, error) {
		return NewLuaMetadata(env), nil
	})
}

// LuaMetadata runs meta_mutate.lua: lock checks (the named lock, and
// every lock of the channel when locks are enforced), revision checks, the
// write, majorRevision + 1 and the event in one EVALSHA, so one round trip
// per mutation and nothing to retry. The default metadata strategy. Safe
// for concurrent use.
type LuaMetadata struct{ env Env }

var _ Metadata = (*LuaMetadata)(nil)

// NewLuaMetadata returns the lua strategy.
func NewLuaMetadata(env Env) *LuaMetadata { return &LuaMetadata{env: env} }

// Close releases nothing: the strategy holds no resources.
func (l *LuaMetadata) Close() error { return nil }

// Mutate applies req (see Metadata).
func (l *LuaMetadata) Mutate(ctx context.Context, req MetaRequest) (core.MetaRecord, error) {
	if req.LockName != "" && req.Actor == "" {
		return core.MetaRecord{}, errMetaLocked(req)
	}
	if h := l.env.Hooks.MetadataAttempt; h != nil {
		h()
	}
	r, err := l.env.Scripts.RunMany(ctx, MetaMutateEval(l.env.Keys, req))
	if err != nil {
		return core.MetaRecord{}, err
	}
	rec, err := ParseMetaMutateReply(req, r[0])
	if errors.Is(err, core.ErrConflict) {
		if h := l.env.Hooks.MetadataConflict; h != nil {
			h()
		}
	}
	return rec, err
}

// MetaMutateEval is the meta_mutate.lua call for req.
func MetaMutateEval(k core.Keys, req MetaRequest) backend.Eval {
	keys := []string{k.Meta(req.Type, req.Name)}
	named, enforced := "", ""
	if req.LockName != "" {
		keys = append(keys, k.Lock(req.Type, req.Name, req.LockName))
		named = "1"
	}
	if req.EnforceLocks {
		keys = append(keys, k.LockIndex(req.Type, req.Name))
		enforced = k.LockPrefix(req.Type, req.Name)
	}
	major, stamp, author := "", "", ""
	if req.MajorRevision >= 0 {
		major = backend.Itoa(req.MajorRevision)
	}
	if req.AddTimestamp {
		stamp = core.FormatMetaTime(req.NowMs)
	}
	if req.AddUserID {
		author = "1"
	}
	args := make([]string, 0, 11+3*len(req.Items))
	args = append(args, req.Op.String(), major, req.Actor, stamp, author,
		k.MetaEvents(req.Type, req.Name), req.Type, req.Name, backend.Itoa(req.NowMs), named, enforced)
	for _, it := range req.Items {
		rev := ""
		if it.Revision >= 0 && req.Op != OpRemove {
			rev = backend.Itoa(it.Revision)
		}
		value := it.Value
		if req.Op == OpRemove {
			value = ""
		}
		args = append(args, it.Key, value, rev)
	}
	return backend.Eval{Script: luasrc.MetaMutate, Keys: keys, Args: args}
}

// ParseMetaMutateReply decodes meta_mutate.lua's reply to req.
func ParseMetaMutateReply(req MetaRequest, r backend.Reply) (core.MetaRecord, error) {
	if err := r.Error(); err != nil {
		return core.MetaRecord{}, err
	}
	a, err := r.AsArray()
	if err != nil || len(a) < 2 {
		return core.MetaRecord{}, fmt.Errorf("strategy: unexpected meta_mutate reply %v", r)
	}
	if ok, _ := a[0].AsInt(); ok == 1 {
		if len(a) != 3 {
			return core.MetaRecord{}, fmt.Errorf("strategy: unexpected meta_mutate reply %v", r)
		}
		return core.ParseMetaReply(a[2])
	}
	code, _ := a[1].AsString()
	arg := func(i int) string {
		if i < len(a) {
			s, _ := a[i].AsString()
			return s
		}
		return ""
	}
	num := func(i int) int64 {
		n, _ := strconv.ParseInt(arg(i), 10, 64)
		return n
	}
	switch code {
	case "LOCKED":
		return core.MetaRecord{}, errMetaLocked(req)
	case "HELD":
		return core.MetaRecord{}, errMetaHeld(req, arg(2))
	case "MAJOR":
		return core.MetaRecord{}, errMetaMajor(req, num(2))
	case "REVISION":
		key := arg(2)
		want := int64(-1)
		for _, it := range req.Items {
			if it.Key == key {
				want = it.Revision
			}
		}
		return core.MetaRecord{}, errMetaRevision(key, num(3), want)
	case "UNKNOWN":
		return core.MetaRecord{}, errMetaUnknown(arg(2))
	case "EMPTY":
		return core.MetaRecord{}, errMetaEmpty(req)
	}
	return core.MetaRecord{}, fmt.Errorf("strategy: unexpected meta_mutate reply %v", r)
}
