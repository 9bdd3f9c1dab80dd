// Package chandouble is a test double of backend.ChannelSubscriber for
// clients that lack it, built on PSubscribe: one pattern subscription per
// exact channel. Classic pub/sub only.
package chandouble

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/realtime-message/presence/backend"
)

// chanDouble gives a client without backend.ChannelSubscriber one, built
// on its PSubscribe: one pattern subscription per exact channel, with the
// glob characters escaped. PSUBSCRIBE never receives SPUBLISH, so a
// sharded subscription is refused.
type chanDouble struct {
	backend.Client
	mu   sync.Mutex
	live map[string]int // channel → subscriptions of it across this client's ChannelSubscriptions
}

// Wrap returns c itself when it subscribes to channels, else c wrapped in
// the double.
func Wrap(c backend.Client) backend.Client {
	if _, ok := c.(backend.ChannelSubscriber); ok {
		return c
	}
	return &chanDouble{Client: c, live: map[string]int{}}
}

func (d *chanDouble) SubscribeChannels(ctx context.Context, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	if sharded {
		return nil, errors.New("chanDouble: no sharded pub/sub")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &doubleSub{d: d, h: h, subs: map[string]backend.Subscription{}}, nil
}

// Subscribed returns how many ChannelSubscriptions of c have channel,
// when c is the double.
func Subscribed(c backend.Client, channel string) (int, bool) {
	d, ok := c.(*chanDouble)
	if !ok {
		return 0, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live[channel], true
}

var globEscaper = strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)

type doubleSub struct {
	d      *chanDouble
	h      backend.Handler
	mu     sync.Mutex
	subs   map[string]backend.Subscription
	closed bool
	resubs uint64 // of removed channels' subscriptions
}

func (s *doubleSub) Add(ctx context.Context, channels ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return backend.ErrClosed
	}
	for _, ch := range channels {
		if _, ok := s.subs[ch]; ok {
			continue
		}
		sub, err := s.d.Client.PSubscribe(ctx, globEscaper.Replace(ch), func(m backend.Message) {
			m.Pattern = ""
			s.h(m)
		})
		if err != nil {
			return err
		}
		s.subs[ch] = sub
		s.d.mu.Lock()
		s.d.live[ch]++
		s.d.mu.Unlock()
	}
	return nil
}

func (s *doubleSub) Remove(_ context.Context, channels ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range channels {
		s.drop(ch)
	}
	return nil
}

// drop closes ch's subscription; s.mu is held.
func (s *doubleSub) drop(ch string) {
	sub, ok := s.subs[ch]
	if !ok {
		return
	}
	if r, ok := sub.(backend.Resubscriber); ok {
		s.resubs += r.Resubscribed()
	}
	sub.Close()
	delete(s.subs, ch)
	s.d.mu.Lock()
	s.d.live[ch]--
	s.d.mu.Unlock()
}

func (s *doubleSub) Channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func (s *doubleSub) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ch := range s.subs {
		s.drop(ch)
	}
	return nil
}

func (s *doubleSub) Pattern() string { return "" }

func (s *doubleSub) Alive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs {
		if st, ok := sub.(backend.SubscriptionState); ok {
			if err := st.Alive(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *doubleSub) Resubscribed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.resubs
	for _, sub := range s.subs {
		if r, ok := sub.(backend.Resubscriber); ok {
			n += r.Resubscribed()
		}
	}
	return n
}
