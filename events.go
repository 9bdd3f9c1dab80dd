package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/strategy"
)

// Event is a presence event (docs/PROTOCOL.md's presence:event payload).
type Event = strategy.PresenceEvent

// Subscription is an active event subscription.
type Subscription interface {
	// Close stops delivery and waits for the handler's last call.
	// Idempotent.
	Close() error
}

type subscription struct {
	s    *Service
	once sync.Once
	sub  backend.Subscription
	err  error
}

func (sub *subscription) Close() error {
	sub.once.Do(func() {
		sub.err = sub.sub.Close()
		sub.s.mu.Lock()
		delete(sub.s.subs, sub)
		sub.s.mu.Unlock()
	})
	return sub.err
}

// Subscribe delivers every presence event of every room (from every node)
// to handler, sequentially, until the subscription or the Service is
// closed. A handler that panics is logged and does not stop delivery.
func (s *Service) Subscribe(ctx context.Context, handler func(Event)) (Subscription, error) {
	return subscribeJSON(ctx, s, s.keys.RoomEventsPattern(), "presence", handler)
}

// subscribeJSON pattern-subscribes and decodes each payload as T.
func subscribeJSON[T any](ctx context.Context, s *Service, pattern, what string, handler func(T)) (Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if handler == nil {
		return nil, invalid("Subscribe: nil handler")
	}
	sub := &subscription{s: s}
	bs, err := s.client.PSubscribe(ctx, pattern, func(m backend.Message) {
		var ev T
		if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
			s.log.Warn("presence: undecodable event", "kind", what, "channel", m.Channel, "err", err)
			return
		}
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("presence: event handler panicked", "kind", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			}
		}()
		handler(ev)
	})
	if err != nil {
		return nil, fmt.Errorf("presence: subscribe: %w", err)
	}
	sub.sub = bs
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		bs.Close()
		return nil, ErrClosed
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	return sub, nil
}
