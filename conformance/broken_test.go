package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/strategy"
)

// Deliberately broken strategies, registered in this test binary only, so
// the suite can show it catches each of them (see self_test.go). Their
// names start with "broken-"; the other tests of this package list their
// strategies explicitly, so these never run where a pass is expected.
const (
	// brokenSplitRTT reads the conn, checks the epoch in Go, and writes in
	// a second round trip without WATCH: a concurrent heartbeat, join or
	// leave between the two is overwritten (a lower epoch written over a
	// higher one, a patch landing on a newer connection, a zombie hash).
	brokenSplitRTT = "broken-split-rtt"
	// brokenLowerEpoch is atomic (WATCH/MULTI/EXEC) but fences wrongly: it
	// accepts an equal or lower epoch and stores it.
	brokenLowerEpoch = "broken-lower-epoch"
	// brokenAppCAS is the seed's 应用层 CAS: HGETALL, compare revisions in
	// Go, HSET without WATCH. Two writers that read the same revision both
	// succeed.
	brokenAppCAS = "broken-app-cas"
	// brokenLocksIgnored is the lua strategy deaf to enforced locks: it
	// writes under another's lock as if locks were advisory.
	brokenLocksIgnored = "broken-locks-ignored"
	// brokenLocksSplit enforces locks in a round trip of its own before
	// the lua strategy writes: a lock taken between the check and the
	// write does not stop the write.
	brokenLocksSplit = "broken-locks-split"
	// brokenSeqUnwatched fences like the pipeline strategy (WATCH on the
	// conn) but reads the room's sequence counter without watching it: two
	// changes of a room between its read and its EXEC publish one seq twice.
	brokenSeqUnwatched = "broken-seq-unwatched"
)

func init() {
	strategy.Heartbeats.Register(brokenSplitRTT, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Heartbeat, error) {
		return splitRTT{env}, nil
	})
	strategy.Heartbeats.Register(brokenLowerEpoch, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Heartbeat, error) {
		return watchFence{env, func(int64, int64) bool { return false }}, nil
	})
	strategy.Heartbeats.Register(brokenSeqUnwatched, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Heartbeat, error) {
		return seqUnwatched{env}, nil
	})
	strategy.Metadatas.Register(brokenAppCAS, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return appCAS{env}, nil
	})
	strategy.Metadatas.Register(brokenLocksIgnored, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return locksIgnored{strategy.NewLuaMetadata(env)}, nil
	})
	strategy.Metadatas.Register(brokenLocksSplit, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return locksSplit{env, strategy.NewLuaMetadata(env)}, nil
	})
}

type locksIgnored struct{ *strategy.LuaMetadata }

func (l locksIgnored) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	req.EnforceLocks = false
	return l.LuaMetadata.Mutate(ctx, req)
}

type locksSplit struct {
	env strategy.Env
	*strategy.LuaMetadata
}

func (l locksSplit) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	if req.EnforceLocks {
		k := l.env.Keys
		r, err := l.env.Client.Do(ctx, backend.K("HKEYS", k.LockIndex(req.Type, req.Name)))
		if err != nil {
			return core.MetaRecord{}, err
		}
		names, err := r[0].AsStrings()
		if err != nil {
			return core.MetaRecord{}, err
		}
		for _, n := range names {
			r, err := l.env.Client.Do(ctx, backend.K("GET", k.Lock(req.Type, req.Name, n)))
			if err != nil {
				return core.MetaRecord{}, err
			}
			if !r[0].IsNil() && (req.LockName == "" || r[0].Str != req.Actor) {
				return core.MetaRecord{}, fmt.Errorf("%w: lock %q is held", core.ErrLocked, n)
			}
		}
		req.EnforceLocks = false
	}
	return l.LuaMetadata.Mutate(ctx, req)
}

// hbWrites returns the result and the writes of a heartbeat given the
// conn hash h as read; fence decides whether the request's epoch is
// refused.
func hbWrites(env strategy.Env, req strategy.HeartbeatRequest, h map[string]string, fence func(req, stored int64) bool) (strategy.HeartbeatResult, []backend.Cmd, error) {
	k := env.Keys
	if h["epoch"] == "" {
		return strategy.HeartbeatResult{}, nil, core.ErrConnNotFound
	}
	stored, err := strconv.ParseInt(h["epoch"], 10, 64)
	if err != nil {
		return strategy.HeartbeatResult{}, nil, err
	}
	if req.HasEpoch && fence(req.Epoch, stored) {
		return strategy.HeartbeatResult{}, nil, core.ErrStaleEpoch
	}
	var res strategy.HeartbeatResult
	now := strconv.FormatInt(req.NowMs, 10)
	set := []string{"last_seen_ms", now}
	var cmds []backend.Cmd
	if req.HasEpoch && req.Epoch != stored {
		stored = req.Epoch
		e := strconv.FormatInt(stored, 10)
		set = append(set, "epoch", e)
		cmds = append(cmds, backend.K("HSET", k.ConnMeta(req.Room), req.Conn, e+":"+h["user"]))
	}
	for _, f := range req.Patch {
		if old, ok := h[core.StatePrefix+f.Key]; !ok || old != f.Value {
			res.Changed = true
			set = append(set, core.StatePrefix+f.Key, f.Value)
			h[core.StatePrefix+f.Key] = f.Value
		}
	}
	res.Epoch = stored
	key := k.Conn(req.Room, req.Conn)
	cmds = append(cmds,
		backend.K("HSET", key, set...),
		backend.K("PEXPIRE", key, strconv.FormatInt(env.TTL.Milliseconds(), 10)),
		backend.K("ZADD", k.LastSeen(req.Room), now, req.Conn))
	if res.Changed {
		ev, _ := json.Marshal(core.PresenceEvent{Type: "update", RoomID: req.Room, UserID: h["user"], ConnID: req.Conn,
			State: core.StateFromHash(h), TS: req.NowMs, Epoch: stored})
		cmds = append(cmds, backend.C("PUBLISH", nil, k.RoomEvents(req.Room), string(ev)))
	}
	return res, cmds, nil
}

type splitRTT struct{ env strategy.Env }

func (s splitRTT) Close() error { return nil }

func (s splitRTT) Heartbeat(ctx context.Context, req strategy.HeartbeatRequest) (strategy.HeartbeatResult, error) {
	r, err := s.env.Client.Do(ctx, backend.K("HGETALL", s.env.Keys.Conn(req.Room, req.Conn)))
	if err != nil {
		return strategy.HeartbeatResult{}, err
	}
	h, err := r[0].AsStringMap()
	if err != nil {
		return strategy.HeartbeatResult{}, err
	}
	res, cmds, err := hbWrites(s.env, req, h, func(e, stored int64) bool { return e < stored })
	if err != nil {
		return strategy.HeartbeatResult{}, err
	}
	r, err = s.env.Client.Do(ctx, cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	return res, err
}

// watchFence is an atomic heartbeat (WATCH/MULTI/EXEC) whose fence
// refuses a request's epoch when fence(request, stored) is true.
type watchFence struct {
	env   strategy.Env
	fence func(req, stored int64) bool
}

func (l watchFence) Close() error { return nil }

func (l watchFence) Heartbeat(ctx context.Context, req strategy.HeartbeatRequest) (strategy.HeartbeatResult, error) {
	key := l.env.Keys.Conn(req.Room, req.Conn)
	for {
		var res strategy.HeartbeatResult
		r, err := l.env.Client.Watch(ctx, []string{key}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
			r, err := tx.Do(ctx, backend.K("HGETALL", key))
			if err != nil {
				return nil, err
			}
			h, err := r[0].AsStringMap()
			if err != nil {
				return nil, err
			}
			var cmds []backend.Cmd
			res, cmds, err = hbWrites(l.env, req, h, l.fence)
			return cmds, err
		})
		if err == backend.ErrTxAborted {
			continue
		}
		if err == nil {
			err = backend.FirstError(r)
		}
		return res, err
	}
}

type seqUnwatched struct{ env strategy.Env }

func (s seqUnwatched) Close() error { return nil }

func (s seqUnwatched) Heartbeat(ctx context.Context, req strategy.HeartbeatRequest) (strategy.HeartbeatResult, error) {
	k := s.env.Keys
	key, seqKey := k.Conn(req.Room, req.Conn), k.Seq(req.Room)
	for {
		var res strategy.HeartbeatResult
		r, err := s.env.Client.Watch(ctx, []string{key}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
			r, err := tx.Do(ctx, backend.K("HGETALL", key), backend.K("GET", seqKey))
			if err != nil {
				return nil, err
			}
			h, err := r[0].AsStringMap()
			if err != nil {
				return nil, err
			}
			var cmds []backend.Cmd
			res, cmds, err = hbWrites(s.env, req, h, func(req, stored int64) bool { return req < stored })
			if err != nil || !res.Changed {
				return cmds, err
			}
			// The update event (hbWrites's last command) takes the number
			// read above, unwatched.
			cur, _ := r[1].AsInt()
			pub := cmds[len(cmds)-1]
			var ev core.PresenceEvent
			if err := json.Unmarshal([]byte(pub.Args[1]), &ev); err != nil {
				return nil, err
			}
			ev.Seq = cur + 1
			b, _ := json.Marshal(ev)
			pub.Args = []string{pub.Args[0], string(b)}
			return append(cmds[:len(cmds)-1], backend.K("INCR", seqKey), pub), nil
		})
		if err == backend.ErrTxAborted {
			continue
		}
		if err == nil {
			err = backend.FirstError(r)
		}
		return res, err
	}
}

type appCAS struct{ env strategy.Env }

func (a appCAS) Close() error { return nil }

func (a appCAS) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	k := a.env.Keys
	meta := k.Meta(req.Type, req.Name)
	reads := []backend.Cmd{backend.K("HGETALL", meta)}
	if req.LockName != "" {
		reads = append(reads, backend.K("GET", k.Lock(req.Type, req.Name, req.LockName)))
	}
	r, err := a.env.Client.Do(ctx, reads...)
	if err != nil {
		return core.MetaRecord{}, err
	}
	cur, err := core.ParseMetaReply(r[0])
	if err != nil {
		return core.MetaRecord{}, err
	}
	if req.LockName != "" {
		owner, _ := r[1].AsString()
		if r[1].IsNil() || req.Actor == "" || owner != req.Actor {
			return core.MetaRecord{}, fmt.Errorf("%w: lock %q", core.ErrLocked, req.LockName)
		}
	}
	if req.MajorRevision >= 0 && req.MajorRevision != cur.MajorRevision {
		return core.MetaRecord{}, fmt.Errorf("%w: majorRevision is %d", core.ErrConflict, cur.MajorRevision)
	}
	next := core.MetaRecord{MajorRevision: cur.MajorRevision + 1, Items: map[string]core.MetaEntry{}}
	var cmds []backend.Cmd
	var written []string
	var evItems []core.MetadataEventItem
	switch req.Op {
	case strategy.OpSet:
		cmds = append(cmds, backend.K("DEL", meta))
		for _, it := range req.Items {
			next.Items[it.Key] = core.MetaEntry{Value: it.Value, Revision: max(1, it.Revision)}
			written = append(written, it.Key)
		}
	case strategy.OpUpdate:
		if len(cur.Items) == 0 {
			return core.MetaRecord{}, fmt.Errorf("%w: no metadata", core.ErrInvalidArgument)
		}
		for _, it := range req.Items {
			e, ok := cur.Items[it.Key]
			if !ok {
				return core.MetaRecord{}, fmt.Errorf("%w: unknown item %q", core.ErrInvalidArgument, it.Key)
			}
			if it.Revision >= 0 && it.Revision != e.Revision {
				return core.MetaRecord{}, fmt.Errorf("%w: item %q has revision %d", core.ErrConflict, it.Key, e.Revision)
			}
		}
		for key, e := range cur.Items {
			next.Items[key] = e
		}
		for _, it := range req.Items {
			e := cur.Items[it.Key]
			e.Value, e.Revision = it.Value, e.Revision+1
			next.Items[it.Key] = e
			written = append(written, it.Key)
		}
	case strategy.OpRemove:
		for key, e := range cur.Items {
			next.Items[key] = e
		}
		var fields []string
		for key := range cur.Items {
			if len(req.Items) == 0 || containsKey(req.Items, key) {
				e := next.Items[key]
				evItems = append(evItems, core.MetadataEventItem{Key: key, Value: e.Value, Revision: e.Revision})
				delete(next.Items, key)
				fields = append(fields, core.MetaPrefixValue+key, core.MetaPrefixRev+key, core.MetaPrefixUpdated+key, core.MetaPrefixAuthor+key)
			}
		}
		if len(fields) == 0 {
			return cur, nil
		}
		cmds = append(cmds, backend.K("HDEL", meta, fields...))
	}
	set := []string{core.MetaFieldMajor, strconv.FormatInt(next.MajorRevision, 10)}
	for _, key := range written {
		e := next.Items[key]
		if req.AddTimestamp {
			e.Updated = core.FormatMetaTime(req.NowMs)
		}
		if req.AddUserID {
			e.Author = req.Actor
		}
		next.Items[key] = e
		evItems = append(evItems, core.MetadataEventItem{Key: key, Value: e.Value, Revision: e.Revision})
		set = append(set, core.MetaPrefixValue+key, e.Value, core.MetaPrefixRev+key, strconv.FormatInt(e.Revision, 10))
		if e.Updated != "" {
			set = append(set, core.MetaPrefixUpdated+key, e.Updated)
		}
		if e.Author != "" {
			set = append(set, core.MetaPrefixAuthor+key, e.Author)
		}
	}
	ev, _ := json.Marshal(core.MetadataEvent{ChannelName: req.Name, ChannelType: req.Type, Operation: req.Op.String(),
		Items: append([]core.MetadataEventItem{}, evItems...), MajorRevision: next.MajorRevision, Timestamp: req.NowMs})
	cmds = append(cmds, backend.K("HSET", meta, set...), backend.C("PUBLISH", nil, k.MetaEvents(req.Type, req.Name), string(ev)))
	r, err = a.env.Client.Do(ctx, cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	return next, err
}

func containsKey(items []strategy.MetaItem, key string) bool {
	for _, it := range items {
		if it.Key == key {
			return true
		}
	}
	return false
}

// slowReads delays the reply of every pipeline made only of reads, which
// widens the window between a read and the write that follows it: a race
// that a strategy leaves open shows within the default budget in every
// run. It changes no result, so a correct strategy still passes.
type slowReads struct {
	backend.Client
	delay time.Duration
}

func (s slowReads) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	r, err := s.Client.Do(ctx, cmds...)
	for _, c := range cmds {
		switch c.Name {
		case "HGETALL", "HGET", "HMGET", "GET", "HKEYS":
		default:
			return r, err
		}
	}
	time.Sleep(s.delay)
	return r, err
}
