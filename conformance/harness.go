package conformance

import (
	"github.com/realtime-message/presence/core"
	"pgregory.net/rapid"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// The ids every property draws from: few, so that operations collide.
var (
	roomIDs  = []string{"r0", "r1"}
	connIDs  = []string{"c0", "c1", "c2"}
	userIDs  = []string{"u0", "u1"}
	chanIDs  = []presence.Channel{{Type: "t", Name: "n0"}, {Type: "t", Name: "n1"}}
	itemKeys = []string{"a", "b", "c"}
	// Two locks per channel, so that enforced locks are checked against
	// every lock of a channel, not only the one a mutation names.
	lockNames = [numLocks]string{"L", "M"}
	lockName  = lockNames[0]
)

const numLocks = 2

// stateKeys are the top-level keys of conn states; stateVals their
// values, as canonical JSON.
var (
	stateKeys = []string{"k0", "k1", "k2"}
	stateVals = []string{`1`, `2`, `"x"`, `{"n":[1,2]}`, `null`, `"☃"`}
	metaVals  = []string{"", "x", "y", "☃", `{"a":1}`}
)

const numKeys = 3 // len(stateKeys) == len(itemKeys)

// harness holds what the properties of one strategy on one target share.
type harness struct {
	enforcedOnce sync.Once
	enforced     bool // see enforcedOK
	pubsubOnce   sync.Once
	pubsubMode   string // see pubsub

	t      testing.TB // the real test: clients and cleanups hang off it
	target Target
	opts   Options
	hbSpec string // heartbeat spec of the services built ("" = default)
	mdSpec string // metadata spec

	mu      sync.Mutex
	clients []backend.Client
}

func newHarness(t testing.TB, target Target, opts Options, hbSpec, mdSpec string) *harness {
	h := &harness{t: t, target: target, opts: opts, hbSpec: hbSpec, mdSpec: mdSpec}
	t.Cleanup(h.close)
	return h
}

// client returns a new client of the target, closed with the harness.
func (h *harness) client() backend.Client {
	h.t.Helper()
	c := h.target.NewClient(h.t)
	if c == nil {
		h.t.Fatal("conformance: Target.NewClient returned nil")
	}
	h.mu.Lock()
	h.clients = append(h.clients, c)
	h.mu.Unlock()
	return c
}

func (h *harness) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.clients {
		c.Close()
	}
	h.clients = nil
}

// prefix returns a fresh key prefix.
func (h *harness) prefix() string {
	if h.target.Prefix != nil {
		return h.target.Prefix()
	}
	var b [6]byte
	rand.Read(b[:])
	return "conformance-" + hex.EncodeToString(b[:])
}

var discard = slog.New(slog.DiscardHandler)

// service builds a Service with the harness's strategies on c, under
// prefix, with clock now and no background reaper.
func (h *harness) service(c backend.Client, prefix string, now func() time.Time) (*presence.Service, error) {
	return h.serviceLocks(c, prefix, now, "")
}

// serviceLocks is service with Config.Locks set to locks.
func (h *harness) serviceLocks(c backend.Client, prefix string, now func() time.Time, locks string) (*presence.Service, error) {
	return h.serviceWith(c, prefix, now, func(cfg *presence.Config) { cfg.Locks = locks })
}

// enforcedOK reports whether the metadata strategy under test runs with
// enforced locks: presence.New refuses a strategy that says it does not
// (strategy.LockEnforcer), and the checks of enforced locks are skipped
// for it, with a log line.
func (h *harness) enforcedOK() bool {
	h.enforcedOnce.Do(func() {
		svc, err := h.serviceLocks(h.client(), h.prefix(), time.Now, presence.LocksEnforced)
		if err == nil {
			svc.Close()
		}
		h.enforced = !errors.Is(err, presence.ErrInvalidArgument)
		if !h.enforced {
			h.t.Logf("conformance: %s does not enforce locks (%v): enforced-lock checks skipped", h.mdSpec, err)
		}
	})
	return h.enforced
}

// serviceWith is service with edit applied to its Config.
func (h *harness) serviceWith(c backend.Client, prefix string, now func() time.Time, edit func(*presence.Config)) (*presence.Service, error) {
	cfg := presence.Config{
		Heartbeat:      h.hbSpec,
		Metadata:       h.mdSpec,
		KeyPrefix:      prefix,
		ReaperInterval: -1,
		Now:            now,
		Logger:         discard,
	}
	if edit != nil {
		edit(&cfg)
	}
	if cfg.PubSub == "" {
		cfg.PubSub = h.pubsub()
	}
	return presence.New(h.withSubscriber(c, cfg.PubSub), cfg)
}

// fresh builds a Service on c under a new key prefix with a fake clock;
// done closes it and deletes every key it wrote.
func (h *harness) fresh(tb rapid.TB, c backend.Client) (svc *presence.Service, clock *fakeClock, done func()) {
	return h.freshLocks(tb, c, "")
}

// freshLocks is fresh with Config.Locks set to locks.
func (h *harness) freshLocks(tb rapid.TB, c backend.Client, locks string) (svc *presence.Service, clock *fakeClock, done func()) {
	prefix := h.prefix()
	clock = newFakeClock(time.Now())
	svc, err := h.serviceLocks(c, prefix, clock.Now, locks)
	if err != nil {
		cleanup(c, prefix)
		tb.Fatalf("presence.New: %v", err)
	}
	return svc, clock, func() {
		svc.Close()
		cleanup(c, prefix)
	}
}

// freshNodes builds n Services on c under a new key prefix, each on its
// own skewed view of one fake clock (no skew until the caller sets one); done closes them and
// deletes every key they wrote.
func (h *harness) freshNodes(tb rapid.TB, c backend.Client, n int) (svcs []*presence.Service, nodes []*skewed, clock *fakeClock, done func()) {
	prefix := h.prefix()
	clock = newFakeClock(time.Now())
	done = func() {
		for _, s := range svcs {
			s.Close()
		}
		cleanup(c, prefix)
	}
	for range n {
		node := &skewed{base: clock}
		svc, err := h.service(c, prefix, node.Now)
		if err != nil {
			done()
			tb.Fatalf("presence.New: %v", err)
		}
		svcs, nodes = append(svcs, svc), append(nodes, node)
	}
	return svcs, nodes, clock, done
}

// ctx returns a context with the per-call deadline.
func (h *harness) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.opts.OpTimeout)
}

// cleanup deletes every key the suite's ids can have created under
// prefix: one DEL per key, in one pipeline (keys of different slots).
func cleanup(c backend.Client, prefix string) error {
	k := core.Keys{Prefix: prefix}
	var cmds []backend.Cmd
	del := func(key string) { cmds = append(cmds, backend.K("DEL", key)) }
	del(k.ActiveRooms())
	del(k.ActiveUsers())
	for _, u := range userIDs {
		del(k.UserIndex(u))
	}
	for _, r := range roomIDs {
		for _, key := range k.RoomKeys(r) {
			del(key)
		}
		for _, c := range connIDs {
			del(k.Conn(r, c))
		}
	}
	for _, ch := range chanIDs {
		del(k.Meta(ch.Type, ch.Name))
		del(k.LockIndex(ch.Type, ch.Name))
		for _, l := range lockNames {
			del(k.Lock(ch.Type, ch.Name, l))
			del(k.Fence(ch.Type, ch.Name, l))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Do(ctx, cmds...)
	if err == nil {
		err = backend.FirstError(r)
	}
	return err
}

// fakeClock is a settable Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(start time.Time) *fakeClock {
	return &fakeClock{now: start.Truncate(time.Millisecond)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Ms() int64 { return c.Now().UnixMilli() }

// SetMs moves the clock to ms, e.g. near the epoch, so that epochs of a
// few digits are as valid as those of today's thirteen.
func (c *fakeClock) SetMs(ms int64) {
	c.mu.Lock()
	c.now = time.UnixMilli(ms)
	c.mu.Unlock()
}

// skewed is a node's view of a shared fakeClock: the nodes of a
// deployment never agree exactly on the time, and only the lookback
// margin keeps the reaper and the gone index correct across them.
type skewed struct {
	base *fakeClock
	skew time.Duration
}

func (s *skewed) Now() time.Time { return s.base.Now().Add(s.skew) }
func (s *skewed) Ms() int64      { return s.Now().UnixMilli() }

// outcome classifies the result of a call.
type outcome uint8

const (
	outOK outcome = iota
	outStale
	outNotFound
	outConflict
	outLocked
	outInvalid
	outAmbiguous // may or may not have taken effect
)

func (o outcome) String() string {
	return [...]string{"ok", "stale", "notfound", "conflict", "locked", "invalid", "?"}[o]
}

// classify maps an error to its outcome. Errors that are none of the
// package's sentinels are ambiguous: a timeout or a broken connection may
// or may not have let the command run. unexpected is set for ambiguous
// errors that are not obviously a timeout or a network failure, which the
// suite reports.
func classify(err error) (o outcome, unexpected bool) {
	switch {
	case err == nil:
		return outOK, false
	case errors.Is(err, presence.ErrStaleEpoch):
		return outStale, false
	case errors.Is(err, presence.ErrConnNotFound):
		return outNotFound, false
	case errors.Is(err, presence.ErrConflict):
		return outConflict, false
	case errors.Is(err, presence.ErrLocked):
		return outLocked, false
	case errors.Is(err, presence.ErrInvalidArgument):
		return outInvalid, false
	}
	return outAmbiguous, !isTransient(err)
}

// isTransient reports timeouts and connection failures.
func isTransient(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNREFUSED):
		return true
	}
	msg := err.Error()
	for _, s := range []string{"i/o timeout", "connection reset", "broken pipe", "use of closed network connection", "LOADING", "TRYAGAIN", "CLUSTERDOWN"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// errorLog keeps the first few unexpected errors of a run.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (l *errorLog) add(what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if len(l.first) < 5 {
		l.first = append(l.first, what+": "+err.Error())
	}
}
