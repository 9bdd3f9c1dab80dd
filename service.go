// Package presence keeps realtime presence and channel metadata in Redis:
// which connections of which users are in which room, with per-connection
// JSON state, heartbeats, TTL expiry, a reaper, and epoch fencing so a stale
// connection never overwrites a newer one; beside it, per-channel metadata
// with revisions, compare-and-set and named locks. Every change is
// published over Redis pub/sub so many server nodes stay in sync.
//
// How heartbeats and metadata mutations reach Redis is a strategy chosen
// by name (see package strategy); the Redis client is a backend.Client
// (rueidis or go-redis adapters, or your own).
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/strategy"
)

// Service is the presence and metadata API. It is safe for concurrent use
// by many goroutines. The reaper starts with the Service (unless
// Config.ReaperInterval is negative) and stops with Close.
type Service struct {
	cfg     Config
	client  backend.Client
	scripts *backend.Scripts
	keys    core.Keys
	hb      strategy.Heartbeat
	meta    strategy.Metadata
	log     *slog.Logger
	ctr     counters

	closed  atomic.Bool
	stop    chan struct{}
	bg      sync.WaitGroup
	mu      sync.Mutex
	subs    map[*subscription]struct{}
	onClose []func()
	notify  *notifyReaper // nil unless Config.Reaper is notify
	pubsub  string        // Config.PubSub resolved: pattern, channels or sharded
	owners  ownerCache    // users.go
}

// New builds a Service on client with cfg's strategies and limits
// (Config.Backend, RedisURL and Addrs are ignored). The caller keeps
// ownership of client: Close does not close it.
func New(client backend.Client, cfg Config) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if client == nil {
		return nil, invalid("New: nil backend client")
	}
	mode, err := resolvePubSub(client, cfg.PubSub, cfg.Logger)
	if err != nil {
		return nil, err
	}
	s := &Service{
		pubsub:  mode,
		cfg:     cfg,
		client:  client,
		scripts: backend.NewScripts(client),
		keys:    core.Keys{Prefix: cfg.KeyPrefix},
		log:     cfg.Logger,
		stop:    make(chan struct{}),
		subs:    map[*subscription]struct{}{},
	}
	env := strategy.Env{
		Client:     client,
		Scripts:    s.scripts,
		Keys:       s.keys,
		TTL:        cfg.TTL,
		Logger:     cfg.Logger,
		Hooks:      s.ctr.strategyHooks(cfg.Hooks.Hooks),
		Publish:    s.publishCmd(),
		MetaEvents: s.metaEventsChannel,
	}
	if s.hb, err = strategy.NewHeartbeat(cfg.Heartbeat, env); err != nil {
		return nil, fmt.Errorf("presence: heartbeat strategy: %w", err)
	}
	metaEnv, err := metadataEnv(env, cfg)
	if err != nil {
		s.hb.Close()
		return nil, err
	}
	if s.meta, err = strategy.NewMetadata(cfg.Metadata, metaEnv); err != nil {
		s.hb.Close()
		return nil, fmt.Errorf("presence: metadata strategy: %w", err)
	}
	if e, ok := s.meta.(strategy.LockEnforcer); ok && cfg.Locks == LocksEnforced && !e.EnforcesLocks() {
		s.hb.Close()
		s.meta.Close()
		return nil, invalid("config: the %q metadata strategy does not enforce locks; use lua with enforced locks", cfg.Metadata)
	}
	switch {
	case cfg.ReaperInterval <= 0:
	case cfg.Reaper == ReaperNotify:
		s.startNotifyReaper()
	default:
		s.bg.Add(1)
		go s.reapLoop()
	}
	return s, nil
}

// Config returns the configuration in effect, defaults applied.
func (s *Service) Config() Config { return s.cfg }

// PubSub returns how this node's events travel: PubSubPattern,
// PubSubChannels or PubSubSharded (Config.PubSub with auto resolved).
func (s *Service) PubSub() string { return s.pubsub }

// publishCmd is the command room and user events are published with:
// SPUBLISH in sharded mode, where each room's channel lives on its slot's
// shard; PUBLISH otherwise.
func (s *Service) publishCmd() string {
	if s.pubsub == PubSubSharded {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// metaEventsChannel is the channel of channel (typ, name)'s metadata
// events. Pattern mode keeps the channel's own (its pattern covers every
// channel); channels and sharded modes use the room's, so a node that
// follows room name hears its metadata with one more SUBSCRIBE.
func (s *Service) metaEventsChannel(typ, name string) string {
	if s.pubsub == PubSubPattern {
		return s.keys.MetaEvents(typ, name)
	}
	return s.keys.RoomMetaEvents(name)
}

// MetadataEventsChannel is the pub/sub channel this node publishes ch's
// metadata events on (classic PUBLISH in every mode): Keys.MetaEvents in
// pattern mode, Keys.RoomMetaEvents(ch.Name) otherwise.
func (s *Service) MetadataEventsChannel(ch Channel) string {
	return s.metaEventsChannel(ch.Type, ch.Name)
}

// Client returns the backend the service runs on.
func (s *Service) Client() backend.Client { return s.client }

// Keys returns the key builder in effect.
func (s *Service) Keys() core.Keys { return s.keys }

// Flush sends heartbeats a batching strategy holds and waits for them; a
// graceful shutdown calls it before Close. Other strategies hold nothing.
func (s *Service) Flush(ctx context.Context) error {
	if f, ok := s.hb.(interface{ Flush(context.Context) error }); ok {
		return f.Flush(ctx)
	}
	return nil
}

// Close stops the reaper, fails heartbeats still buffered with ErrClosed,
// ends subscriptions (waiting for their handlers), and releases what Open
// created. Idempotent; afterwards every method returns ErrClosed.
func (s *Service) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	s.bg.Wait()
	errs := []error{s.hb.Close(), s.meta.Close()}
	s.mu.Lock()
	subs := make([]*subscription, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		errs = append(errs, sub.Close())
	}
	for i := len(s.onClose) - 1; i >= 0; i-- {
		s.onClose[i]()
	}
	return errors.Join(errs...)
}

func (s *Service) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (s *Service) nowMs() int64 { return s.cfg.Now().UnixMilli() }

func (s *Service) checkRoomConn(room, conn string) error {
	if err := checkID("roomId", room, s.cfg.MaxIDBytes, ""); err != nil {
		return err
	}
	return checkID("connId", conn, s.cfg.MaxIDBytes, "")
}

// withTimeoutIfNone gives background work a deadline when ctx has none, so
// nothing waits forever on a dead Redis.
func withTimeoutIfNone(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
