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
// users. A user event reaches each of them once: the node has one
// subscription for every user, and a socket is in a user's set at most
// once.
type watchers struct {
	mu     sync.RWMutex
	byUser map[string]map[*conn]struct{}
	byConn map[*conn]map[string]struct{}
}

func newWatchers() *watchers {
	return &watchers{byUser: map[string]map[*conn]struct{}{}, byConn: map[*conn]map[string]struct{}{}}
}

var errTooManyWatches = errors.New("too many watched users")

// add makes c watch user, unless c already watches max users.
func (w *watchers) add(c *conn, user string, max int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	mine := w.byConn[c]
	if _, ok := mine[user]; ok {
		return nil
	}
	if len(mine) >= max {
		return fmt.Errorf("%w: %w: the socket watches %d users already (the limit); unwatch one first", errPayload, errTooManyWatches, len(mine))
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
	return nil
}

func (w *watchers) remove(c *conn, user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(c, user)
}

func (w *watchers) removeLocked(c *conn, user string) {
	if mine := w.byConn[c]; mine != nil {
		delete(mine, user)
		if len(mine) == 0 {
			delete(w.byConn, c)
		}
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

// subscribeUsers starts the bridge of user events to the sockets that
// watch each user. A service without the user index publishes none.
func (b *Binding) subscribeUsers(ctx context.Context) error {
	if b.svc.Config().DisableUserIndex {
		return nil
	}
	sub, err := b.svc.SubscribeUsersRaw(ctx, func(ev presence.RawEvent) {
		for _, c := range b.watch.of(ev.Target) {
			if err := c.sock.Emit(EventUserEvent, ev.Payload); err != nil {
				b.log.Warn("socketio: forward user event", "userId", ev.Target, "err", err)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("socketio: subscribe to user events: %w", err)
	}
	b.subs = append(b.subs, sub)
	return nil
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
	if err := c.b.watch.add(c, user, c.b.opts.MaxWatchedUsers); err != nil {
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
