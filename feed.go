package presence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/backend"
)

// A Feed delivers the events of the rooms and users a server node follows,
// instead of every room's (Subscribe): a node follows a room while it has
// local sockets in it, so with N nodes an event is delivered to the nodes
// that serve its room, not to all N. How it subscribes depends on
// Service.PubSub:
//   - pattern: three pattern subscriptions cover every room, channel and
//     user; following is bookkeeping only, and handlers receive the events
//     of rooms nobody follows too.
//   - channels: one subscription (SUBSCRIBE) gets each followed room's
//     presence and metadata channels and each followed user's channel.
//   - sharded: room and user channels through SSUBSCRIBE (each on the
//     shard owning its slot) and the rooms' metadata channels through a
//     classic subscription, as metadata scripts publish them classically.
//
// Follows are reference-counted: each FollowRoom is undone by one
// UnfollowRoom, and a room stays subscribed while any follow holds it.
// After its last unfollow a room stays subscribed for FeedHandlers.Linger,
// so a socket that leaves and joins again costs no round trips; handlers
// may see events of such a room meanwhile.
type Feed struct {
	s      *Service
	h      FeedHandlers
	linger time.Duration
	sub    *subscription // registered with the Service, so Service.Close ends the feed

	// pattern mode
	patterns []Subscription
	// channels and sharded modes
	events backend.ChannelSubscription // room presence (+ metadata in channels mode) and users
	meta   backend.ChannelSubscription // sharded mode: room metadata, classic

	ctx    context.Context // canceled by Close: lingering removals give up
	cancel context.CancelFunc
	bg     sync.WaitGroup // lingering removals scheduled or running

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	closed bool
	rooms  *followSet
	users  *followSet

	presenceN, metadataN, userN atomic.Uint64
}

// FeedHandlers are the handlers and options of a Feed. A nil handler's
// events are not subscribed (FollowUser needs User). Handlers may be
// called concurrently for different rooms or users; the events of one
// room (or one user) arrive sequentially, in order. A handler that panics
// is logged and does not stop delivery.
type FeedHandlers struct {
	// Presence receives presence events; Target is the room id.
	Presence func(RawEvent)
	// Metadata receives the metadata events of the channels named after a
	// followed room (whatever their type); Target is the channel name.
	Metadata func(RawEvent)
	// User receives user events; Target is the user id.
	User func(RawEvent)
	// Linger is how long a room or user stays subscribed after its last
	// unfollow (default DefaultFeedLinger; negative: unsubscribe at once).
	Linger time.Duration
}

// DefaultFeedLinger is FeedHandlers.Linger's default.
const DefaultFeedLinger = 2 * time.Second

// followSet is the follows of rooms or of users.
type followSet struct {
	m     map[string]*follow
	rooms bool
}

// follow is one room's or user's follows.
type follow struct {
	refs    int           // FollowX calls not undone yet
	waiting int           // FollowX calls in flight (they hold the pointer)
	op      chan struct{} // held (one token) while subscribing or unsubscribing
	held    bool          // its channels may be subscribed (set before Add, cleared after Remove)
	ready   bool          // Add confirmed them
	timer   *time.Timer   // the lingering removal, while scheduled
}

// FeedStats are a Feed's counts.
type FeedStats struct {
	Rooms, Users int // followed: with a follow not undone
	// SubscribedRooms and SubscribedUsers count those with channels of
	// their own subscribed, lingering ones included (0 in pattern mode).
	SubscribedRooms, SubscribedUsers int
	// Messages received, by kind.
	Presence, Metadata, User uint64
}

// NewFeed opens a feed with no room or user followed. In pattern mode it
// subscribes its patterns before returning. Close it when done; the
// Service's Close closes it too.
func (s *Service) NewFeed(ctx context.Context, h FeedHandlers) (*Feed, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if h.Presence == nil && h.Metadata == nil && h.User == nil {
		return nil, invalid("NewFeed: no handler")
	}
	f := &Feed{s: s, h: h, linger: h.Linger, rooms: &followSet{m: map[string]*follow{}, rooms: true}, users: &followSet{m: map[string]*follow{}}}
	if f.linger == 0 {
		f.linger = DefaultFeedLinger
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	if err := f.open(ctx); err != nil {
		f.end()
		return nil, err
	}
	return f, nil
}

// route is one kind of event: its channels, by the id they carry, and
// its handler, counted.
type route struct {
	what    string
	pattern string // pattern mode's subscription
	target  func(channel string) (string, bool)
	h       func(RawEvent)
}

func (f *Feed) routes() []route {
	s := f.s
	counted := func(h func(RawEvent), n *atomic.Uint64) func(RawEvent) {
		if h == nil {
			return nil
		}
		return func(ev RawEvent) { n.Add(1); h(ev) }
	}
	return []route{
		{"presence", s.keys.RoomEventsPattern(), s.roomTarget, counted(f.h.Presence, &f.presenceN)},
		{"metadata", s.metaEventsPattern(), s.metaTargetFunc(), counted(f.h.Metadata, &f.metadataN)},
		{"user", s.keys.UserEventsPattern(), s.userTarget, counted(f.h.User, &f.userN)},
	}
}

func (f *Feed) open(ctx context.Context) error {
	s := f.s
	if s.pubsub == PubSubPattern {
		for _, r := range f.routes() {
			if r.h == nil {
				continue
			}
			sub, err := subscribeRaw(ctx, s, r.pattern, r.what, r.target, r.h)
			if err != nil {
				return err
			}
			f.patterns = append(f.patterns, sub)
		}
		return nil
	}
	// One handler per kind, picked by the channel's shape.
	var hs []backend.Handler
	var targets []func(string) (string, bool)
	for _, r := range f.routes() {
		if r.h != nil {
			hs = append(hs, rawHandler(s, r.what, r.target, r.h))
			targets = append(targets, r.target)
		}
	}
	deliver := func(m backend.Message) {
		for i, t := range targets {
			if _, ok := t(m.Channel); ok {
				hs[i](m)
				return
			}
		}
		s.log.Warn("presence: feed: event on an unexpected channel", "channel", m.Channel)
	}
	cs, ok := s.client.(backend.ChannelSubscriber)
	if !ok { // unreachable: New checked the mode against the client
		return invalid("NewFeed: %T does not subscribe to channels", s.client)
	}
	sharded := s.pubsub == PubSubSharded
	var err error
	if f.events, err = cs.SubscribeChannels(ctx, sharded, deliver); err != nil {
		return fmt.Errorf("presence: feed: %w", err)
	}
	if sharded && f.h.Metadata != nil {
		if f.meta, err = cs.SubscribeChannels(ctx, false, deliver); err != nil {
			return fmt.Errorf("presence: feed: %w", err)
		}
	}
	f.sub = &subscription{s: s, sub: feedState{f}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	s.subs[f.sub] = struct{}{}
	return nil
}

// FollowRoom follows room's presence and metadata events and returns once
// they are subscribed: an event published after it returns is delivered.
// Undo it with UnfollowRoom. On error the follow did not happen.
func (f *Feed) FollowRoom(ctx context.Context, room string) error {
	if err := checkID("roomId", room, f.s.cfg.MaxIDBytes, ""); err != nil {
		return err
	}
	return f.doFollow(ctx, f.rooms, room)
}

// UnfollowRoom undoes one FollowRoom of room; the last one unsubscribes it
// (after the linger). Unfollowing a room not followed does nothing.
func (f *Feed) UnfollowRoom(room string) { f.unfollow(f.rooms, room) }

// FollowUser follows user's events, as FollowRoom does a room's. The
// feed needs a User handler.
func (f *Feed) FollowUser(ctx context.Context, user string) error {
	if err := checkID("userId", user, f.s.cfg.MaxIDBytes, ""); err != nil {
		return err
	}
	if f.h.User == nil {
		return invalid("FollowUser: the feed has no User handler")
	}
	return f.doFollow(ctx, f.users, user)
}

// UnfollowUser undoes one FollowUser of user.
func (f *Feed) UnfollowUser(user string) { f.unfollow(f.users, user) }

func (f *Feed) doFollow(ctx context.Context, m *followSet, id string) error {
	f.mu.Lock()
	if f.closed || f.s.closed.Load() {
		f.mu.Unlock()
		return ErrClosed
	}
	e := m.m[id]
	if e == nil {
		e = &follow{op: make(chan struct{}, 1)}
		m.m[id] = e
	}
	e.refs++
	e.waiting++
	f.stopTimer(e)
	pattern := f.s.pubsub == PubSubPattern
	f.mu.Unlock()
	err := ctx.Err()
	if err == nil && !pattern {
		err = f.subscribe(ctx, m, id, e)
	}
	f.mu.Lock()
	e.waiting--
	if err != nil {
		f.release(m, id, e)
	}
	f.mu.Unlock()
	return err
}

// subscribe makes sure e's channels are subscribed.
func (f *Feed) subscribe(ctx context.Context, m *followSet, id string, e *follow) error {
	select {
	case e.op <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-e.op }()
	f.mu.Lock()
	ready, closed := e.ready, f.closed
	if !ready && !closed {
		e.held = true
	}
	f.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if ready {
		return nil
	}
	if err := f.add(ctx, m, id); err != nil {
		return fmt.Errorf("presence: follow: %w", err)
	}
	f.mu.Lock()
	e.ready = true
	f.mu.Unlock()
	return nil
}

func (f *Feed) unfollow(m *followSet, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := m.m[id]; e != nil && e.refs > 0 {
		f.release(m, id, e)
	}
}

// release drops one ref of e and, at zero, schedules its removal. f.mu
// is held.
func (f *Feed) release(m *followSet, id string, e *follow) {
	e.refs--
	if e.refs > 0 || f.closed || e.timer != nil {
		return
	}
	if !e.held && e.waiting == 0 {
		delete(m.m, id)
		return
	}
	f.bg.Add(1)
	d := max(f.linger, 0)
	e.timer = time.AfterFunc(d, func() {
		defer f.bg.Done()
		f.removeIdle(m, id, e)
	})
}

// stopTimer cancels e's scheduled removal, if it has not started. f.mu is
// held.
func (f *Feed) stopTimer(e *follow) {
	if e.timer != nil && e.timer.Stop() {
		e.timer = nil
		f.bg.Done()
	}
}

// removeIdle unsubscribes e's channels unless it was followed again.
func (f *Feed) removeIdle(m *followSet, id string, e *follow) {
	select {
	case e.op <- struct{}{}:
	case <-f.ctx.Done():
		return
	}
	defer func() { <-e.op }()
	f.mu.Lock()
	// Cleared here, with refs read: an unfollow from now on schedules a
	// removal of its own.
	e.timer = nil
	if e.refs > 0 || f.closed {
		f.mu.Unlock()
		return
	}
	held := e.held
	f.mu.Unlock()
	var err error
	if held {
		ctx, cancel := context.WithTimeout(f.ctx, removeTimeout)
		err = f.remove(ctx, m, id)
		cancel()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		e.held, e.ready = false, false
	}
	switch {
	case e.refs > 0 || f.closed:
	case err != nil:
		// Still subscribed, perhaps: try again later rather than keep
		// receiving a room nobody follows.
		f.s.log.Warn("presence: feed: unsubscribe failed; retrying", "id", id, "err", err)
		f.bg.Add(1)
		e.timer = time.AfterFunc(max(f.linger, time.Second), func() {
			defer f.bg.Done()
			f.removeIdle(m, id, e)
		})
	case e.waiting == 0:
		delete(m.m, id)
	}
}

// channels returns the channels of a room or user: those of the events
// subscription and those of the meta one.
func (f *Feed) channels(m *followSet, id string) (events, meta []string) {
	k := f.s.keys
	if !m.rooms {
		return []string{k.UserEvents(id)}, nil
	}
	if f.h.Presence != nil {
		events = append(events, k.RoomEvents(id))
	}
	if f.h.Metadata != nil {
		if f.meta != nil {
			meta = append(meta, k.RoomMetaEvents(id))
		} else {
			events = append(events, k.RoomMetaEvents(id))
		}
	}
	return events, meta
}

func (f *Feed) add(ctx context.Context, m *followSet, id string) error {
	events, meta := f.channels(m, id)
	if len(meta) > 0 {
		if err := f.meta.Add(ctx, meta...); err != nil {
			return err
		}
	}
	if len(events) > 0 {
		return f.events.Add(ctx, events...)
	}
	return nil
}

func (f *Feed) remove(ctx context.Context, m *followSet, id string) error {
	events, meta := f.channels(m, id)
	var err error
	if len(meta) > 0 {
		err = f.meta.Remove(ctx, meta...)
	}
	if len(events) > 0 {
		err = errors.Join(err, f.events.Remove(ctx, events...))
	}
	return err
}

// removeTimeout bounds a lingering removal's round trip.
const removeTimeout = 5 * time.Second

// Stats returns the feed's counts.
func (f *Feed) Stats() FeedStats {
	f.mu.Lock()
	st := FeedStats{}
	for _, e := range f.rooms.m {
		if e.refs > 0 {
			st.Rooms++
		}
		if e.held && !f.closed {
			st.SubscribedRooms++
		}
	}
	for _, e := range f.users.m {
		if e.refs > 0 {
			st.Users++
		}
		if e.held && !f.closed {
			st.SubscribedUsers++
		}
	}
	f.mu.Unlock()
	st.Presence, st.Metadata, st.User = f.presenceN.Load(), f.metadataN.Load(), f.userN.Load()
	return st
}

// Resubscribed counts how often the feed's subscriptions were restored
// after losing their connection (or, sharded, a channel's shard): events
// published meanwhile were not delivered, so a caller that sees it grow
// resynchronises what it serves.
func (f *Feed) Resubscribed() uint64 {
	var n uint64
	for _, p := range f.patterns {
		n += Resubscriptions(p)
	}
	for _, c := range []backend.ChannelSubscription{f.events, f.meta} {
		if r, ok := c.(backend.Resubscriber); ok {
			n += r.Resubscribed()
		}
	}
	return n
}

// Close unsubscribes everything and waits for the handlers' last calls.
// Idempotent; later follows fail with ErrClosed.
func (f *Feed) Close() error {
	if f.sub != nil {
		return f.sub.Close() // unregisters it from the Service, then feedState.Close
	}
	return f.end()
}

// end stops the lingering removals and closes the subscriptions, once.
func (f *Feed) end() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		for _, m := range []*followSet{f.rooms, f.users} {
			for _, e := range m.m {
				f.stopTimer(e)
			}
		}
		f.mu.Unlock()
		f.cancel()
		f.bg.Wait()
		f.closeErr = f.closeSubs()
	})
	return f.closeErr
}

func (f *Feed) closeSubs() error {
	var errs []error
	for _, p := range f.patterns {
		errs = append(errs, p.Close())
	}
	for _, c := range []backend.ChannelSubscription{f.events, f.meta} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// feedState is a Feed's channel subscriptions as one backend.Subscription,
// for the Service: its Close ends the feed, and its health check asks
// them.
type feedState struct{ f *Feed }

func (fs feedState) Close() error { return fs.f.end() }

func (fs feedState) Pattern() string { return "" }

func (fs feedState) Alive() error {
	for _, c := range []backend.ChannelSubscription{fs.f.events, fs.f.meta} {
		if st, ok := c.(backend.SubscriptionState); ok {
			if err := st.Alive(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (fs feedState) Resubscribed() uint64 { return fs.f.Resubscribed() }
