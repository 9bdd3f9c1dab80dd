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

// allRooms is a sharded subscription that follows the active-rooms index.
type allRooms struct {
	s     *Service
	cs    backend.ChannelSubscription
	rooms map[string]bool // subscribed; only the refresh loop touches it
	added atomic.Uint64   // rooms subscribed after the first listing
	ctx   context.Context // canceled by Close
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
	a := &allRooms{s: s, cs: bs, rooms: map[string]bool{}, done: make(chan struct{})}
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
			if !a.rooms[r] {
				fresh = append(fresh, r)
			}
		}
		return nil
	})
	if err != nil {
		return err
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
			a.rooms[r] = true
		}
		if later {
			a.added.Add(uint64(len(fresh)))
		}
	}
	var gone []string
	for r := range a.rooms {
		if !seen[r] {
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
