package presence_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/realtime-message/presence"
)

// rawInbox collects raw events.
type rawInbox chan presence.RawEvent

func (in rawInbox) next(t *testing.T, what string) presence.RawEvent {
	t.Helper()
	select {
	case ev := <-in:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no raw event: %s", what)
		return presence.RawEvent{}
	}
}

// SubscribeRaw delivers the JSON Subscribe decodes, byte for byte, with
// the room id read from the channel (ids with ':' included); metadata
// events likewise with the channel name. Non-JSON payloads and channels
// no id produces are dropped, a panicking handler is contained, and Close
// stops delivery.
func TestSubscribeRaw(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		ctx := ctxT(t)
		if _, err := s.SubscribeRaw(ctx, nil); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("SubscribeRaw(nil): %v", err)
		}
		decoded := make(chan presence.Event, 10)
		sub, err := s.Subscribe(ctx, func(e presence.Event) { decoded <- e })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		raw := make(rawInbox, 10)
		rsub, err := s.SubscribeRaw(ctx, func(e presence.RawEvent) {
			raw <- e
			if string(e.Payload) == `{"boom":true}` {
				panic("handler bug")
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer rsub.Close()
		metaRaw := make(rawInbox, 10)
		msub, err := s.SubscribeMetadataRaw(ctx, func(e presence.RawEvent) { metaRaw <- e })
		if err != nil {
			t.Fatal(err)
		}
		defer msub.Close()

		const room = "a:b:c" // colons are allowed in ids
		if _, err := s.Join(ctx, room, "conn:1", "u", json.RawMessage(`{"k":"v"}`)); err != nil {
			t.Fatal(err)
		}
		ev := raw.next(t, "join")
		var want presence.Event
		select {
		case want = <-decoded:
		case <-time.After(5 * time.Second):
			t.Fatal("no decoded join event")
		}
		var got presence.Event
		if err := json.Unmarshal(ev.Payload, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("raw payload %s decodes to %+v (%v), Subscribe gave %+v", ev.Payload, got, err, want)
		}
		if ev.Target != room || want.RoomID != room {
			t.Fatalf("Target %q, event room %q, want %q", ev.Target, want.RoomID, room)
		}

		// Dropped: not JSON, and a channel no room id produces (ids have no
		// '}'). Then one that passes, and a panic that must not stop
		// delivery of the next.
		c := s.Client()
		k := s.Keys()
		for _, m := range [][2]string{
			{k.RoomEvents(room), "not json"},
			{k.Prefix + ":{room:x}y}:events", `{"type":"join"}`},
			{k.RoomEvents(room), `{"boom":true}`},
			{k.RoomEvents(room), `{"after":1}`},
		} {
			if err := c.Publish(ctx, m[0], m[1]); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []string{`{"boom":true}`, `{"after":1}`} {
			if ev := raw.next(t, want); string(ev.Payload) != want || ev.Target != room {
				t.Fatalf("got %q for %q, want %s", ev.Payload, ev.Target, want)
			}
		}

		ch := presence.Channel{Type: "doc", Name: "n:1:2"}
		if _, err := s.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "v"}}, presence.MetadataOptions{}); err != nil {
			t.Fatal(err)
		}
		mev := metaRaw.next(t, "metadata set")
		var meta presence.MetadataEvent
		if err := json.Unmarshal(mev.Payload, &meta); err != nil || meta.ChannelName != ch.Name || meta.ChannelType != ch.Type {
			t.Fatalf("metadata payload %s: %+v %v", mev.Payload, meta, err)
		}
		if mev.Target != ch.Name {
			t.Fatalf("metadata Target %q, want %q", mev.Target, ch.Name)
		}

		// Close is idempotent and stops delivery; the other subscriptions
		// keep theirs.
		if err := rsub.Close(); err != nil {
			t.Fatal(err)
		}
		if err := rsub.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		if _, err := s.Join(ctx, room, "conn:2", "u", nil); err != nil {
			t.Fatal(err)
		}
		select {
		case <-decoded:
		case <-time.After(5 * time.Second):
			t.Fatal("Subscribe stopped with SubscribeRaw's Close")
		}
		// Nothing else may have come: not the join after Close, nor (late,
		// across a cluster's bus) the message on a channel of no room.
		select {
		case ev := <-raw:
			t.Fatalf("unexpected raw event %q: %s", ev.Target, ev.Payload)
		case <-time.After(200 * time.Millisecond):
		}

		// Service.Close ends raw subscriptions too; later ones fail.
		s.Close()
		if err := msub.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SubscribeMetadataRaw(ctx, func(presence.RawEvent) {}); !errors.Is(err, presence.ErrClosed) {
			t.Fatalf("SubscribeMetadataRaw after Close: %v", err)
		}
	})
}
