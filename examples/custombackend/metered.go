package main

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/goredis"
)

// AdapterName is Metered's name in the backend registry: a Config with
// Backend "metered" (or PRESENCE_BACKEND=metered) makes presence.Open and
// presence.NewClient build a Metered over go-redis, exactly as "rueidis"
// and "goredis" select the built-ins. A real adapter registers itself in
// its own package's init the same way, and its users select it by
// importing that package.
const AdapterName = "metered"

func init() {
	backend.Register(AdapterName, func(ctx context.Context, o backend.OpenOptions) (backend.Client, error) {
		inner, err := goredis.New(ctx, goredis.Options{URL: o.URL, Addrs: o.Addrs, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		return NewMetered(inner), nil
	})
}

// Metered is a user's own backend.Client: a decorator over any other
// client (here one of the library's adapters) that meters what the
// strategies send: round trips, commands by name, and time spent waiting
// for Redis. It changes nothing it forwards, so it must pass the
// conformance suite exactly as the client it wraps does; see
// metered_test.go. Safe for concurrent use.
type Metered struct {
	backend.Client

	mu         sync.Mutex
	roundTrips int
	commands   map[string]int
	waited     time.Duration
}

var _ backend.Client = (*Metered)(nil)

// NewMetered wraps c.
func NewMetered(c backend.Client) *Metered {
	return &Metered{Client: c, commands: map[string]int{}}
}

func (m *Metered) record(start time.Time, cmds ...backend.Cmd) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roundTrips++
	m.waited += time.Since(start)
	for _, c := range cmds {
		m.commands[c.Name]++
	}
}

// Do forwards a pipeline: one round trip however many commands it holds.
func (m *Metered) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	start := time.Now()
	defer m.record(start, cmds...)
	return m.Client.Do(ctx, cmds...)
}

// Watch forwards an optimistic transaction, metering WATCH, each read on
// the transaction's connection, and MULTI/EXEC.
func (m *Metered) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	start := time.Now()
	m.record(start, backend.Cmd{Name: "WATCH"})
	return m.Client.Watch(ctx, keys, func(ctx context.Context, tx backend.Tx) ([]backend.Cmd, error) {
		cmds, err := fn(ctx, meteredTx{tx, m})
		if err == nil && len(cmds) > 0 {
			m.record(time.Now(), append([]backend.Cmd{{Name: "MULTI"}}, append(cmds, backend.Cmd{Name: "EXEC"})...)...)
		}
		return cmds, err
	})
}

// Publish forwards a publish.
func (m *Metered) Publish(ctx context.Context, channel, payload string) error {
	start := time.Now()
	defer m.record(start, backend.Cmd{Name: "PUBLISH"})
	return m.Client.Publish(ctx, channel, payload)
}

type meteredTx struct {
	backend.Tx
	m *Metered
}

func (t meteredTx) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	start := time.Now()
	defer t.m.record(start, cmds...)
	return t.Tx.Do(ctx, cmds...)
}

// Meter is what a Metered client counted.
type Meter struct {
	RoundTrips int
	Commands   map[string]int
	Waited     time.Duration
}

// Take returns the counts so far and starts counting afresh.
func (m *Metered) Take() Meter {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := Meter{RoundTrips: m.roundTrips, Commands: m.commands, Waited: m.waited}
	m.roundTrips, m.commands, m.waited = 0, map[string]int{}, 0
	return out
}

// Names returns the command names counted, most frequent first.
func (s Meter) Names() []string {
	names := make([]string, 0, len(s.Commands))
	for n := range s.Commands {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if s.Commands[names[i]] != s.Commands[names[j]] {
			return s.Commands[names[i]] > s.Commands[names[j]]
		}
		return names[i] < names[j]
	})
	return names
}
