package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/realtime-message/presence/backend"
)

// Kinds of Redis call errors, the label of presence_redis_errors_total.
const (
	errTimeout    = "timeout"    // the call's deadline passed
	errConnection = "connection" // dial, reset, EOF, closed client
	errServer     = "server"     // Redis answered with an error reply
	errOther      = "other"
)

// observedClient counts a backend.Client's failed calls by kind and the
// pub/sub messages it receives, and keeps its subscriptions, whose
// reconnects the metrics read. The service cannot tell failures apart
// itself: to it, each is a failed event.
type observedClient struct {
	backend.Client
	failed   func(kind string)
	received func(kind string) // nil: not counted; set before any subscription

	mu   sync.Mutex
	subs map[backend.Subscription]struct{}
	// resubsClosed keeps the reconnects of closed subscriptions, so the
	// counter never goes down.
	resubsClosed uint64
}

// The health check addresses each master through backend.MasterRunner,
// and the service picks its pub/sub mode from backend.MasterRunner and
// backend.ChannelSubscriber, so the wrapper must hide neither.
func observeClient(c backend.Client, failed func(kind string)) backend.Client {
	o := &observedClient{Client: c, failed: failed, subs: map[backend.Subscription]struct{}{}}
	mr, masters := c.(backend.MasterRunner)
	cs, channels := c.(backend.ChannelSubscriber)
	switch {
	case masters && channels:
		return &observedMastersChannels{&observedMasters{o, mr}, cs}
	case masters:
		return &observedMasters{o, mr}
	case channels:
		return &observedChannels{o, cs}
	}
	return o
}

// observed returns the observedClient under any of the wrappers.
func (o *observedClient) observed() *observedClient { return o }

type observedMasters struct {
	*observedClient
	mr backend.MasterRunner
}

type observedChannels struct {
	*observedClient
	cs backend.ChannelSubscriber
}

func (o *observedChannels) SubscribeChannels(ctx context.Context, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	return o.subscribeChannels(ctx, o.cs, sharded, h)
}

type observedMastersChannels struct {
	*observedMasters
	cs backend.ChannelSubscriber
}

func (o *observedMastersChannels) SubscribeChannels(ctx context.Context, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	return o.subscribeChannels(ctx, o.cs, sharded, h)
}

func (o *observedMasters) Cluster() bool { return o.mr.Cluster() }

// PSubscribeEachMaster keeps backend.NodeSubscriber, which the notify
// reaper needs, visible through the wrapper: hidden, the reaper would
// always sweep (both adapters implement it with MasterRunner).
func (o *observedMasters) PSubscribeEachMaster(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	ns, ok := o.Client.(backend.NodeSubscriber)
	if !ok {
		return nil, fmt.Errorf("the %T backend cannot subscribe on each master (backend.NodeSubscriber)", o.Client)
	}
	return ns.PSubscribeEachMaster(ctx, pattern, h)
}

func (o *observedMasters) EachMaster(ctx context.Context, cmds []backend.Cmd, fn func(string, []backend.Reply, error)) error {
	return o.mr.EachMaster(ctx, cmds, fn)
}

// errorKind classifies a failed call; "" for a caller that gave up, which
// says nothing about Redis.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed), errors.Is(err, backend.ErrClosed):
		return errConnection
	}
	return errOther
}

func (o *observedClient) callFailed(err error) {
	if err == nil || errors.Is(err, backend.ErrTxAborted) {
		return
	}
	if k := errorKind(err); k != "" {
		o.failed(k)
	}
}

// repliesFailed counts error replies. NOSCRIPT is not one: the service
// resends the script, and presence_script_reloads_total counts that.
func (o *observedClient) repliesFailed(rs []backend.Reply) {
	for _, r := range rs {
		if r.Err != nil && !strings.HasPrefix(r.Err.Error(), "NOSCRIPT") {
			o.failed(errServer)
		}
	}
}

func (o *observedClient) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	rs, err := o.Client.Do(ctx, cmds...)
	o.callFailed(err)
	o.repliesFailed(rs)
	return rs, err
}

// DoFlat keeps the adapter's allocation-free path for single commands.
func (o *observedClient) DoFlat(ctx context.Context, cmd backend.Cmd) (backend.FlatReply, error) {
	r, err := backend.DoFlat(ctx, o.Client, cmd)
	o.callFailed(err)
	if err == nil {
		o.repliesFailed([]backend.Reply{r.Reply})
	}
	return r, err
}

func (o *observedClient) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	rs, err := o.Client.Watch(ctx, keys, fn)
	o.callFailed(err)
	o.repliesFailed(rs)
	return rs, err
}

func (o *observedClient) Publish(ctx context.Context, channel, payload string) error {
	err := o.Client.Publish(ctx, channel, payload)
	o.callFailed(err)
	return err
}

func (o *observedClient) PSubscribe(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	s, err := o.Client.PSubscribe(ctx, pattern, o.counted(h))
	o.callFailed(err)
	if err != nil {
		return nil, err
	}
	o.keep(s)
	return &observedSub{Subscription: s, o: o}, nil
}

func (o *observedClient) subscribeChannels(ctx context.Context, cs backend.ChannelSubscriber, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	s, err := cs.SubscribeChannels(ctx, sharded, o.counted(h))
	o.callFailed(err)
	if err != nil {
		return nil, err
	}
	o.keep(s)
	return &observedChannelSub{ChannelSubscription: s, observedSub: observedSub{Subscription: s, o: o}}, nil
}

// Kinds of pub/sub messages, the label of
// presence_pubsub_messages_received_total.
const (
	msgPresence = "presence"
	msgMetadata = "metadata"
	msgUser     = "user"
)

// messageKind tells the kind of an event by its channel's hash tag, the
// last '{' of the name (ids cannot contain braces); "" for other
// channels.
func messageKind(channel string) string {
	i := strings.LastIndexByte(channel, '{')
	if i < 0 {
		return ""
	}
	tag, suffix := channel[i:], ""
	if j := strings.IndexByte(tag, '}'); j >= 0 {
		tag, suffix = tag[:j], tag[j+1:]
	}
	switch {
	case suffix == ":meta_events" && (strings.HasPrefix(tag, "{room:") || strings.HasPrefix(tag, "{chan:")):
		return msgMetadata
	case suffix == ":events" && strings.HasPrefix(tag, "{room:"):
		return msgPresence
	case suffix == ":events" && strings.HasPrefix(tag, "{user:"):
		return msgUser
	}
	return ""
}

// counted counts h's messages by kind.
func (o *observedClient) counted(h backend.Handler) backend.Handler {
	if o.received == nil || h == nil {
		return h
	}
	return func(m backend.Message) {
		if k := messageKind(m.Channel); k != "" {
			o.received(k)
		}
		h(m)
	}
}

func (o *observedClient) keep(s backend.Subscription) {
	o.mu.Lock()
	o.subs[s] = struct{}{}
	o.mu.Unlock()
}

// resubscribes sums the reconnects of every subscription made through o.
func (o *observedClient) resubscribes() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.resubsClosed
	for s := range o.subs {
		if r, ok := s.(backend.Resubscriber); ok {
			n += r.Resubscribed()
		}
	}
	return n
}

// observedSub forwards what the service's health check asks of a
// subscription.
type observedSub struct {
	backend.Subscription
	o *observedClient
}

func (s *observedSub) Close() error {
	err := s.Subscription.Close()
	s.o.mu.Lock()
	if _, ok := s.o.subs[s.Subscription]; ok {
		delete(s.o.subs, s.Subscription)
		if r, ok := s.Subscription.(backend.Resubscriber); ok {
			s.o.resubsClosed += r.Resubscribed()
		}
	}
	s.o.mu.Unlock()
	return err
}

func (s *observedSub) Pattern() string {
	if p, ok := s.Subscription.(backend.SubscriptionState); ok {
		return p.Pattern()
	}
	return ""
}

func (s *observedSub) Alive() error {
	if a, ok := s.Subscription.(backend.SubscriptionState); ok {
		return a.Alive()
	}
	return nil
}

// observedChannelSub is observedSub for a channel subscription.
type observedChannelSub struct {
	backend.ChannelSubscription
	observedSub
}

func (s *observedChannelSub) Close() error         { return s.observedSub.Close() }
func (s *observedChannelSub) Pattern() string      { return "" }
func (s *observedChannelSub) Alive() error         { return s.observedSub.Alive() }
func (s *observedChannelSub) Resubscribed() uint64 { return s.observedSub.Resubscribed() }

func (s *observedSub) Resubscribed() uint64 {
	if r, ok := s.Subscription.(backend.Resubscriber); ok {
		return r.Resubscribed()
	}
	return 0
}

var (
	_ backend.MasterRunner   = (*observedMasters)(nil)
	_ backend.NodeSubscriber = (*observedMasters)(nil)
)
