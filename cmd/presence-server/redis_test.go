package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/realtime-message/presence/backend"
)

// failingClient answers every Do with the error or replies it holds.
type failingClient struct {
	backend.Client
	err     error
	replies []backend.Reply
}

func (f *failingClient) Do(context.Context, ...backend.Cmd) ([]backend.Reply, error) {
	return f.replies, f.err
}

func TestRedisErrorKinds(t *testing.T) {
	counts := map[string]int{}
	count := func(kind string) { counts[kind]++ }
	for _, c := range []struct {
		err     error
		replies []backend.Reply
		want    string // "" for not counted
	}{
		{err: fmt.Errorf("call: %w", context.DeadlineExceeded), want: errTimeout},
		{err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, want: errConnection},
		{err: fmt.Errorf("read: %w", syscall.ECONNRESET), want: errConnection},
		{err: backend.ErrClosed, want: errConnection},
		{err: errors.New("strange"), want: errOther},
		{err: context.Canceled},
		{err: backend.ErrTxAborted},
		{replies: []backend.Reply{{Kind: backend.KindError, Err: errors.New("WRONGTYPE Operation against a key")}}, want: errServer},
		{replies: []backend.Reply{{Kind: backend.KindError, Err: errors.New("NOSCRIPT No matching script")}}},
	} {
		clear(counts)
		o := observeClient(&failingClient{err: c.err, replies: c.replies}, count)
		o.Do(context.Background(), backend.Cmd{Name: "GET"})
		backend.DoFlat(context.Background(), o, backend.Cmd{Name: "GET"})
		want := map[string]int{}
		if c.want != "" {
			want[c.want] = 2 // Do and DoFlat
		}
		if fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("%v %v: counted %v, want %v", c.err, c.replies, counts, want)
		}
	}
}

// channelsClient is a client with backend.ChannelSubscriber whose
// subscriptions hand each Add's channels a message at once.
type channelsClient struct {
	backend.Client
}

func (channelsClient) SubscribeChannels(_ context.Context, _ bool, h backend.Handler) (backend.ChannelSubscription, error) {
	return &echoSub{h: h}, nil
}

type echoSub struct {
	backend.Subscription
	h backend.Handler
}

func (s *echoSub) Add(_ context.Context, channels ...string) error {
	for _, ch := range channels {
		s.h(backend.Message{Channel: ch, Payload: "{}"})
	}
	return nil
}
func (s *echoSub) Remove(context.Context, ...string) error { return nil }
func (s *echoSub) Channels() int                           { return 0 }
func (s *echoSub) Close() error                            { return nil }

// The wrapper keeps backend.ChannelSubscriber visible exactly when the
// client has it (the service picks its pub/sub mode by it), and counts
// the messages of channel subscriptions by kind.
func TestObservedChannels(t *testing.T) {
	if _, ok := observeClient(&failingClient{}, func(string) {}).(backend.ChannelSubscriber); ok {
		t.Fatal("a client without ChannelSubscriber gained one")
	}
	oc := observeClient(channelsClient{}, func(string) {})
	cs, ok := oc.(backend.ChannelSubscriber)
	if !ok {
		t.Fatal("ChannelSubscriber hidden")
	}
	counts := map[string]int{}
	oc.(interface{ observed() *observedClient }).observed().received = func(kind string) { counts[kind]++ }
	delivered := 0
	sub, err := cs.SubscribeChannels(context.Background(), true, func(backend.Message) { delivered++ })
	if err != nil {
		t.Fatal(err)
	}
	sub.Add(context.Background(), "prs:{room:a}:events", "prs:{room:a}:meta_events", "prs:{user:u}:events", "prs:{chan:t:a:b}:meta_events", "__keyevent@0__:expired")
	if want := map[string]int{msgPresence: 1, msgMetadata: 2, msgUser: 1}; fmt.Sprint(counts) != fmt.Sprint(want) || delivered != 5 {
		t.Fatalf("counted %v, delivered %d; want %v and 5", counts, delivered, want)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMessageKind(t *testing.T) {
	for ch, want := range map[string]string{
		"prs:{room:a:b}:events":          msgPresence,
		"my{pfx}:{room:r}:events":        msgPresence,
		"prs:{room:r}:meta_events":       msgMetadata,
		"prs:{chan:doc:r:x}:meta_events": msgMetadata,
		"prs:{user:u}:events":            msgUser,
		"prs:{user:u}:meta_events":       "",
		"prs:{room:r}:conns":             "",
		"prs:{node:n}:events":            "",
		"__keyevent@0__:expired":         "",
	} {
		if got := messageKind(ch); got != want {
			t.Errorf("messageKind(%q) = %q, want %q", ch, got, want)
		}
	}
}
