package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"
)

// The user index (docs/DESIGN.md, "User index") answers "where is this
// user?" without scanning rooms. It lives in the user's slot, so on a
// cluster no room script can write it: joins, leaves and reaps write it in
// a second step after their room script, and a repair pass removes what a
// crash between the two steps left behind. Heartbeats never touch it.

// UserPresence is where a user is: its live conns across every room of the
// deployment (docs/PROTOCOL.md's presence:user ack).
type UserPresence struct {
	UserID string     `json:"userId"`
	Online bool       `json:"online"` // at least one conn anywhere
	Rooms  []UserRoom `json:"rooms"`  // sorted by room id; empty when offline
}

// UserRoom is one room of a user and the user's conns in it.
type UserRoom struct {
	RoomID string   `json:"roomId"`
	Conns  []string `json:"conns"` // sorted
}

// UserEvent is a user event (docs/PROTOCOL.md's user:event payload): the
// user's first conn anywhere appeared (online) or its last one went
// (offline). Each transition is published once, by the node whose call
// made it, decided atomically in the user's slot.
type UserEvent struct {
	Type   string `json:"type"` // online, offline
	UserID string `json:"userId"`
	TS     int64  `json:"ts"` // ms, the server's time of the change
}

// userRepairEvery: the reaper loop repairs the user index on one pass in
// this many, since a repair reads every entry of every user.
const userRepairEvery = 10

// User returns the rooms and conns of user across the deployment, from the
// user index: exact once every Join and Leave of the user's conns has
// returned nil and the reaper has removed its dead conns; see
// docs/DESIGN.md for what holds after a failed call or a crash.
func (s *Service) User(ctx context.Context, user string) (UserPresence, error) {
	if err := s.checkOpen(); err != nil {
		return UserPresence{}, err
	}
	if err := checkID("userId", user, s.cfg.MaxIDBytes, ""); err != nil {
		return UserPresence{}, err
	}
	if s.cfg.DisableUserIndex {
		return UserPresence{}, invalid("User: the user index is disabled (Config.DisableUserIndex)")
	}
	r, err := s.client.Do(ctx, backend.K("HGETALL", s.keys.UserIndex(user)))
	if err == nil {
		err = r[0].Error()
	}
	if err != nil {
		return UserPresence{}, fmt.Errorf("presence: user: %w", err)
	}
	entries, err := r[0].AsStringMap()
	if err != nil {
		return UserPresence{}, fmt.Errorf("presence: user: %w", err)
	}
	return userPresence(user, entries), nil
}

// userPresence groups a user index's entries by room.
func userPresence(user string, entries map[string]string) UserPresence {
	byRoom := map[string][]string{}
	for e := range entries {
		if room, conn, ok := core.SplitUserEntry(e); ok {
			byRoom[room] = append(byRoom[room], conn)
		}
	}
	p := UserPresence{UserID: user, Online: len(byRoom) > 0, Rooms: make([]UserRoom, 0, len(byRoom))}
	for room, conns := range byRoom {
		slices.Sort(conns)
		p.Rooms = append(p.Rooms, UserRoom{RoomID: room, Conns: conns})
	}
	slices.SortFunc(p.Rooms, func(a, b UserRoom) int { return strings.Compare(a.RoomID, b.RoomID) })
	return p
}

// SubscribeUsers delivers every user event of every user (from every
// node) to handler, sequentially, until the subscription or the Service
// is closed. Events go out on one channel per user, which one pattern
// covers; a server node follows the users it needs with a Feed instead.
// With PubSub sharded user events are sharded and no pattern covers them:
// SubscribeUsers fails with ErrInvalidArgument (use Feed.FollowUser).
func (s *Service) SubscribeUsers(ctx context.Context, handler func(UserEvent)) (Subscription, error) {
	if err := s.checkUsersAll(); err != nil {
		return nil, err
	}
	return subscribeJSON(ctx, s, s.keys.UserEventsPattern(), "user", handler)
}

// SubscribeUsersRaw is SubscribeUsers without decoding; Target is the
// user id, read from the channel name.
func (s *Service) SubscribeUsersRaw(ctx context.Context, handler func(RawEvent)) (Subscription, error) {
	if err := s.checkUsersAll(); err != nil {
		return nil, err
	}
	return subscribeRaw(ctx, s, s.keys.UserEventsPattern(), "user", s.userTarget, handler)
}

func (s *Service) checkUsersAll() error {
	if s.pubsub == PubSubSharded {
		return invalid("SubscribeUsers: with PubSub %q user events are sharded and no pattern subscription receives them; follow users one by one (Feed.FollowUser)", PubSubSharded)
	}
	return nil
}

// userTarget returns U of "<prefix>:{user:U}:events".
func (s *Service) userTarget(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, s.keys.Prefix+":{user:")
	if !ok {
		return "", false
	}
	user, ok := strings.CutSuffix(rest, "}:events")
	if !ok || user == "" || strings.ContainsAny(user, "{}") {
		return "", false
	}
	return user, true
}

// connOwner is a conn's conn_meta value, "epoch:user", read before a room
// script changes it.
type connOwner struct {
	epoch int64
	user  string
	ok    bool
}

func parseOwner(v string) connOwner {
	e, u, ok := strings.Cut(v, ":")
	if !ok || u == "" {
		return connOwner{}
	}
	n, err := strconv.ParseInt(e, 10, 64)
	if err != nil {
		return connOwner{}
	}
	return connOwner{epoch: n, user: u, ok: true}
}

func ownerOf(r backend.Reply) connOwner {
	if r.Kind == backend.KindError || r.IsNil() {
		return connOwner{}
	}
	v, err := r.AsString()
	if err != nil {
		return connOwner{}
	}
	return parseOwner(v)
}

// userPreRead returns the commands join and leave send in their first
// round trip, before their script, when the user index is on: the conn's
// owner as conn_meta records it, so the second step knows which user's
// entry to remove (leave, or a rejoin as another user).
func (s *Service) userPreRead(room, conn string) []backend.Cmd {
	if s.cfg.DisableUserIndex {
		return nil
	}
	return []backend.Cmd{backend.K("HGET", s.keys.ConnMeta(room), conn)}
}

// afterJoin is join's second round trip: addRoom again (see Join) and,
// with the user index on, the conn's entry in user's index, and the
// removal of its entry in the index of a previous owner it was taken from.
func (s *Service) afterJoin(ctx context.Context, addRoom backend.Cmd, pre []backend.Reply, room, conn, user string, epoch, now int64) error {
	if s.cfg.DisableUserIndex {
		_, err := s.client.Do(ctx, addRoom)
		return err
	}
	k := s.keys
	entry, nowS := core.UserEntry(room, conn), strconv.FormatInt(now, 10)
	evals := make([]backend.Eval, 0, 2)
	if len(pre) == 1 {
		if old := ownerOf(pre[0]); old.ok && old.user != user {
			evals = append(evals, luacall.UserRemove{
				Index: k.UserIndex(old.user), User: old.user, NowMs: nowS, Events: k.UserEvents(old.user), Pub: s.publishCmd(),
				Entries: []luacall.EntryEpoch{{Entry: entry, Epoch: strconv.FormatInt(epoch-1, 10)}},
			}.Eval())
		}
	}
	evals = append(evals, luacall.UserAdd{
		Index: k.UserIndex(user), Entry: entry, Epoch: strconv.FormatInt(epoch, 10),
		User: user, NowMs: nowS, Events: k.UserEvents(user), Pub: s.publishCmd(),
	}.Eval())
	cmds, replies, err := s.scripts.DoWith(ctx, []backend.Cmd{addRoom, backend.K("SADD", k.ActiveUsers(), user)}, evals...)
	if err == nil {
		err = errors.Join(backend.FirstError(cmds), backend.FirstError(replies))
	}
	if err != nil {
		return err
	}
	s.owners.put(entry, connOwner{epoch: epoch, user: user, ok: true})
	return nil
}

// ownerCache remembers the owner of each conn this Service joined, until
// it leaves, so that Leave can send the user index's removal in its first
// round trip instead of a second one: the owner read in that same round
// trip confirms the guess, and a wrong guess (the conn was taken over
// through another node, or its epoch raised since) costs the round trip
// it saves. Bounded: past ownerCacheMax entries arbitrary ones are
// dropped, which only costs their leaves that round trip.
type ownerCache struct {
	mu sync.Mutex
	m  map[string]connOwner
}

const ownerCacheMax = 1 << 17

func (c *ownerCache) put(entry string, o connOwner) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]connOwner{}
	}
	if _, ok := c.m[entry]; !ok && len(c.m) >= ownerCacheMax {
		for k := range c.m {
			delete(c.m, k)
			if len(c.m) < ownerCacheMax*7/8 {
				break
			}
		}
	}
	c.m[entry] = o
}

func (c *ownerCache) take(entry string) connOwner {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.m[entry]
	delete(c.m, entry)
	return o
}

// leaveStep is what leave's first round trip learnt for its second step.
type leaveStep struct {
	owner connOwner // the owner conn_meta recorded just before leave.lua
	sent  connOwner // the owner whose entry the first round trip already removed
}

// runLeave runs leave.lua; with the user index on, the owner is read in
// the same round trip and, when this Service joined the conn, its entry
// is removed there too.
func (s *Service) runLeave(ctx context.Context, call luacall.Leave, room, conn string) (luacall.LeaveReply, leaveStep, error) {
	pre := s.userPreRead(room, conn)
	if pre == nil {
		rep, err := call.Run(ctx, s.scripts)
		return rep, leaveStep{}, err
	}
	entry := core.UserEntry(room, conn)
	step := leaveStep{sent: s.owners.take(entry)}
	evals := []backend.Eval{call.Eval()}
	if step.sent.ok {
		evals = append(evals, s.userRemove(step.sent, entry))
	}
	cmds, replies, err := s.scripts.DoWith(ctx, pre, evals...)
	if err != nil {
		return luacall.LeaveReply{}, leaveStep{}, err
	}
	if len(replies) == 2 {
		if err := replies[1].Error(); err != nil {
			return luacall.LeaveReply{}, leaveStep{}, err
		}
	}
	rep, err := luacall.DecodeLeave(replies[0])
	step.owner = ownerOf(cmds[0])
	return rep, step, err
}

func (s *Service) userRemove(o connOwner, entry string) backend.Eval {
	k := s.keys
	return luacall.UserRemove{
		Index: k.UserIndex(o.user), User: o.user, NowMs: strconv.FormatInt(s.nowMs(), 10), Events: k.UserEvents(o.user), Pub: s.publishCmd(),
		Entries: []luacall.EntryEpoch{{Entry: entry, Epoch: strconv.FormatInt(o.epoch, 10)}},
	}.Eval()
}

// afterLeave is leave's second step: unless the first round trip already
// did, it removes the conn from its owner's index, fenced by the epoch
// read before the leave, so a rejoin of the same conn id that raced it
// keeps its entry; and, when the leave emptied the room, it drops the
// room from active_rooms (dropIfEmpty), whose SREM rides in the same
// round trip.
func (s *Service) afterLeave(ctx context.Context, room, conn string, step leaveStep, emptied bool) error {
	o := step.owner
	done := step.sent.ok && o.user == step.sent.user && o.epoch <= step.sent.epoch
	if s.cfg.DisableUserIndex || !o.ok || done {
		if emptied {
			return s.dropIfEmpty(ctx, room)
		}
		return nil
	}
	var cmds []backend.Cmd
	if emptied {
		cmds = []backend.Cmd{backend.K("SREM", s.keys.ActiveRooms(), room)}
	}
	c, r, err := s.scripts.DoWith(ctx, cmds, s.userRemove(o, core.UserEntry(room, conn)))
	if err == nil {
		err = errors.Join(backend.FirstError(c), r[0].Error())
	}
	if err != nil || !emptied {
		return err
	}
	return s.lookAgain(ctx, room)
}

// userRemovals gathers entries to remove, per user.
type userRemovals map[string][]luacall.EntryEpoch

// addReaped records the conns reap.lua removed from room (conn → its
// conn_meta value).
func (u userRemovals) addReaped(room string, reaped map[string]string) {
	for conn, meta := range reaped {
		if o := parseOwner(meta); o.ok {
			u[o.user] = append(u[o.user], luacall.EntryEpoch{Entry: core.UserEntry(room, conn), Epoch: strconv.FormatInt(o.epoch, 10)})
		}
	}
}

// removeUserEntries runs one user_remove per user, in one pipeline, and
// returns how many entries went.
func (s *Service) removeUserEntries(ctx context.Context, rm userRemovals) (int, error) {
	if s.cfg.DisableUserIndex || len(rm) == 0 {
		return 0, nil
	}
	k := s.keys
	nowS := strconv.FormatInt(s.nowMs(), 10)
	evals := make([]backend.Eval, 0, len(rm))
	for user, entries := range rm {
		evals = append(evals, luacall.UserRemove{
			Index: k.UserIndex(user), User: user, NowMs: nowS, Events: k.UserEvents(user), Pub: s.publishCmd(), Entries: entries,
		}.Eval())
	}
	replies, err := s.scripts.RunMany(ctx, evals...)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range replies {
		rep, err := luacall.DecodeUserRemove(r)
		if err != nil {
			return n, err
		}
		n += int(rep.Removed)
	}
	return n, nil
}

// RepairUsers runs one repair pass of the user index now and returns how
// many entries it removed: an entry whose conn is no longer its user's in
// its room (a crash or a failed call between a leave or reap and its
// second step) is removed, with an offline event when it was the user's
// last. The reaper loop runs it every tenth pass; with the reaper off,
// call it with Reap. It costs one read per entry of every user.
func (s *Service) RepairUsers(ctx context.Context) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if s.cfg.DisableUserIndex {
		return 0, nil
	}
	total := 0
	err := s.eachBatch(ctx, s.keys.ActiveUsers(), "user repair", func(users []string) error {
		removed, err := s.repairUsers(ctx, users)
		total += removed
		return err
	})
	return total, err
}

func (s *Service) repairUsers(ctx context.Context, users []string) (int, error) {
	k := s.keys
	reads := make([]backend.Cmd, len(users))
	for i, u := range users {
		reads[i] = backend.K("HGETALL", k.UserIndex(u))
	}
	r, err := s.client.Do(ctx, reads...)
	if err != nil {
		return 0, err
	}
	type entry struct {
		user, field, epoch string
	}
	var entries []entry
	var checks []backend.Cmd
	var empty []string
	for i, u := range users {
		m, err := r[i].AsStringMap()
		if err != nil {
			return 0, fmt.Errorf("presence: user repair: %q: %w", u, err)
		}
		if len(m) == 0 {
			empty = append(empty, u)
		}
		for f, e := range m {
			room, conn, ok := core.SplitUserEntry(f)
			if !ok {
				continue
			}
			entries = append(entries, entry{u, f, e})
			checks = append(checks, backend.K("HGET", k.ConnMeta(room), conn))
		}
	}
	if err := s.dropIdleUsers(ctx, empty); err != nil {
		return 0, err
	}
	if len(checks) == 0 {
		return 0, nil
	}
	owners, err := s.client.Do(ctx, checks...)
	if err != nil {
		return 0, err
	}
	stale := userRemovals{}
	for i, e := range entries {
		if err := owners[i].Error(); err != nil {
			return 0, err
		}
		// The entry's own epoch bounds the removal: a join that raced this
		// pass and wrote a newer one keeps it.
		if o := ownerOf(owners[i]); !o.ok || o.user != e.user {
			stale[e.user] = append(stale[e.user], luacall.EntryEpoch{Entry: e.field, Epoch: e.epoch})
		}
	}
	return s.removeUserEntries(ctx, stale)
}

// dropIdleUsers removes users whose index is empty from active_users,
// then looks again, as dropIfEmpty does for rooms: a join adds the entry
// and the user in one round trip but in other slots, so a user whose entry
// appeared meanwhile is put back.
func (s *Service) dropIdleUsers(ctx context.Context, users []string) error {
	if len(users) == 0 {
		return nil
	}
	k := s.keys
	if _, err := s.client.Do(ctx, backend.C("SREM", []string{k.ActiveUsers()}, users...)); err != nil {
		return err
	}
	looks := make([]backend.Cmd, len(users))
	for i, u := range users {
		looks[i] = backend.K("EXISTS", k.UserIndex(u))
	}
	r, err := s.client.Do(ctx, looks...)
	var back []string
	for i, u := range users {
		if err != nil || r[i].Error() != nil {
			back = append(back, u)
			continue
		}
		if n, _ := r[i].AsInt(); n > 0 {
			back = append(back, u)
		}
	}
	if len(back) == 0 {
		return err
	}
	_, aerr := s.client.Do(ctx, backend.C("SADD", []string{k.ActiveUsers()}, back...))
	if err != nil {
		return err
	}
	return aerr
}
