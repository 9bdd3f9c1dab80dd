package strategy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

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
// the read. Three round trips: WATCH, read, MULTI/EXEC. A heartbeat with a
// patch, which may change the state and then publish an update event that
// takes the room's next seq, watches the room's sequence counter too, so
// the seq is taken atomically with the write; any change of the room
// between the read and EXEC then aborts it, and patching heartbeats of one
// room contend: aborts are retried after a short random pause, so
// contenders spread out instead of colliding again.
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
	watched := []string{connKey}
	if len(req.Patch) > 0 {
		watched = append(watched, ck.Seq())
	}
	for attempt := 0; ; attempt++ {
		var res HeartbeatResult
		replies, err := p.env.Client.Watch(ctx, watched, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
			// The room's counter is read with the conn, in the same round
			// trip, in case the patch changes the state and the update
			// event must take the next number.
			reads := []backend.Cmd{backend.K("HGETALL", connKey)}
			if len(watched) > 1 {
				reads = append(reads, backend.K("GET", ck.Seq()), backend.C("TIME", nil))
			}
			r, err := tx.Do(ctx, reads...)
			if err != nil {
				return nil, err
			}
			if err := backend.FirstError(r); err != nil {
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
				seq, next, err := nextSeq(ck.Seq(), r[1], r[2])
				if err != nil {
					return nil, err
				}
				ev, _ := json.Marshal(core.PresenceEvent{Type: "update", RoomID: req.Room, UserID: h["user"], ConnID: req.Conn,
					State: core.StateFromHash(h), TS: req.NowMs, Epoch: stored, Seq: seq})
				cmds = append(cmds, next, publishCmd(p.env.publish(), ck.RoomEvents(), string(ev)))
			}
			return cmds, nil
		})
		if errors.Is(err, backend.ErrTxAborted) && attempt < p.retries {
			if err := pause(ctx, attempt); err != nil {
				return HeartbeatResult{}, err
			}
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

// nextSeq returns the room's next sequence number and the command that
// takes it, as the scripts' nextSeq does, from the counter's value (seqR,
// read after WATCH) and Redis's TIME (timeR).
func nextSeq(key string, seqR, timeR backend.Reply) (int64, backend.Cmd, error) {
	if cur, err := seqR.AsInt(); err == nil {
		return cur + 1, backend.K("INCR", key), nil
	}
	if !seqR.IsNil() {
		return 0, backend.Cmd{}, fmt.Errorf("strategy: sequence counter %q holds %v", key, seqR)
	}
	t := timeR.Elems
	if len(t) != 2 {
		return 0, backend.Cmd{}, fmt.Errorf("strategy: TIME replied %v", timeR)
	}
	sec, err1 := t[0].AsInt()
	usec, err2 := t[1].AsInt()
	if err1 != nil || err2 != nil {
		return 0, backend.Cmd{}, fmt.Errorf("strategy: TIME replied %v", timeR)
	}
	seq := sec*1_000_000 + usec
	return seq, backend.K("SET", key, strconv.FormatInt(seq, 10)), nil
}

// pause waits a random time below 100µs × 2^attempt (at most ~100ms)
// before a retry, or until ctx ends. The window keeps doubling well past
// a transaction's round trips: on a loaded machine (or the embedded
// server) a WATCH-to-EXEC span of several milliseconds made ten patching
// heartbeats of one room exhaust 16 retries with a 6.4ms cap.
func pause(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(100*time.Microsecond) << min(attempt, 10)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
