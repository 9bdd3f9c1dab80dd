package strategy

import (
	"context"
	"errors"
	"fmt"

	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"

	"github.com/realtime-message/presence/backend"
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
	rep, err := MetaMutateCall(l.env.Keys, req).Run(ctx, l.env.Scripts)
	if err != nil {
		return core.MetaRecord{}, err
	}
	rec, err := metaMutateResult(req, rep)
	if errors.Is(err, core.ErrConflict) {
		if h := l.env.Hooks.MetadataConflict; h != nil {
			h()
		}
	}
	return rec, err
}

// MetaMutateCall is the meta_mutate.lua call for req.
func MetaMutateCall(k core.Keys, req MetaRequest) luacall.MetaMutate {
	c := luacall.MetaMutate{
		Meta: k.Meta(req.Type, req.Name),
		// With no lock named the script reads no lock key, but its keys
		// are fixed: the lock prefix is a key of the channel's slot that
		// no lock uses (lock names are not empty).
		Lock:     k.LockPrefix(req.Type, req.Name),
		Index:    k.LockIndex(req.Type, req.Name),
		Op:       req.Op.String(),
		Actor:    req.Actor,
		Events:   k.MetaEvents(req.Type, req.Name),
		ChanType: req.Type,
		ChanName: req.Name,
		NowMs:    backend.Itoa(req.NowMs),
		Items:    make([]luacall.KeyValueRevision, len(req.Items)),
	}
	c.Fence = c.Lock
	if req.LockName != "" {
		c.Lock, c.Named = k.Lock(req.Type, req.Name, req.LockName), "1"
		if req.FencingToken > 0 {
			c.Fence, c.Token = k.Fence(req.Type, req.Name, req.LockName), backend.Itoa(req.FencingToken)
		}
	}
	if req.EnforceLocks {
		c.Enforced = k.LockPrefix(req.Type, req.Name)
	}
	if req.MajorRevision >= 0 {
		c.Major = backend.Itoa(req.MajorRevision)
	}
	if req.AddTimestamp {
		c.Stamp = core.FormatMetaTime(req.NowMs)
	}
	if req.AddUserID {
		c.Author = "1"
	}
	for i, it := range req.Items {
		e := luacall.KeyValueRevision{Key: it.Key}
		if req.Op != OpRemove {
			e.Value = it.Value
			if it.Revision >= 0 {
				e.Revision = backend.Itoa(it.Revision)
			}
		}
		c.Items[i] = e
	}
	return c
}

// metaMutateResult turns meta_mutate.lua's reply to req into the record
// or the error both strategies return.
func metaMutateResult(req MetaRequest, rep luacall.MetaMutateReply) (core.MetaRecord, error) {
	switch rep.Case {
	case luacall.MetaMutateDone:
		// The hash as the script read it, before its write.
		cur, err := core.ParseMetaHash(rep.Hash)
		if err != nil || !rep.Written {
			return cur, err
		}
		return written(req, cur), nil
	case luacall.MetaMutateLocked:
		return core.MetaRecord{}, errMetaLocked(req)
	case luacall.MetaMutateHeld:
		return core.MetaRecord{}, errMetaHeld(req, rep.Lock)
	case luacall.MetaMutateFenced:
		return core.MetaRecord{}, errMetaFenced(req, rep.Token)
	case luacall.MetaMutateMajor:
		rec, err := core.ParseMetaHash(rep.Hash)
		if err != nil {
			return core.MetaRecord{}, err
		}
		return core.MetaRecord{}, errMetaMajor(req, rec)
	case luacall.MetaMutateRevision:
		rec, err := core.ParseMetaHash(rep.Hash)
		if err != nil {
			return core.MetaRecord{}, err
		}
		want := int64(-1)
		for _, it := range req.Items {
			if it.Key == rep.Key {
				want = it.Revision
			}
		}
		return core.MetaRecord{}, errMetaRevision(rep.Key, rep.Revision, want, rec)
	case luacall.MetaMutateUnknown:
		return core.MetaRecord{}, errMetaUnknown(rep.Key)
	case luacall.MetaMutateEmpty:
		return core.MetaRecord{}, errMetaEmpty(req)
	}
	return core.MetaRecord{}, fmt.Errorf("strategy: meta_mutate reply case %d not handled", rep.Case)
}

// written is the record meta_mutate.lua leaves after it wrote req against
// cur, the hash it read (which the script returns instead of reading the
// hash again); cur is changed in place. The rules are planMeta's, without
// its checks (the script made them) and without building the event.
func written(req MetaRequest, cur core.MetaRecord) core.MetaRecord {
	stamp, author := "", ""
	if req.AddTimestamp {
		stamp = core.FormatMetaTime(req.NowMs)
	}
	if req.AddUserID {
		author = req.Actor
	}
	stampAll := func(e core.MetaEntry) core.MetaEntry {
		if stamp != "" {
			e.Updated = stamp
		}
		if author != "" {
			e.Author = author
		}
		return e
	}
	switch req.Op {
	case OpSet:
		cur.Items = make(map[string]core.MetaEntry, len(req.Items))
		for _, it := range req.Items {
			rev := int64(1)
			if it.Revision > 0 {
				rev = it.Revision
			}
			cur.Items[it.Key] = stampAll(core.MetaEntry{Value: it.Value, Revision: rev})
		}
	case OpUpdate:
		// Every item's revision + 1 is taken from the hash as read, as
		// the script does, even for a key named twice.
		next := make([]core.MetaEntry, len(req.Items))
		for i, it := range req.Items {
			e := cur.Items[it.Key]
			e.Value, e.Revision = it.Value, e.Revision+1
			next[i] = stampAll(e)
		}
		for i, it := range req.Items {
			cur.Items[it.Key] = next[i]
		}
	case OpRemove:
		if len(req.Items) == 0 {
			clear(cur.Items)
		}
		for _, it := range req.Items {
			delete(cur.Items, it.Key)
		}
	}
	cur.MajorRevision++
	return cur
}
