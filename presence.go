package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/strategy"
)

// Entry is one live connection of a room (docs/PROTOCOL.md's Entry).
type Entry struct {
	ConnID     string          `json:"connId"`
	UserID     string          `json:"userId"`
	State      json.RawMessage `json:"state"`
	LastSeenMs int64           `json:"lastSeenMs"`
	Epoch      int64           `json:"epoch"`
}

// JoinResult is what Join returns: the conn's new epoch and the room's
// snapshot including the conn itself.
type JoinResult struct {
	Epoch    int64
	Snapshot []Entry
	// Seq is the join event's room sequence number: Snapshot holds every
	// change up to it and none after (see Event.Seq).
	Seq int64
}

// HeartbeatParams are a heartbeat's optional fields.
type HeartbeatParams struct {
	// Epoch, when set, is fenced against the stored epoch: lower fails with
	// ErrStaleEpoch, higher is adopted. Must be in [0, now + EpochLead].
	Epoch *int64
	// PatchState is a JSON object shallow-merged into the state: each
	// top-level key replaces that key.
	PatchState json.RawMessage
}

// HeartbeatResult is the outcome of an applied heartbeat.
type HeartbeatResult struct {
	Changed bool  // the patch changed at least one top-level value
	Epoch   int64 // the conn's epoch now
}

// Join adds conn (of user) to room with state (a JSON object, or empty),
// or rejoins it: the returned epoch is strictly greater than any epoch the
// conn had before. Publishes a join event.
func (s *Service) Join(ctx context.Context, room, conn, user string, state json.RawMessage) (JoinResult, error) {
	if err := s.checkOpen(); err != nil {
		return JoinResult{}, err
	}
	if err := s.checkRoomConn(room, conn); err != nil {
		return JoinResult{}, err
	}
	if err := checkID("userId", user, s.cfg.MaxIDBytes, ""); err != nil {
		return JoinResult{}, err
	}
	fields, err := canonicalState("state", state, s.cfg.MaxStateBytes)
	if err != nil {
		return JoinResult{}, err
	}
	if err := s.followJoined(ctx, room); err != nil {
		return JoinResult{}, fmt.Errorf("presence: join: %w", err)
	}
	now := s.nowMs()
	k := s.keys
	// The room enters the reaper's work list before the script runs (in the
	// same round trip) and again after it: the first SADD keeps the conn
	// reapable if the second is lost; the second closes the race with a
	// reaper dropping the room (see dropIfEmpty). active_rooms is in
	// another slot than the room, so no script can do both.
	addRoom := backend.K("SADD", k.ActiveRooms(), room)
	join := luacall.Join{
		Conns: k.Conns(room), Members: k.Members(room), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room),
		UserConns: k.UserConns(room), Gone: k.Gone(room), ConnHash: k.Conn(room, conn), Seq: k.Seq(room),
		Conn: conn, User: user, Room: room, NowMs: strconv.FormatInt(now, 10), TTLMs: strconv.FormatInt(s.cfg.TTL.Milliseconds(), 10),
		Events: k.RoomEvents(room), ConnPrefix: k.ConnPrefix(room), Pub: s.publishCmd(), State: fields,
	}
	pre, replies, err := s.scripts.DoWith(ctx, append([]backend.Cmd{addRoom}, s.userPreRead(room, conn)...), join.Eval())
	if err != nil {
		return JoinResult{}, fmt.Errorf("presence: join: %w", err)
	}
	rep, err := luacall.DecodeJoin(replies[0])
	if err != nil {
		if backend.IsRedisError(err, "EPOCH_EXHAUSTED") {
			return JoinResult{}, invalid("conn %q holds the largest epoch; join with a new conn id", conn)
		}
		return JoinResult{}, fmt.Errorf("presence: join: %w", err)
	}
	snap := snapshotEntries(rep.Snapshot)
	if err := s.afterJoin(ctx, addRoom, pre[1:], room, conn, user, rep.Epoch, now); err != nil {
		return JoinResult{}, fmt.Errorf("presence: join: %w", err)
	}
	return JoinResult{Epoch: rep.Epoch, Snapshot: snap, Seq: rep.Seq}, nil
}

// ConnRef is a validated room and conn with their Redis keys built once,
// for callers that heartbeat one conn many times (a socket): see
// HeartbeatConn. It is only valid with the Service that built it; the zero
// ConnRef is invalid. Safe to share between goroutines.
type ConnRef struct {
	s    *Service
	keys *core.ConnKeys
}

// Room returns the ref's room id.
func (r ConnRef) Room() string {
	if r.keys == nil {
		return ""
	}
	return r.keys.Room()
}

// Conn returns the ref's conn id.
func (r ConnRef) Conn() string {
	if r.keys == nil {
		return ""
	}
	return r.keys.Conn()
}

// ConnRef validates room and conn as Heartbeat does (ErrInvalidArgument)
// and builds their keys. It does not touch Redis: the conn need not have
// joined yet, and the ref stays valid across rejoins.
func (s *Service) ConnRef(room, conn string) (ConnRef, error) {
	if err := s.checkRoomConn(room, conn); err != nil {
		return ConnRef{}, err
	}
	return ConnRef{s: s, keys: s.keys.ConnKeys(room, conn)}, nil
}

// Heartbeat refreshes conn in room, fenced by p.Epoch, merging p.PatchState.
// ErrConnNotFound when the conn is unknown or expired (join again),
// ErrStaleEpoch when p.Epoch is below the stored epoch (nothing written).
// Publishes an update event iff the state changed. A caller that
// heartbeats one conn repeatedly saves building its keys each time with
// ConnRef and HeartbeatConn.
func (s *Service) Heartbeat(ctx context.Context, room, conn string, p HeartbeatParams) (HeartbeatResult, error) {
	ref, err := s.ConnRef(room, conn)
	if err != nil && s.checkOpen() == nil {
		// A closed service reports ErrClosed before bad ids: HeartbeatConn
		// does, given the zero ref.
		return s.countHeartbeat(time.Now(), HeartbeatResult{}, err)
	}
	return s.HeartbeatConn(ctx, ref, p)
}

// HeartbeatConn is Heartbeat of ref's room and conn: same fencing, event,
// errors, Stats counters and Hooks.Heartbeat call. A zero ConnRef, or one
// built by another Service, fails with ErrInvalidArgument.
func (s *Service) HeartbeatConn(ctx context.Context, ref ConnRef, p HeartbeatParams) (HeartbeatResult, error) {
	start := time.Now()
	res, err := s.heartbeat(ctx, ref, p)
	return s.countHeartbeat(start, res, err)
}

func (s *Service) countHeartbeat(start time.Time, res HeartbeatResult, err error) (HeartbeatResult, error) {
	o := outcomeError
	switch {
	case err == nil && res.Changed:
		o = outcomeChanged
	case err == nil:
		o = outcomeOK
	case errors.Is(err, ErrStaleEpoch):
		o = outcomeStale
	case errors.Is(err, ErrConnNotFound):
		o = outcomeNotFound
	}
	s.ctr.hb[o].Add(1)
	if h := s.cfg.Hooks.Heartbeat; h != nil {
		h(outcomeNames[o], time.Since(start))
	}
	return res, err
}

func (s *Service) heartbeat(ctx context.Context, ref ConnRef, p HeartbeatParams) (HeartbeatResult, error) {
	if err := s.checkOpen(); err != nil {
		return HeartbeatResult{}, err
	}
	if ref.keys == nil {
		return HeartbeatResult{}, invalid("heartbeat: zero ConnRef: build it with Service.ConnRef")
	}
	if ref.s != s {
		return HeartbeatResult{}, invalid("heartbeat: ConnRef of room %q conn %q was built by another Service", ref.keys.Room(), ref.keys.Conn())
	}
	req := strategy.HeartbeatRequest{Room: ref.keys.Room(), Conn: ref.keys.Conn(), NowMs: s.nowMs(), ConnKeys: ref.keys}
	if p.Epoch != nil {
		if err := checkEpoch(*p.Epoch, req.NowMs); err != nil {
			return HeartbeatResult{}, err
		}
		req.HasEpoch, req.Epoch = true, *p.Epoch
	}
	patch, err := canonicalState("patchState", p.PatchState, s.cfg.MaxStateBytes)
	if err != nil {
		return HeartbeatResult{}, err
	}
	req.Patch = patch
	r, err := s.hb.Heartbeat(ctx, req)
	if err != nil {
		return HeartbeatResult{}, err
	}
	return HeartbeatResult(r), nil
}

// Leave removes conn from room and publishes leave. Removing a conn that is
// not there is not an error and publishes nothing. The user stays a member
// while it has another conn in the room.
func (s *Service) Leave(ctx context.Context, room, conn string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := s.checkRoomConn(room, conn); err != nil {
		return err
	}
	k := s.keys
	rep, owner, err := s.runLeave(ctx, luacall.Leave{
		Conns: k.Conns(room), Members: k.Members(room), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room),
		UserConns: k.UserConns(room), Gone: k.Gone(room), ConnHash: k.Conn(room, conn), Seq: k.Seq(room),
		Conn: conn, Room: room, NowMs: strconv.FormatInt(s.nowMs(), 10), Events: k.RoomEvents(room), Pub: s.publishCmd(),
		LookbackMs: strconv.FormatInt(s.cfg.ReaperLookback.Milliseconds(), 10),
	}, room, conn)
	if err != nil {
		return fmt.Errorf("presence: leave: %w", err)
	}
	if err := s.afterLeave(ctx, room, conn, owner, rep.Left && rep.Remaining == 0); err != nil {
		return fmt.Errorf("presence: leave: %w", err)
	}
	return nil
}

// Snapshot returns every live conn of room.
func (s *Service) Snapshot(ctx context.Context, room string) ([]Entry, error) {
	r, err := s.SnapshotSeq(ctx, room)
	return r.Snapshot, err
}

// SnapshotResult is a room's snapshot with its sequence number.
type SnapshotResult struct {
	Snapshot []Entry
	// Seq is the room's last sequence number: Snapshot holds every change
	// up to it and none after (see Event.Seq). 0 when the room has no
	// counter (it was never joined, or has been empty past the lookback).
	Seq int64
}

// SnapshotSeq is Snapshot with the room's sequence number, read in the same
// atomic step, for a client that mirrors the room from events (Event.Seq).
func (s *Service) SnapshotSeq(ctx context.Context, room string) (SnapshotResult, error) {
	if err := s.checkOpen(); err != nil {
		return SnapshotResult{}, err
	}
	if err := checkID("roomId", room, s.cfg.MaxIDBytes, ""); err != nil {
		return SnapshotResult{}, err
	}
	rep, err := luacall.Snapshot{Conns: s.keys.Conns(room), Seq: s.keys.Seq(room), ConnPrefix: s.keys.ConnPrefix(room)}.Run(ctx, s.scripts)
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("presence: snapshot: %w", err)
	}
	return SnapshotResult{Snapshot: snapshotEntries(rep.Conns), Seq: rep.Seq}, nil
}

// snapshotEntries turns the conns a script returned into entries, sorted
// by conn id.
func snapshotEntries(conns []luacall.IDHash) []Entry {
	out := make([]Entry, 0, len(conns))
	for _, c := range conns {
		h := c.Hash
		e := Entry{ConnID: c.ID, UserID: h["user"], State: core.StateFromHash(h)}
		e.LastSeenMs, _ = strconv.ParseInt(h["last_seen_ms"], 10, 64)
		e.Epoch, _ = strconv.ParseInt(h["epoch"], 10, 64)
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.ConnID, b.ConnID) })
	return out
}
