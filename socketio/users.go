package socketio

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/realtime-message/presence"
)

// Event names of user presence (docs/PROTOCOL.md, "User presence").
const (
	EventUser        = "presence:user"
	EventWatchUser   = "presence:watchUser"
	EventUnwatchUser = "presence:unwatchUser"
	EventUserEvent   = "user:event" // server → client
)

// DefaultMaxWatchedUsers bounds the users one socket watches by default.
const DefaultMaxWatchedUsers = 100

type (
	// userAck is presence:user's and presence:watchUser's ack:
	// {ok:true, userId, online, rooms}.
	userAck struct {
		OK bool `json:"ok"`
		presence.UserPresence
	}
	unwatchAck struct {
		OK     bool   `json:"ok"`
		UserID string `json:"userId"`
	}
)

// watchers is the binding's record of which local sockets watch which
// users. A user event reaches each of them once: the node subscribes to a
// user once, and a socket is in a user's set at most once. Each watch
// holds one follow of its user in the feed, taken before it is added
// here and given back when it is removed.
type watchers struct {
	unfollow func(user string)
	mu       sync.RWMutex
	byUser   map[string]map[*conn]struct{}
	byConn   map[*conn]map[string]struct{}
}

func newWatchers(unfollow func(user string)) *watchers {
	return &watchers{unfollow: unfollow, byUser: map[string]map[*conn]struct{}{}, byConn: map[*conn]map[string]struct{}{}}
}

var errTooManyWatches = errors.New("too many watched users")

// add makes c watch user, unless c already watches max users, and
// reports whether the watch is new (it keeps the follow its caller took).
func (w *watchers) add(c *conn, user string, max int) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	mine := w.byConn[c]
	if _, ok := mine[user]; ok {
		return false, nil
	}
	if len(mine) >= max {
		return false, tooMany(len(mine))
	}
	if mine == nil {
		mine = map[string]struct{}{}
		w.byConn[c] = mine
	}
	mine[user] = struct{}{}
	set := w.byUser[user]
	if set == nil {
		set = map[*conn]struct{}{}
		w.byUser[user] = set
	}
	set[c] = struct{}{}
	return true, nil
}

// check returns add's error for c watching max users and not user.
func (w *watchers) check(c *conn, user string, max int) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	mine := w.byConn[c]
	if _, ok := mine[user]; !ok && len(mine) >= max {
		return tooMany(len(mine))
	}
	return nil
}

func tooMany(n int) error {
	return fmt.Errorf("%w: %w: the socket watches %d users already (the limit); unwatch one first", errPayload, errTooManyWatches, n)
}

func (w *watchers) remove(c *conn, user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(c, user)
}

func (w *watchers) removeLocked(c *conn, user string) {
	mine := w.byConn[c]
	if _, ok := mine[user]; !ok {
		return
	}
	w.unfollow(user)
	delete(mine, user)
	if len(mine) == 0 {
		delete(w.byConn, c)
	}
	if set := w.byUser[user]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(w.byUser, user)
		}
	}
}

// drop forgets every watch of c (disconnect).
func (w *watchers) drop(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for user := range w.byConn[c] {
		w.removeLocked(c, user)
	}
}

func (w *watchers) of(user string) []*conn {
	w.mu.RLock()
	defer w.mu.RUnlock()
	out := make([]*conn, 0, len(w.byUser[user]))
	for c := range w.byUser[user] {
		out = append(out, c)
	}
	return out
}

// forwardUser sends a user event to the local sockets watching the user.
func (b *Binding) forwardUser(ev presence.RawEvent) {
	for _, c := range b.watch.of(ev.Target) {
		if err := c.sock.Emit(EventUserEvent, ev.Payload); err != nil {
			b.log.Warn("socketio: forward user event", "userId", ev.Target, "err", err)
		}
	}
}

// bindUsers registers the user presence events; they are reads, limited
// with the metadata events.
func (b *Binding) bindUsers(c *conn) {
	b.handle(c, EventUser, c.metadata, c.userQuery)
	b.handle(c, EventWatchUser, c.metadata, c.watchUser)
	b.handle(c, EventUnwatchUser, c.metadata, c.unwatchUser)
}

func (c *conn) userQuery(ctx context.Context, payload any) (any, error) {
	user, err := parseUserReq(payload)
	if err != nil {
		return nil, err
	}
	p, err := c.b.svc.User(ctx, user)
	if err != nil {
		return nil, err
	}
	return userAck{OK: true, UserPresence: p}, nil
}

// watchUser starts delivering the user's events to the socket, then reads
// where the user is: an event published after the read is delivered, so
// the ack plus the events that follow it never miss a change.
func (c *conn) watchUser(ctx context.Context, payload any) (any, error) {
	user, err := parseUserReq(payload)
	if err != nil {
		return nil, err
	}
	if c.released.Load() {
		return nil, errDisconnected
	}
	w := c.b.watch
	if err := w.check(c, user, c.b.opts.MaxWatchedUsers); err != nil {
		return nil, err
	}
	if c.b.svc.Config().DisableUserIndex {
		_, err := c.b.svc.User(ctx, user) // the service's error
		return nil, err
	}
	// The follow comes first, so that an event published after the read
	// below is delivered.
	if err := c.b.feed.FollowUser(ctx, user); err != nil {
		return nil, err
	}
	added, err := w.add(c, user, c.b.opts.MaxWatchedUsers)
	if !added {
		c.b.feed.UnfollowUser(user) // watched already, or over the limit meanwhile
	}
	if err != nil {
		return nil, err
	}
	p, err := c.b.svc.User(ctx, user)
	if errors.Is(err, presence.ErrInvalidArgument) {
		c.b.watch.remove(c, user) // nothing to watch: a bad id, or no index
	}
	if err != nil {
		return nil, err
	}
	if c.released.Load() {
		// Disconnected meanwhile: its cleanup may have run before the add.
		c.b.watch.drop(c)
	}
	return userAck{OK: true, UserPresence: p}, nil
}

func (c *conn) unwatchUser(_ context.Context, payload any) (any, error) {
	user, err := parseUserReq(payload)
	if err != nil {
		return nil, err
	}
	c.b.watch.remove(c, user)
	return unwatchAck{OK: true, UserID: user}, nil
}

// parseUserReq validates {userId}; the service validates the id itself.
func parseUserReq(v any) (string, error) {
	if err := checkPayload(v); err != nil {
		return "", err
	}
	o, err := asObject(v, "payload", false)
	if err != nil {
		return "", err
	}
	if err := o.only("payload", "userId"); err != nil {
		return "", err
	}
	return o.str("userId")
}
