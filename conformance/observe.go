package conformance

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// Every service of a case must use the same pub/sub mode, or they would
// not hear each other (docs/DESIGN.md, "Pub/sub modes"): the harness
// resolves Config.PubSub once, as a node on the target would, and sets it
// on every service, wrapped clients included.

// pubsub returns the mode presence.New picks on the target.
func (h *harness) pubsub() string {
	h.pubsubOnce.Do(func() {
		h.pubsubMode = presence.PubSubPattern
		svc, err := presence.New(h.client(), presence.Config{KeyPrefix: h.prefix(), ReaperInterval: -1, Logger: discard})
		if err != nil {
			h.t.Logf("conformance: resolving the pub/sub mode: %v; using %q", err, h.pubsubMode)
			return
		}
		h.pubsubMode = svc.PubSub()
		svc.Close()
	})
	return h.pubsubMode
}

// withSubscriber gives c, a wrapper that hides backend.ChannelSubscriber
// (faulty, an injector), the subscriptions of another client of the
// target: subscriptions are connections of their own either way.
func (h *harness) withSubscriber(c backend.Client, mode string) backend.Client {
	if mode == presence.PubSubPattern {
		return c
	}
	if _, ok := c.(backend.ChannelSubscriber); ok {
		return c
	}
	cs, ok := h.client().(backend.ChannelSubscriber)
	if !ok {
		return c // unreachable: the mode was resolved on such a client
	}
	return subscribing{c, cs}
}

// unfaulty returns the client under faulty (and subscribing), for the
// cleanup, which must not be failed by injected faults.
func unfaulty(c backend.Client) backend.Client {
	if s, ok := c.(subscribing); ok {
		c = s.Client
	}
	if f, ok := c.(faulty); ok {
		c = f.Client
	}
	return c
}

type subscribing struct {
	backend.Client
	cs backend.ChannelSubscriber
}

func (s subscribing) SubscribeChannels(ctx context.Context, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	return s.cs.SubscribeChannels(ctx, sharded, h)
}

// observe delivers the presence events of rooms and the user events of
// users, decoded, through a Feed of svc that follows them before it
// returns: lossless in every pub/sub mode, where a subscription to every
// room follows new rooms late with sharded pub/sub. Handlers are called
// one at a time.
func observe(ctx context.Context, svc *presence.Service, rooms, users []string, onEvent func(presence.Event), onUser func(presence.UserEvent)) (presence.Subscription, error) {
	var mu sync.Mutex
	h := presence.FeedHandlers{}
	if onEvent != nil {
		h.Presence = func(ev presence.RawEvent) {
			var e presence.Event
			if json.Unmarshal(ev.Payload, &e) == nil {
				mu.Lock()
				defer mu.Unlock()
				onEvent(e)
			}
		}
	}
	if onUser != nil {
		h.User = func(ev presence.RawEvent) {
			var e presence.UserEvent
			if json.Unmarshal(ev.Payload, &e) == nil {
				mu.Lock()
				defer mu.Unlock()
				onUser(e)
			}
		}
	}
	f, err := svc.NewFeed(ctx, h)
	if err != nil {
		return nil, err
	}
	for _, r := range rooms {
		if err := f.FollowRoom(ctx, r); err != nil {
			f.Close()
			return nil, err
		}
	}
	for _, u := range users {
		if err := f.FollowUser(ctx, u); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}
