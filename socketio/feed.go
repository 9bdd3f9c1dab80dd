package socketio

import (
	"context"
	"fmt"

	"github.com/realtime-message/presence"
)

// The binding receives only the events its local sockets need: a room's
// presence and metadata events while a local socket is in the room, a
// user's events while a local socket watches the user. A socket follows
// its room before the join script runs (it is in the Socket.IO room
// already), so no event of the room published after its join is missed;
// the feed counts one follow per socket and unsubscribes a room after its
// last local socket left.

// openFeed opens the binding's feed. A service without the user index
// publishes no user events.
func (b *Binding) openFeed(ctx context.Context) error {
	h := presence.FeedHandlers{Presence: b.forwardPresence, Metadata: b.forwardMetadata}
	if !b.svc.Config().DisableUserIndex {
		h.User = b.forwardUser
	}
	f, err := b.svc.NewFeed(ctx, h)
	if err != nil {
		return fmt.Errorf("socketio: subscribe to events: %w", err)
	}
	b.feed = f
	return nil
}

// FeedStats returns the counts of the binding's event feed: rooms and
// users followed and subscribed, messages received by kind.
func (b *Binding) FeedStats() presence.FeedStats { return b.feed.Stats() }
