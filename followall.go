package presence

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/backend"
)

// With sharded pub/sub no pattern covers every room's events: a
// subscription to "every room" (Subscribe, SubscribeRaw) follows the
// active-rooms index instead, subscribing each room listed there and
// dropping each room gone from it.

// activeRoomsEvery is how often the index is listed again.
const activeRoomsEvery = time.Second

// joinedGrace keeps a room a join of this Service followed until the
// index has had time to list it.
const joinedGrace = 10 * time.Second

// allRooms is a sharded subscription that follows the active-rooms index.
type allRooms struct {
	s     *Service
	cs    backend.ChannelSubscription
	mu    sync.Mutex           // held while rooms is brought in line with the index or a join
	rooms map[string]time.Time // subscribed → when a join did (zero when the index listed it)
	added atomic.Uint64        // rooms subscribed after the first listing
	ctx   context.Context      // canceled by Close
	stop  context.CancelFunc
	done  chan struct{}
	once  sync.Once
	err   error
}

func (s *Service) followActiveRooms(ctx context.Context, h backend.Handler) (Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	cs, ok := s.client.(backend.ChannelSubscriber)
	if !ok { // unreachable: New checked the mode against the client
		return nil, invalid("Subscribe: %T does not subscribe to channels", s.client)
	}
	bs, err := cs.SubscribeChannels(ctx, true, h)
	if err != nil {
		return nil, fmt.Errorf("presence: subscribe: %w", err)
	}
	a := &allRooms{s: s, cs: bs, rooms: map[string]time.Time{}, done: make(chan struct{})}
	a.ctx, a.stop = context.WithCancel(context.Background())
	if err := a.refresh(ctx, false); err != nil {
		a.stop()
		bs.Close()
		return nil, fmt.Errorf("presence: subscribe: %w", err)
	}
	go a.loop()
	return s.register(a)
}

func (a *allRooms) loop() {
	defer close(a.done)
	t := time.NewTicker(activeRoomsEvery)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		if err := a.refresh(ctx, true); err != nil && a.ctx.Err() == nil {
			a.s.log.Warn("presence: subscribe: listing the active rooms failed", "err", err)
		}
		cancel()
	}
}

// followJoined subscribes the every-room subscriptions of s to room before
// a join through s runs, so that such a subscription misses no event of a
// room first joined through its own Service (Subscribe then Join, the
// common pattern of a tool or a test); rooms joined through other nodes
// wait for the next listing of the index.
func (s *Service) followJoined(ctx context.Context, room string) error {
	if s.pubsub != PubSubSharded {
		return nil
	}
	var all []*allRooms
	s.mu.Lock()
	for sub := range s.subs {
		if a, ok := sub.sub.(*allRooms); ok {
			all = append(all, a)
		}
	}
	s.mu.Unlock()
	for _, a := range all {
		if err := a.follow(ctx, room); err != nil {
			return err
		}
	}
	return nil
}

func (a *allRooms) follow(ctx context.Context, room string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.rooms[room]; ok || a.ctx.Err() != nil {
		return nil
	}
	if err := a.cs.Add(ctx, a.s.keys.RoomEvents(room)); err != nil {
		return err
	}
	a.rooms[room] = time.Now()
	return nil
}

// refresh lists the index and brings the subscription in line with it;
// later says whether rooms added now missed earlier events.
func (a *allRooms) refresh(ctx context.Context, later bool) error {
	seen := map[string]bool{}
	var fresh []string
	err := a.s.eachBatch(ctx, a.s.keys.ActiveRooms(), "subscribe", func(rooms []string) error {
		for _, r := range rooms {
			if checkID("roomId", r, a.s.cfg.MaxIDBytes, "") != nil {
				continue // not written by this library
			}
			seen[r] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for r := range seen {
		if _, ok := a.rooms[r]; !ok {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) > 0 {
		chans := make([]string, len(fresh))
		for i, r := range fresh {
			chans[i] = a.s.keys.RoomEvents(r)
		}
		if err := a.cs.Add(ctx, chans...); err != nil {
			return err
		}
		for _, r := range fresh {
			a.rooms[r] = time.Time{}
		}
		if later {
			a.added.Add(uint64(len(fresh)))
		}
	}
	var gone []string
	for r, joined := range a.rooms {
		// A room a join followed may enter the index after this listing.
		if !seen[r] && time.Since(joined) > joinedGrace {
			gone = append(gone, a.s.keys.RoomEvents(r))
			delete(a.rooms, r)
		}
	}
	if len(gone) > 0 {
		return a.cs.Remove(ctx, gone...)
	}
	return nil
}

func (a *allRooms) Close() error {
	a.once.Do(func() {
		a.stop()
		<-a.done
		a.err = a.cs.Close()
	})
	return a.err
}

func (a *allRooms) Pattern() string { return "" }

func (a *allRooms) Alive() error {
	if st, ok := a.cs.(backend.SubscriptionState); ok {
		return st.Alive()
	}
	return nil
}

// Resubscribed counts the subscription's restorations and the rooms it
// added after its first listing: their earlier events were missed too.
func (a *allRooms) Resubscribed() uint64 {
	n := a.added.Load()
	if r, ok := a.cs.(backend.Resubscriber); ok {
		n += r.Resubscribed()
	}
	return n
}
