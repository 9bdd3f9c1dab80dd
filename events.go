package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/realtime-message/presence/backend"
)

// Event is a presence event (docs/PROTOCOL.md's presence:event payload),
// as Subscribe decodes it. Scripts and strategies publish the same JSON
// (core.PresenceEvent); a test keeps the two field for field.
type Event struct {
	Type   string          `json:"type"` // join, leave, update
	RoomID string          `json:"roomId"`
	UserID string          `json:"userId"`
	ConnID string          `json:"connId"`
	State  json.RawMessage `json:"state"` // object, or null
	TS     int64           `json:"ts"`    // ms, the server's time of the change
	Epoch  int64           `json:"epoch"` // the conn's epoch
	// Seq is the room's sequence number of this change: one more than the
	// room's previous change. A client that mirrors a room applies, in
	// order, the events with Seq above its snapshot's; a gap means it
	// missed one and must take a new snapshot (docs/PROTOCOL.md).
	Seq int64 `json:"seq"`
}

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
//
// It is meant for tools that want everything (a dashboard, an observer);
// a server node follows the rooms it serves with a Feed instead. With
// PubSub sharded there is no pattern to subscribe to: the subscription
// follows the active-rooms index, refreshed every second, so the first
// events of a new room may be missed, and each room added after the first
// listing counts in Resubscriptions.
func (s *Service) Subscribe(ctx context.Context, handler func(Event)) (Subscription, error) {
	if handler == nil {
		return subscribe(ctx, s, "", "presence", nil)
	}
	return s.subscribeRooms(ctx, "presence", jsonHandler(s, "presence", handler))
}

// RawEvent is an event as published, for forwarding it without decoding
// and re-encoding it (see SubscribeRaw).
type RawEvent struct {
	// Target is the room id of a presence event, or the channel name
	// (Channel.Name) of a metadata event: the Socket.IO room the event goes
	// to. It is read from the pub/sub channel name, not from Payload.
	Target string
	// Payload is the event's JSON exactly as published, checked to be valid
	// JSON. It is a fresh copy per call: the handler may keep or modify it.
	Payload json.RawMessage
}

// SubscribeRaw is Subscribe without decoding: each presence event reaches
// handler as its JSON, with the room id as Target, sequentially, until the
// subscription or the Service is closed. Payloads that are not JSON and
// messages on channels that are not a room's event channel of this
// Service's KeyPrefix are logged and dropped; a handler that panics is
// logged and does not stop delivery.
func (s *Service) SubscribeRaw(ctx context.Context, handler func(RawEvent)) (Subscription, error) {
	if handler == nil {
		return subscribe(ctx, s, "", "presence", nil)
	}
	return s.subscribeRooms(ctx, "presence", rawHandler(s, "presence", s.roomTarget, handler))
}

// subscribeRooms subscribes h to the presence events of every room.
func (s *Service) subscribeRooms(ctx context.Context, what string, h backend.Handler) (Subscription, error) {
	if s.pubsub == PubSubSharded {
		return s.followActiveRooms(ctx, h)
	}
	return subscribe(ctx, s, s.keys.RoomEventsPattern(), what, h)
}

// SubscribeMetadataRaw is SubscribeMetadata without decoding, as
// SubscribeRaw is for presence events; Target is the event's channel name.
func (s *Service) SubscribeMetadataRaw(ctx context.Context, handler func(RawEvent)) (Subscription, error) {
	return subscribeRaw(ctx, s, s.metaEventsPattern(), "metadata", s.metaTargetFunc(), handler)
}

// metaEventsPattern matches every metadata event channel of this node's
// PubSub mode: per channel in pattern mode, per room otherwise.
func (s *Service) metaEventsPattern() string {
	if s.pubsub == PubSubPattern {
		return s.keys.MetaEventsPattern()
	}
	return s.keys.RoomMetaEventsPattern()
}

// metaTargetFunc reads the channel name from metadata event channels of
// this node's PubSub mode.
func (s *Service) metaTargetFunc() func(string) (string, bool) {
	if s.pubsub == PubSubPattern {
		return s.metaTarget
	}
	return s.roomMetaTarget
}

// roomMetaTarget returns N of "<prefix>:{room:N}:meta_events".
func (s *Service) roomMetaTarget(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, s.keys.Prefix+":{room:")
	if !ok {
		return "", false
	}
	room, ok := strings.CutSuffix(rest, "}:meta_events")
	if !ok || room == "" || strings.ContainsAny(room, "{}") {
		return "", false
	}
	return room, true
}

// roomTarget returns R of "<prefix>:{room:R}:events". Ids cannot contain
// braces, so R ends at the first '}' and a channel with another brace in it
// was not published by this library.
func (s *Service) roomTarget(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, s.keys.Prefix+":{room:")
	if !ok {
		return "", false
	}
	room, ok := strings.CutSuffix(rest, "}:events")
	if !ok || room == "" || strings.ContainsAny(room, "{}") {
		return "", false
	}
	return room, true
}

// metaTarget returns N of "<prefix>:{chan:T:N}:meta_events". A channel
// type cannot contain ':', so the first ':' ends it; the name may contain
// ':'.
func (s *Service) metaTarget(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, s.keys.Prefix+":{chan:")
	if !ok {
		return "", false
	}
	tn, ok := strings.CutSuffix(rest, "}:meta_events")
	if !ok || strings.ContainsAny(tn, "{}") {
		return "", false
	}
	typ, name, ok := strings.Cut(tn, ":")
	if !ok || typ == "" || name == "" {
		return "", false
	}
	return name, true
}

func subscribeRaw(ctx context.Context, s *Service, pattern, what string, target func(string) (string, bool), handler func(RawEvent)) (Subscription, error) {
	if handler == nil {
		return subscribe(ctx, s, pattern, what, nil)
	}
	return subscribe(ctx, s, pattern, what, rawHandler(s, what, target, handler))
}

// rawHandler checks each message and hands it to handler as a RawEvent.
func rawHandler(s *Service, what string, target func(string) (string, bool), handler func(RawEvent)) backend.Handler {
	return func(m backend.Message) {
		t, ok := target(m.Channel)
		if !ok {
			s.log.Warn("presence: event on an unexpected channel", "kind", what, "channel", m.Channel)
			return
		}
		payload := []byte(m.Payload)
		if !json.Valid(payload) {
			s.log.Warn("presence: undecodable event", "kind", what, "channel", m.Channel)
			return
		}
		defer recoverHandler(s, what)
		handler(RawEvent{Target: t, Payload: payload})
	}
}

// subscribeJSON pattern-subscribes and decodes each payload as T.
func subscribeJSON[T any](ctx context.Context, s *Service, pattern, what string, handler func(T)) (Subscription, error) {
	if handler == nil {
		return subscribe(ctx, s, pattern, what, nil)
	}
	return subscribe(ctx, s, pattern, what, jsonHandler(s, what, handler))
}

// jsonHandler decodes each payload as T for handler.
func jsonHandler[T any](s *Service, what string, handler func(T)) backend.Handler {
	return func(m backend.Message) {
		var ev T
		if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
			s.log.Warn("presence: undecodable event", "kind", what, "channel", m.Channel, "err", err)
			return
		}
		defer recoverHandler(s, what)
		handler(ev)
	}
}

func recoverHandler(s *Service, what string) {
	if r := recover(); r != nil {
		s.log.Error("presence: event handler panicked", "kind", what, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

// subscribe pattern-subscribes h; a nil h is the caller's nil handler.
func subscribe(ctx context.Context, s *Service, pattern, what string, h backend.Handler) (Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, invalid("Subscribe: nil handler")
	}
	bs, err := s.client.PSubscribe(ctx, pattern, h)
	if err != nil {
		return nil, fmt.Errorf("presence: subscribe: %w", err)
	}
	return s.register(bs)
}

// register makes bs a subscription the Service closes with itself.
func (s *Service) register(bs backend.Subscription) (Subscription, error) {
	sub := &subscription{s: s, sub: bs}
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
