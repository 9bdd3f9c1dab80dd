package strategy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
)

func init() {
	Heartbeats.Register("pipeline", []string{"retries"}, func(env Env, p *Params) (Heartbeat, error) {
		retries, err := p.Int("retries", 16, 0, 1000)
		if err != nil {
			return nil, err
		}
		return &pipelineHeartbeat{env: env, retries: retries}, nil
	})
}

// pipelineHeartbeat is the classic path without scripts: read the conn,
// check the epoch in Go, write. The read and the write are fenced by WATCH
// on the conn hash, so a join (or another heartbeat) landing between them
// aborts the write instead of being overwritten; an abort is retried from
// the read. Three round trips: WATCH, read, MULTI/EXEC.
type pipelineHeartbeat struct {
	env     Env
	retries int
}

var _ Heartbeat = (*pipelineHeartbeat)(nil)

func (p *pipelineHeartbeat) Close() error { return nil }

func (p *pipelineHeartbeat) Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResult, error) {
	ck := req.ConnKeys
	if !ck.Fits(p.env.Keys, req.Room, req.Conn) {
		ck = p.env.Keys.ConnKeys(req.Room, req.Conn)
	}
	connKey := ck.ConnKey()
	for attempt := 0; ; attempt++ {
		var res HeartbeatResult
		replies, err := p.env.Client.Watch(ctx, []string{connKey}, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
			r, err := tx.Do(ctx, backend.K("HGETALL", connKey))
			if err != nil {
				return nil, err
			}
			if err := r[0].Error(); err != nil {
				return nil, err
			}
			h, err := r[0].AsStringMap()
			if err != nil {
				return nil, err
			}
			if h["epoch"] == "" {
				return nil, core.ErrConnNotFound
			}
			stored, err := strconv.ParseInt(h["epoch"], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("strategy: conn %q has epoch %q", req.Conn, h["epoch"])
			}
			if req.HasEpoch && req.Epoch < stored {
				return nil, core.ErrStaleEpoch
			}
			now := strconv.FormatInt(req.NowMs, 10)
			set := []string{"last_seen_ms", now}
			var cmds []backend.Cmd
			if req.HasEpoch && req.Epoch > stored {
				stored = req.Epoch
				e := strconv.FormatInt(stored, 10)
				set = append(set, "epoch", e)
				cmds = append(cmds, backend.K("HSET", ck.ConnMeta(), req.Conn, e+":"+h["user"]))
			}
			for _, f := range req.Patch {
				if old, ok := h[core.StatePrefix+f.Key]; !ok || old != f.Value {
					res.Changed = true
					set = append(set, core.StatePrefix+f.Key, f.Value)
					h[core.StatePrefix+f.Key] = f.Value
				}
			}
			res.Epoch = stored
			cmds = append(cmds,
				backend.K("HSET", connKey, set...),
				backend.K("PEXPIRE", connKey, strconv.FormatInt(p.env.TTL.Milliseconds(), 10)),
				backend.K("ZADD", ck.LastSeen(), now, req.Conn),
			)
			if res.Changed {
				ev, _ := json.Marshal(core.PresenceEvent{Type: "update", RoomID: req.Room, UserID: h["user"], ConnID: req.Conn,
					State: core.StateFromHash(h), TS: req.NowMs, Epoch: stored})
				cmds = append(cmds, backend.C("PUBLISH", nil, ck.RoomEvents(), string(ev)))
			}
			return cmds, nil
		})
		if errors.Is(err, backend.ErrTxAborted) && attempt < p.retries {
			continue
		}
		if err == nil {
			err = backend.FirstError(replies)
		}
		if err != nil {
			return HeartbeatResult{}, err
		}
		return res, nil
	}
}
