package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/counting"
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/embedded"
)

var metaSpecs = []string{"lua", "watch?retries=5"}

// quiet drops the logs of tests that make retries on purpose.
var quiet = slog.New(slog.DiscardHandler)

// logCounter is a slog.Handler that counts records by level and message.
type logCounter struct {
	mu   sync.Mutex
	msgs []slog.Record
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCounter) WithGroup(string) slog.Handler            { return l }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r)
	l.mu.Unlock()
	return nil
}

// count returns the records at level whose message starts with prefix.
func (l *logCounter) count(level slog.Level, prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.msgs {
		if r.Level == level && strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

// forEachMetaStrategy runs fn per backend × server × metadata strategy.
func forEachMetaStrategy(t *testing.T, fn func(t *testing.T, tg target, spec string)) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, spec := range metaSpecs {
			name, _, _ := strings.Cut(spec, "?")
			t.Run(name, func(t *testing.T) { fn(t, tg, spec) })
		}
	})
}

// metaEnv is a Service with a metadata strategy, its clock, attempt
// counter and event log.
type metaEnv struct {
	s        *presence.Service
	clk      *fakeClock
	attempts atomic.Int64
	events   *metaLog
}

func newMetaEnv(t *testing.T, tg target, spec string) *metaEnv {
	t.Helper()
	e := &metaEnv{clk: newFakeClock()}
	cfg := presence.Config{Metadata: spec, Now: e.clk.Now, Logger: quiet}
	cfg.Hooks.MetadataAttempt = func() { e.attempts.Add(1) }
	e.s = newService(t, tg.connect(t), cfg)
	e.events = subscribeMeta(t, e.s)
	return e
}

// metaLog collects metadata events.
type metaLog struct {
	mu  sync.Mutex
	evs []presence.MetadataEvent
	ch  chan struct{}
}

func subscribeMeta(t *testing.T, s *presence.Service) *metaLog {
	t.Helper()
	l := &metaLog{ch: make(chan struct{}, 1)}
	sub, err := s.SubscribeMetadata(ctxT(t), func(e presence.MetadataEvent) {
		l.mu.Lock()
		l.evs = append(l.evs, e)
		l.mu.Unlock()
		select {
		case l.ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return l
}

// until waits for an event of ch with majorRevision major (a successful
// mutation the test made last, as a barrier: events of one channel arrive
// in order) and returns every event of ch so far.
func (l *metaLog) until(t *testing.T, ch presence.Channel, major int64) []presence.MetadataEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		evs := l.of(ch)
		for _, e := range evs {
			if e.MajorRevision == major {
				return evs
			}
		}
		select {
		case <-l.ch:
		case <-deadline:
			t.Fatalf("no event with majorRevision %d for %v; got %+v", major, ch, evs)
		}
	}
}

func (l *metaLog) of(ch presence.Channel) []presence.MetadataEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []presence.MetadataEvent
	for _, e := range l.evs {
		if e.ChannelType == ch.Type && e.ChannelName == ch.Name {
			out = append(out, e)
		}
	}
	return out
}

func mustGet(t *testing.T, s *presence.Service, ch presence.Channel) *presence.MetadataResponse {
	t.Helper()
	r, err := s.GetMetadata(ctxT(t), ch)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// metaResult is a mutation's result: res(s.SetMetadata(...)).must(t).
type metaResult struct {
	r   *presence.MetadataResponse
	err error
}

func res(r *presence.MetadataResponse, err error) metaResult { return metaResult{r, err} }

func (m metaResult) must(t *testing.T) *presence.MetadataResponse {
	t.Helper()
	if m.err != nil {
		t.Fatal(m.err)
	}
	return m.r
}

// entries is a response's metadata as "key=value@revision" strings, sorted.
func entries(r *presence.MetadataResponse) []string {
	var out []string
	for k, e := range r.Metadata {
		out = append(out, fmt.Sprintf("%s=%s@%d", k, e.Value, e.Revision))
	}
	slices.Sort(out)
	return out
}

func eventItems(e presence.MetadataEvent) []string {
	var out []string
	for _, it := range e.Items {
		out = append(out, fmt.Sprintf("%s=%s@%d", it.Key, it.Value, it.Revision))
	}
	return out
}

var chanA = presence.Channel{Type: "room", Name: "lobby:1"}

func TestMetadataGetEmptyChannel(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		r := mustGet(t, e.s, chanA)
		if r.MajorRevision != 0 || r.TotalCount != 0 || r.Metadata == nil || len(r.Metadata) != 0 ||
			r.ChannelType != "room" || r.ChannelName != "lobby:1" || r.Timestamp != e.clk.Now().UnixMilli() {
			t.Fatalf("empty channel: %+v", r)
		}
	})
}

func TestMetadataSetReplacesRecord(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		r := res(e.s.SetMetadata(ctx, chanA, []presence.Item{
			{Key: "a", Value: "1"},
			{Key: "b", Value: "2", Revision: presence.Rev(0)},
			{Key: "c", Value: "3", Revision: presence.Rev(7)},
			{Key: "d", Value: "4", Revision: presence.Rev(-3)},
		}, presence.MetadataOptions{})).must(t)
		if want := []string{"a=1@1", "b=2@1", "c=3@7", "d=4@1"}; !slices.Equal(entries(r), want) || r.MajorRevision != 1 || r.TotalCount != 4 {
			t.Fatalf("first set: %v major %d count %d", entries(r), r.MajorRevision, r.TotalCount)
		}
		r = res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "x", Value: "9"}}, presence.MetadataOptions{})).must(t)
		if !slices.Equal(entries(r), []string{"x=9@1"}) || r.MajorRevision != 2 {
			t.Fatalf("second set: %v major %d", entries(r), r.MajorRevision)
		}
		if g := mustGet(t, e.s, chanA); !reflect.DeepEqual(g.Metadata, r.Metadata) || g.MajorRevision != 2 {
			t.Fatalf("get after set: %+v, set returned %+v", g, r)
		}
		r = res(e.s.SetMetadata(ctx, chanA, nil, presence.MetadataOptions{})).must(t)
		if len(r.Metadata) != 0 || r.MajorRevision != 3 {
			t.Fatalf("empty set: %+v", r)
		}
		evs := e.events.until(t, chanA, 3)
		if len(evs) != 3 || evs[0].Operation != "set" || evs[2].Items == nil || len(evs[2].Items) != 0 ||
			!slices.Equal(eventItems(evs[0]), []string{"a=1@1", "b=2@1", "c=3@7", "d=4@1"}) ||
			!slices.Equal(eventItems(evs[1]), []string{"x=9@1"}) {
			t.Fatalf("events %+v", evs)
		}
		for i, ev := range evs {
			if ev.MajorRevision != int64(i+1) || ev.Timestamp != e.clk.Now().UnixMilli() || ev.AuthorUID != "" {
				t.Fatalf("event %d: %+v", i, ev)
			}
		}
	})
}

func TestMetadataUpdateRules(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		// A channel with no metadata cannot be updated.
		_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "x"}}, presence.MetadataOptions{})
		if !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("update of empty channel: %v", err)
		}
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}, {Key: "b", Value: "2", Revision: presence.Rev(5)}},
			presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "alice"})).must(t)
		stamped := mustGet(t, e.s, chanA).Metadata["a"]

		// Unknown key: ErrInvalidArgument, nothing written (a known key in
		// the same request included).
		_, err = e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "z"}, {Key: "nope", Value: "x"}}, presence.MetadataOptions{})
		if !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("unknown key: %v", err)
		}
		// Revision mismatch: ErrConflict, nothing written.
		_, err = e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "z"}, {Key: "b", Value: "x", Revision: presence.Rev(4)}}, presence.MetadataOptions{})
		if !errors.Is(err, presence.ErrConflict) {
			t.Fatalf("revision mismatch: %v", err)
		}
		if g := mustGet(t, e.s, chanA); !slices.Equal(entries(g), []string{"a=1@1", "b=2@5"}) || g.MajorRevision != 1 {
			t.Fatalf("a refused update wrote: %v major %d", entries(g), g.MajorRevision)
		}

		// Matching revision (and unchecked ones): revision = old + 1;
		// updated and author stay when not re-stamped.
		e.clk.Advance(time.Minute)
		r := res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "10"}, {Key: "b", Value: "20", Revision: presence.Rev(5)}},
			presence.MetadataOptions{})).must(t)
		if !slices.Equal(entries(r), []string{"a=10@2", "b=20@6"}) || r.MajorRevision != 2 {
			t.Fatalf("update: %v major %d", entries(r), r.MajorRevision)
		}
		if a := r.Metadata["a"]; a.Updated != stamped.Updated || a.AuthorUID != "alice" {
			t.Fatalf("update without stamps changed updated/author: %+v, was %+v", a, stamped)
		}
		// Re-stamping replaces them, on the written items only.
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}},
			presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "alice"})).must(t)
		e.clk.Advance(time.Second)
		r = res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "x"}},
			presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "bob"})).must(t)
		want := core.FormatMetaTime(e.clk.Now().UnixMilli())
		if a, b := r.Metadata["a"], r.Metadata["b"]; a.Updated != want || a.AuthorUID != "bob" || b.AuthorUID != "alice" || b.Updated == want {
			t.Fatalf("re-stamp: a %+v b %+v (now %s)", a, b, want)
		}
		evs := e.events.until(t, chanA, 4)
		if len(evs) != 4 || evs[1].Operation != "update" || !slices.Equal(eventItems(evs[1]), []string{"a=10@2", "b=20@6"}) ||
			evs[1].AuthorUID != "" || evs[3].AuthorUID != "bob" || !slices.Equal(eventItems(evs[3]), []string{"a=x@2"}) {
			t.Fatalf("events %+v", evs)
		}
	})
}

func TestMetadataStamps(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		e.clk.Advance(123 * time.Millisecond)
		r := res(e.s.SetMetadata(ctxT(t), chanA, []presence.Item{{Key: "k", Value: "v"}},
			presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "ü-ser"})).must(t)
		got := r.Metadata["k"]
		want := e.clk.Now().UTC().Format("2006-01-02T15:04:05.000Z")
		if got.Updated != want || !strings.HasSuffix(want, ".123Z") || got.AuthorUID != "ü-ser" {
			t.Fatalf("stamps %+v, want updated %s", got, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, got.Updated); err != nil {
			t.Fatal(err)
		}
		// Without stamps, a set stores none.
		r = res(e.s.SetMetadata(ctxT(t), chanA, []presence.Item{{Key: "k", Value: "v"}}, presence.MetadataOptions{Actor: "ü-ser"})).must(t)
		if k := r.Metadata["k"]; k.Updated != "" || k.AuthorUID != "" {
			t.Fatalf("unstamped set kept stamps: %+v", k)
		}
		evs := e.events.until(t, chanA, 2)
		if evs[0].AuthorUID != "ü-ser" || evs[1].AuthorUID != "" {
			t.Fatalf("event authors: %+v", evs)
		}
	})
}

func TestMetadataRemove(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "c", Value: "3", Revision: presence.Rev(4)}},
			presence.MetadataOptions{AddTimestamp: true})).must(t)
		// Named keys; unknown ones are ignored.
		r := res(e.s.RemoveMetadata(ctx, chanA, []string{"zz", "b"}, presence.MetadataOptions{})).must(t)
		if !slices.Equal(entries(r), []string{"a=1@1", "c=3@4"}) || r.MajorRevision != 2 || r.TotalCount != 2 {
			t.Fatalf("remove b: %v major %d", entries(r), r.MajorRevision)
		}
		// Nothing that exists: current record, no bump, no event.
		r = res(e.s.RemoveMetadata(ctx, chanA, []string{"b", "zz"}, presence.MetadataOptions{})).must(t)
		if !slices.Equal(entries(r), []string{"a=1@1", "c=3@4"}) || r.MajorRevision != 2 || r.Metadata["a"].Updated == "" {
			t.Fatalf("remove of nothing: %+v", r)
		}
		// All.
		r = res(e.s.RemoveMetadata(ctx, chanA, nil, presence.MetadataOptions{})).must(t)
		if len(r.Metadata) != 0 || r.MajorRevision != 3 {
			t.Fatalf("remove all: %+v", r)
		}
		// All of an empty channel: no bump; majorRevision survives.
		r = res(e.s.RemoveMetadata(ctx, chanA, nil, presence.MetadataOptions{})).must(t)
		if len(r.Metadata) != 0 || r.MajorRevision != 3 {
			t.Fatalf("remove all of empty: %+v", r)
		}
		if g := mustGet(t, e.s, chanA); g.MajorRevision != 3 {
			t.Fatalf("majorRevision after remove all: %+v", g)
		}
		// A fresh channel: remove of nothing stays at 0.
		other := presence.Channel{Type: "room", Name: "other"}
		if r := res(e.s.RemoveMetadata(ctx, other, nil, presence.MetadataOptions{})).must(t); r.MajorRevision != 0 {
			t.Fatalf("remove on fresh channel: %+v", r)
		}
		// Re-created after remove all, majorRevision keeps counting.
		r = res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}}, presence.MetadataOptions{})).must(t)
		if r.MajorRevision != 4 {
			t.Fatalf("set after remove all: %+v", r)
		}
		evs := e.events.until(t, chanA, 4)
		if len(evs) != 4 || evs[1].Operation != "remove" || !slices.Equal(eventItems(evs[1]), []string{"b=2@1"}) ||
			evs[2].Operation != "remove" || !slices.Equal(eventItems(evs[2]), []string{"a=1@1", "c=3@4"}) {
			t.Fatalf("events %+v", evs)
		}
		if len(e.events.of(other)) != 0 {
			t.Fatalf("remove of nothing published %+v", e.events.of(other))
		}
	})
}

func TestMetadataMajorRevisionCAS(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		// majorRevision 0 of a fresh channel is checkable.
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}}, presence.MetadataOptions{MajorRevision: presence.Rev(0)})).must(t)
		ops := []func(o presence.MetadataOptions) error{
			func(o presence.MetadataOptions) error {
				_, err := e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "b", Value: "2"}}, o)
				return err
			},
			func(o presence.MetadataOptions) error {
				_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, o)
				return err
			},
			func(o presence.MetadataOptions) error {
				_, err := e.s.RemoveMetadata(ctx, chanA, []string{"a"}, o)
				return err
			},
			func(o presence.MetadataOptions) error { // remove of nothing is checked too
				_, err := e.s.RemoveMetadata(ctx, chanA, []string{"nope"}, o)
				return err
			},
		}
		for i, op := range ops {
			for _, stale := range []int64{0, 2, 99} {
				e.attempts.Store(0)
				if err := op(presence.MetadataOptions{MajorRevision: presence.Rev(stale)}); !errors.Is(err, presence.ErrConflict) {
					t.Errorf("op %d with majorRevision %d (current 1): %v", i, stale, err)
				}
				if n := e.attempts.Load(); n != 1 {
					t.Errorf("op %d: a majorRevision mismatch took %d attempts, want exactly 1", i, n)
				}
			}
		}
		if g := mustGet(t, e.s, chanA); !slices.Equal(entries(g), []string{"a=1@1"}) || g.MajorRevision != 1 {
			t.Fatalf("a refused CAS wrote: %+v", g)
		}
		// The right majorRevision passes; a negative one is unchecked.
		res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, presence.MetadataOptions{MajorRevision: presence.Rev(1)})).must(t)
		r := res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "3"}}, presence.MetadataOptions{MajorRevision: presence.Rev(-1)})).must(t)
		if r.MajorRevision != 3 {
			t.Fatalf("major %d", r.MajorRevision)
		}
		if evs := e.events.until(t, chanA, 3); len(evs) != 3 {
			t.Fatalf("events %+v", evs)
		}
		if st := e.s.Stats(); st.MetadataConflicts != 12 {
			t.Fatalf("conflicts counted %d, want 12", st.MetadataConflicts)
		}
	})
}

func TestMetadataRevisionConflictOneAttempt(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1", Revision: presence.Rev(3)}}, presence.MetadataOptions{})).must(t)
		e.attempts.Store(0)
		_, err := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2", Revision: presence.Rev(2)}}, presence.MetadataOptions{})
		if !errors.Is(err, presence.ErrConflict) {
			t.Fatalf("update with revision 2 of revision 3: %v", err)
		}
		if n := e.attempts.Load(); n != 1 {
			t.Fatalf("a revision mismatch took %d attempts, want exactly 1", n)
		}
		if st := e.s.Stats(); st.MetadataRetries != 0 || st.MetadataConflicts != 1 {
			t.Fatalf("stats %+v", st)
		}
		// Revision 0 is a check too (of an item stored with revision 3).
		_, err = e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2", Revision: presence.Rev(0)}}, presence.MetadataOptions{})
		if !errors.Is(err, presence.ErrConflict) {
			t.Fatalf("update with revision 0: %v", err)
		}
		r := res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2", Revision: presence.Rev(3)}}, presence.MetadataOptions{})).must(t)
		if !slices.Equal(entries(r), []string{"a=2@4"}) {
			t.Fatalf("update: %v", entries(r))
		}
	})
}

func TestMetadataLockRequired(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		res(e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}}, presence.MetadataOptions{})).must(t)
		locked := presence.MetadataOptions{LockName: "edit", Actor: "alice"}
		try := func(o presence.MetadataOptions) []error {
			_, e1 := e.s.SetMetadata(ctx, chanA, []presence.Item{{Key: "b", Value: "2"}}, o)
			_, e2 := e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, o)
			_, e3 := e.s.RemoveMetadata(ctx, chanA, nil, o)
			_, e4 := e.s.RemoveMetadata(ctx, chanA, []string{"nope"}, o)
			return []error{e1, e2, e3, e4}
		}
		expectLocked := func(what string, o presence.MetadataOptions) {
			t.Helper()
			for i, err := range try(o) {
				if !errors.Is(err, presence.ErrLocked) {
					t.Fatalf("%s: op %d: %v", what, i, err)
				}
			}
		}
		expectLocked("no lock", locked)
		if _, err := e.s.AcquireLock(ctx, chanA, "edit", "bob", time.Minute); err != nil {
			t.Fatal(err)
		}
		expectLocked("bob's lock", locked)
		expectLocked("no actor", presence.MetadataOptions{LockName: "edit"})
		if _, err := e.s.AcquireLock(ctx, chanA, "other", "alice", time.Minute); err != nil {
			t.Fatal(err)
		}
		expectLocked("alice holds another lock", locked)
		if g := mustGet(t, e.s, chanA); !slices.Equal(entries(g), []string{"a=1@1"}) || g.MajorRevision != 1 {
			t.Fatalf("a locked-out mutation wrote: %+v", g)
		}
		// Held by the actor: allowed.
		if err := e.s.ReleaseLock(ctx, chanA, "edit", "bob"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.AcquireLock(ctx, chanA, "edit", "alice", time.Minute); err != nil {
			t.Fatal(err)
		}
		r := res(e.s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, locked)).must(t)
		if r.MajorRevision != 2 {
			t.Fatalf("locked update: %+v", r)
		}
		// The set and the locked update published; the 16 refused
		// mutations published nothing.
		if evs := e.events.until(t, chanA, 2); len(evs) != 2 {
			t.Fatalf("events %+v", evs)
		}
	})
}

func TestMetadataValuesRoundTrip(t *testing.T) {
	big := strings.Repeat("é\"\\/x", (1<<20)/6) // < 1 MiB, escapes and multibyte
	big += strings.Repeat("y", 1<<20-len(big))  // exactly 1 MiB
	values := map[string]string{
		"empty":   "",
		"unicode": "日本語 ✓ 😀 \u2028 ü",
		"json":    `{"a":[1,2,{"b":null}],"c":1e400}`,
		"number":  "0012.50",
		"ctrl":    "line\nbreak\ttab\x00nul\x1f",
		"html":    "<script>&amp;</script>",
		"spaces":  "  ",
		"null":    "null",
		"big":     big,
	}
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		var items []presence.Item
		for k, v := range values {
			items = append(items, presence.Item{Key: k, Value: v})
		}
		items = append(items, presence.Item{Key: "ключ 😀 \"q\"", Value: "v"})
		check := func(what string, m map[string]presence.MetadataEntry) {
			t.Helper()
			for k, v := range values {
				if m[k].Value != v {
					t.Fatalf("%s: value of %q: got %d bytes, want %d", what, k, len(m[k].Value), len(v))
				}
			}
			if m["ключ 😀 \"q\""].Value != "v" {
				t.Fatalf("%s: unicode key lost: %v", what, slices.Collect(maps.Keys(m)))
			}
		}
		r := res(e.s.SetMetadata(ctx, chanA, items, presence.MetadataOptions{})).must(t)
		check("set", r.Metadata)
		check("get", mustGet(t, e.s, chanA).Metadata)
		changed := func(v string) string {
			if len(v) == 1<<20 {
				return "z" + v[:len(v)-1] // still exactly 1 MiB (v ends in ASCII)
			}
			return "u:" + v
		}
		var up []presence.Item
		for k, v := range values {
			up = append(up, presence.Item{Key: k, Value: changed(v)})
		}
		r = res(e.s.UpdateMetadata(ctx, chanA, up, presence.MetadataOptions{})).must(t)
		for k, v := range values {
			if r.Metadata[k].Value != changed(v) {
				t.Fatalf("update: value of %q changed", k)
			}
		}
		r = res(e.s.SetMetadata(ctx, chanA, items, presence.MetadataOptions{})).must(t)
		evs := e.events.until(t, chanA, 3)
		got := map[string]presence.MetadataEntry{}
		for _, it := range evs[2].Items {
			got[it.Key] = presence.MetadataEntry{Value: it.Value}
		}
		check("event", got)
	})
}

func TestMetadataEventsExactlyOnePerMutation(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		e := newMetaEnv(t, tg, spec)
		ctx := ctxT(t)
		other := presence.Channel{Type: "doc", Name: "lobby:1"} // same name, other type
		rnd := rand.New(rand.NewPCG(1, 2))
		var want []int64
		ok := 0
		for i := 0; i < 60; i++ {
			var err error
			ch := chanA
			if i%5 == 4 {
				ch = other
			}
			major := presence.Rev(int64(rnd.IntN(4) - 1)) // -1 (unchecked) .. 2: many conflicts
			item := presence.Item{Key: fmt.Sprintf("k%d", rnd.IntN(3)), Value: fmt.Sprint(i)}
			switch rnd.IntN(3) {
			case 0:
				_, err = e.s.SetMetadata(ctx, ch, []presence.Item{item, {Key: "k0x", Value: "s"}}, presence.MetadataOptions{MajorRevision: major})
			case 1:
				_, err = e.s.UpdateMetadata(ctx, ch, []presence.Item{item}, presence.MetadataOptions{MajorRevision: major})
			case 2:
				_, err = e.s.RemoveMetadata(ctx, ch, []string{item.Key}, presence.MetadataOptions{MajorRevision: major})
			}
			if err != nil && !errors.Is(err, presence.ErrConflict) && !errors.Is(err, presence.ErrInvalidArgument) {
				t.Fatal(err)
			}
			if err == nil && ch == chanA {
				ok++
			}
		}
		final := mustGet(t, e.s, chanA)
		// A last successful set is the barrier: events of a channel arrive
		// in order, so everything published before it is in by then.
		res(e.s.SetMetadata(ctx, chanA, nil, presence.MetadataOptions{})).must(t)
		evs := e.events.until(t, chanA, final.MajorRevision+1)
		for i := range evs {
			want = append(want, int64(i+1))
		}
		var got []int64
		for _, ev := range evs {
			got = append(got, ev.MajorRevision)
		}
		// Successful set and update always publish; a remove only when it
		// removed something, and then it bumped majorRevision: so the
		// events are exactly majorRevisions 1..final+1, in order.
		if !slices.Equal(got, want) || int64(len(evs)) != final.MajorRevision+1 {
			t.Fatalf("event majorRevisions %v, want 1..%d", got, final.MajorRevision+1)
		}
		if ok < int(final.MajorRevision) {
			t.Fatalf("%d successful calls but majorRevision %d", ok, final.MajorRevision)
		}
	})
}

// rawMetaEvents records the raw payloads on the metadata channels.
func rawMetaEvents(t *testing.T, s *presence.Service) func(n int) []string {
	var mu sync.Mutex
	var got []string
	pattern := s.Keys().MetaEventsPattern()
	if s.PubSub() != presence.PubSubPattern {
		pattern = s.Keys().RoomMetaEventsPattern()
	}
	sub, err := s.Client().PSubscribe(ctxT(t), pattern, func(m backend.Message) {
		mu.Lock()
		got = append(got, m.Payload)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return func(n int) []string {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			out := slices.Clone(got)
			mu.Unlock()
			if len(out) >= n {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %d raw events, want %d", len(out), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// The two strategies build events differently (Go's json.Marshal, Lua by
// hand) and must agree on the decoded content, field set and types.
func TestMetadataEventShapeSameAcrossStrategies(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		decoded := map[string][]any{}
		for _, spec := range metaSpecs {
			clk := newFakeClock()
			s := newService(t, tg.connect(t), presence.Config{Metadata: spec, Now: clk.Now, Logger: quiet})
			wait := rawMetaEvents(t, s)
			ctx := ctxT(t)
			opts := presence.MetadataOptions{AddTimestamp: true, AddUserID: true, Actor: "al\"ice"}
			res(s.SetMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: `{"x":"</y>"}`, Revision: presence.Rev(1 << 52)}, {Key: "e", Value: ""}}, opts)).must(t)
			res(s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "k", Value: "2"}}, presence.MetadataOptions{})).must(t)
			res(s.RemoveMetadata(ctx, chanA, nil, presence.MetadataOptions{})).must(t)
			res(s.SetMetadata(ctx, chanA, nil, presence.MetadataOptions{})).must(t)
			for _, p := range wait(4) {
				var v any
				dec := json.NewDecoder(strings.NewReader(p))
				dec.UseNumber()
				if err := dec.Decode(&v); err != nil {
					t.Fatalf("%s: undecodable event %q: %v", spec, p, err)
				}
				decoded[spec] = append(decoded[spec], v)
			}
		}
		if !reflect.DeepEqual(decoded["lua"], decoded[metaSpecs[1]]) {
			a, _ := json.Marshal(decoded["lua"])
			b, _ := json.Marshal(decoded[metaSpecs[1]])
			t.Fatalf("events differ:\nlua:   %s\nwatch: %s", a, b)
		}
		want := `{"authorUid":"al\"ice","channelName":"lobby:1","channelType":"room","items":[{"key":"k","revision":4503599627370496,"value":"{\"x\":\"\u003c/y\u003e\"}"},{"key":"e","revision":1,"value":""}],"majorRevision":1,"operation":"set","timestamp":1800000000000}`
		if got, _ := json.Marshal(decoded["lua"][0]); string(got) != want {
			t.Fatalf("set event\n got %s\nwant %s", got, want)
		}
		if got, _ := json.Marshal(decoded["lua"][3]); !strings.Contains(string(got), `"items":[]`) {
			t.Fatalf("empty set event %s", got)
		}
	})
}

// Random sequences of mutations give the same records, errors and events
// whichever strategy runs them.
func TestMetadataStrategiesAgree(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		type outcome struct {
			Err   string
			Major int64
			Items []string
		}
		runs := map[string][]outcome{}
		for _, spec := range metaSpecs {
			clk := newFakeClock()
			s := newService(t, tg.connect(t), presence.Config{Metadata: spec, Now: clk.Now, Logger: quiet})
			ctx := ctxT(t)
			rnd := rand.New(rand.NewPCG(7, 7))
			if _, err := s.AcquireLock(ctx, chanA, "L", "u1", time.Minute); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 150; i++ {
				clk.Advance(time.Duration(rnd.IntN(2000)) * time.Millisecond)
				var items []presence.Item
				for n := rnd.IntN(4); n > 0; n-- {
					k := fmt.Sprintf("k%d", rnd.IntN(5))
					if slices.ContainsFunc(items, func(it presence.Item) bool { return it.Key == k }) {
						continue
					}
					it := presence.Item{Key: k, Value: fmt.Sprintf("v%d", i)}
					if rnd.IntN(2) == 0 {
						it.Revision = presence.Rev(int64(rnd.IntN(5) - 1))
					}
					items = append(items, it)
				}
				o := presence.MetadataOptions{AddTimestamp: rnd.IntN(2) == 0, Actor: []string{"", "u1", "u2"}[rnd.IntN(3)]}
				o.AddUserID = o.Actor != "" && rnd.IntN(2) == 0
				if rnd.IntN(4) == 0 {
					o.MajorRevision = presence.Rev(int64(rnd.IntN(8)))
				}
				if rnd.IntN(5) == 0 {
					o.LockName = "L"
				}
				var r *presence.MetadataResponse
				var err error
				switch rnd.IntN(3) {
				case 0:
					r, err = s.SetMetadata(ctx, chanA, items, o)
				case 1:
					if len(items) == 0 {
						items = []presence.Item{{Key: "k1", Value: "x"}}
					}
					r, err = s.UpdateMetadata(ctx, chanA, items, o)
				case 2:
					var keys []string
					for _, it := range items {
						keys = append(keys, it.Key)
					}
					r, err = s.RemoveMetadata(ctx, chanA, keys, o)
				}
				var oc outcome
				switch {
				case err != nil:
					oc.Err = err.Error()
				default:
					oc.Major = r.MajorRevision
					for k, e := range r.Metadata {
						oc.Items = append(oc.Items, fmt.Sprintf("%s=%s@%d/%s/%s", k, e.Value, e.Revision, e.Updated, e.AuthorUID))
					}
					slices.Sort(oc.Items)
				}
				runs[spec] = append(runs[spec], oc)
			}
		}
		a, b := runs["lua"], runs[metaSpecs[1]]
		for i := range a {
			if !reflect.DeepEqual(a[i], b[i]) {
				t.Fatalf("step %d differs:\nlua:   %+v\nwatch: %+v", i, a[i], b[i])
			}
		}
		var oks int
		for _, o := range a {
			if o.Err == "" {
				oks++
			}
		}
		if oks < 20 || oks > 140 {
			t.Fatalf("%d of %d steps succeeded: the sequence does not exercise both paths", oks, len(a))
		}
	})
}

func TestMetadataValidation(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		cc := counting.New(tg.connect(t))
		s := newService(t, cc, presence.Config{Metadata: spec, Logger: quiet})
		ctx := ctxT(t)
		long := strings.Repeat("x", 257)
		var many []presence.Item
		for i := 0; i < 257; i++ {
			many = append(many, presence.Item{Key: fmt.Sprint(i)})
		}
		ok := []presence.Item{{Key: "a", Value: "1"}}
		o := presence.MetadataOptions{}
		set := func(ch presence.Channel, items []presence.Item, o presence.MetadataOptions) error {
			_, err := s.SetMetadata(ctx, ch, items, o)
			return err
		}
		cases := map[string]func() error{
			"empty type":       func() error { return set(presence.Channel{Name: "n"}, ok, o) },
			"empty name":       func() error { return set(presence.Channel{Type: "t"}, ok, o) },
			"type with colon":  func() error { return set(presence.Channel{Type: "a:b", Name: "n"}, ok, o) },
			"type with brace":  func() error { return set(presence.Channel{Type: "a{", Name: "n"}, ok, o) },
			"name with brace":  func() error { return set(presence.Channel{Type: "t", Name: "n}x"}, ok, o) },
			"name with ctrl":   func() error { return set(presence.Channel{Type: "t", Name: "n\n"}, ok, o) },
			"name too long":    func() error { return set(presence.Channel{Type: "t", Name: long}, ok, o) },
			"empty key":        func() error { return set(chanA, []presence.Item{{Key: ""}}, o) },
			"key too long":     func() error { return set(chanA, []presence.Item{{Key: long}}, o) },
			"key not utf8":     func() error { return set(chanA, []presence.Item{{Key: "\xff"}}, o) },
			"duplicate keys":   func() error { return set(chanA, []presence.Item{{Key: "a"}, {Key: "b"}, {Key: "a"}}, o) },
			"value too big":    func() error { return set(chanA, []presence.Item{{Key: "a", Value: strings.Repeat("v", 1<<20+1)}}, o) },
			"value not utf8":   func() error { return set(chanA, []presence.Item{{Key: "a", Value: "ok\xc3"}}, o) },
			"too many items":   func() error { return set(chanA, many, o) },
			"revision > 2^52":  func() error { return set(chanA, []presence.Item{{Key: "a", Revision: presence.Rev(1<<52 + 1)}}, o) },
			"major > 2^52":     func() error { return set(chanA, ok, presence.MetadataOptions{MajorRevision: presence.Rev(1<<52 + 1)}) },
			"lock name brace":  func() error { return set(chanA, ok, presence.MetadataOptions{LockName: "{x}", Actor: "u"}) },
			"actor with brace": func() error { return set(chanA, ok, presence.MetadataOptions{Actor: "u}"}) },
			"addUserId no actor": func() error {
				return set(chanA, ok, presence.MetadataOptions{AddUserID: true})
			},
			"update no items": func() error {
				_, err := s.UpdateMetadata(ctx, chanA, nil, o)
				return err
			},
			"update dup keys": func() error {
				_, err := s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a"}, {Key: "a"}}, o)
				return err
			},
			"remove empty key": func() error {
				_, err := s.RemoveMetadata(ctx, chanA, []string{"a", ""}, o)
				return err
			},
			"get bad channel": func() error {
				_, err := s.GetMetadata(ctx, presence.Channel{Type: "a:b", Name: "n"})
				return err
			},
			"lock ttl 0": func() error {
				_, err := s.AcquireLock(ctx, chanA, "l", "u", 0)
				return err
			},
			"lock ttl negative": func() error {
				_, err := s.AcquireLock(ctx, chanA, "l", "u", -time.Second)
				return err
			},
			"lock ttl < 1ms": func() error {
				_, err := s.RenewLock(ctx, chanA, "l", "u", time.Microsecond)
				return err
			},
			"lock empty name": func() error {
				_, err := s.AcquireLock(ctx, chanA, "", "u", time.Second)
				return err
			},
			"lock owner brace": func() error {
				return s.ReleaseLock(ctx, chanA, "l", "{u")
			},
			"get lock bad name": func() error {
				_, err := s.GetLock(ctx, chanA, "l\x00")
				return err
			},
		}
		for name, fn := range cases {
			cc.Reset()
			if err := fn(); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
			}
			if n := cc.RoundTrips(); n != 0 {
				t.Errorf("%s: invalid input reached Redis (%d round trips)", name, n)
			}
		}
		// Exactly at the limits is fine: 256 items, a 256-byte key,
		// revision 2^52.
		res(s.SetMetadata(ctx, chanA, many[:256], o)).must(t)
		res(s.SetMetadata(ctx, chanA, []presence.Item{{Key: long[:256], Revision: presence.Rev(1 << 52)}}, o)).must(t)
		// An empty actor with a lock is a lock failure, not invalid input,
		// and needs no round trip either.
		cc.Reset()
		if err := set(chanA, ok, presence.MetadataOptions{LockName: "l"}); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("lock without actor: %v", err)
		}
		if _, err := s.AcquireLock(ctx, chanA, "l", "", time.Second); !errors.Is(err, presence.ErrLocked) {
			t.Fatalf("acquire without owner: %v", err)
		}
		if n := cc.RoundTrips(); n != 0 {
			t.Fatalf("%d round trips", n)
		}
	})
}

func TestMetadataResponseJSON(t *testing.T) {
	r := presence.MetadataResponse{
		Timestamp: 5, ChannelName: "n", ChannelType: "t", TotalCount: 2, MajorRevision: 3,
		Metadata: map[string]presence.MetadataEntry{
			"a": {Value: "", Revision: 1},
			"b": {Value: "x", Revision: 2, Updated: "2026-11-26T08:00:00.123Z", AuthorUID: "u"},
		},
	}
	got, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"timestamp":5,"channelName":"n","channelType":"t","totalCount":2,"majorRevision":3,` +
		`"metadata":{"a":{"value":"","revision":1},"b":{"value":"x","revision":2,"updated":"2026-11-26T08:00:00.123Z","authorUid":"u"}}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var item presence.Item
	if err := json.Unmarshal([]byte(`{"key":"k"}`), &item); err != nil || item.Revision != nil {
		t.Fatalf("absent revision: %+v %v", item, err)
	}
	var opts presence.MetadataOptions
	if err := json.Unmarshal([]byte(`{"majorRevision":-1,"lockName":"l","addTimestamp":true,"addUserId":true}`), &opts); err != nil ||
		*opts.MajorRevision != -1 || opts.LockName != "l" || !opts.AddTimestamp || !opts.AddUserID {
		t.Fatalf("opts %+v %v", opts, err)
	}
}

// contention runs 16 goroutines that each loop for a bounded time (and a
// bounded count) over get → mutate, and reports what happened.
type contentionStats struct {
	ok, conflicts, calls int64
	attempts, retries    uint64
	roundTrips           int64
}

func runContention(t *testing.T, tg target, spec string, mutate func(ctx context.Context, s *presence.Service, cur *presence.MetadataResponse) error) (contentionStats, *presence.MetadataResponse) {
	cc := counting.New(tg.connect(t))
	logs := &logCounter{}
	s := newService(t, cc, presence.Config{Metadata: spec, Logger: slog.New(logs)})
	ctx := ctxT(t)
	res(s.SetMetadata(ctx, chanA, []presence.Item{{Key: "counter", Value: "0"}}, presence.MetadataOptions{})).must(t)
	cc.Reset()
	before := s.Stats()
	var st contentionStats
	var gets atomic.Int64
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000 && time.Now().Before(stop); i++ {
				cur, err := s.GetMetadata(ctx, chanA)
				if err != nil {
					t.Error(err)
					return
				}
				gets.Add(1)
				atomic.AddInt64(&st.calls, 1)
				switch err := mutate(ctx, s, cur); {
				case err == nil:
					atomic.AddInt64(&st.ok, 1)
				case errors.Is(err, presence.ErrConflict):
					atomic.AddInt64(&st.conflicts, 1)
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	stats := s.Stats()
	st.attempts, st.retries = stats.MetadataAttempts-before.MetadataAttempts, stats.MetadataRetries-before.MetadataRetries
	st.roundTrips = cc.RoundTrips() - gets.Load() // one Do per get
	// Every retry is logged at debug, every success after retries at info.
	retryLogs, successLogs := logs.count(slog.LevelDebug, "Metadata transaction conflict, retry "),
		logs.count(slog.LevelInfo, "Metadata operation succeeded after ")
	if retryLogs != int(st.retries) || successLogs > retryLogs {
		t.Errorf("%d retries but %d retry logs and %d success-after-retry logs", st.retries, retryLogs, successLogs)
	}
	if st.calls > 0 {
		t.Logf("%s %s: %d calls, %d ok (%.1f%%), %d conflicts, %d attempts, %d retries, %.2f round trips per mutation call, %.2f per success",
			tg.name, spec, st.calls, st.ok, 100*float64(st.ok)/float64(st.calls), st.conflicts, st.attempts, st.retries,
			float64(st.roundTrips)/float64(st.calls), float64(st.roundTrips)/float64(max(st.ok, 1)))
	}
	return st, mustGet(t, s, chanA)
}

// Compare-and-set increments: every success is counted exactly once and
// nothing else changes the record.
func TestMetadataContentionCAS(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		st, final := runContention(t, tg, spec, func(ctx context.Context, s *presence.Service, cur *presence.MetadataResponse) error {
			var n int
			fmt.Sscan(cur.Metadata["counter"].Value, &n)
			_, err := s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "counter", Value: fmt.Sprint(n + 1)}},
				presence.MetadataOptions{MajorRevision: presence.Rev(cur.MajorRevision)})
			return err
		})
		if st.ok == 0 {
			t.Fatal("no update succeeded")
		}
		c := final.Metadata["counter"]
		if c.Value != fmt.Sprint(st.ok) || c.Revision != st.ok+1 || final.MajorRevision != st.ok+1 {
			t.Fatalf("%d successful updates, but counter %q revision %d, majorRevision %d", st.ok, c.Value, c.Revision, final.MajorRevision)
		}
		if spec == "lua" && (st.retries != 0 || st.attempts != uint64(st.calls)) {
			t.Fatalf("lua: %d attempts, %d retries for %d calls", st.attempts, st.retries, st.calls)
		}
	})
}

// Unchecked updates: only EXEC aborts make watch fail, and they are
// retried; no update may be lost.
func TestMetadataContentionBlind(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		st, final := runContention(t, tg, spec, func(ctx context.Context, s *presence.Service, _ *presence.MetadataResponse) error {
			_, err := s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "counter", Value: "x"}}, presence.MetadataOptions{})
			return err
		})
		c := final.Metadata["counter"]
		if c.Revision != st.ok+1 || final.MajorRevision != st.ok+1 {
			t.Fatalf("%d successful updates, but revision %d, majorRevision %d", st.ok, c.Revision, final.MajorRevision)
		}
		if spec == "lua" && st.conflicts != 0 {
			t.Fatalf("lua: %d conflicts without any check", st.conflicts)
		}
	})
}

func TestMetadataRoundTripsUncontended(t *testing.T) {
	forEachMetaStrategy(t, func(t *testing.T, tg target, spec string) {
		cc := counting.New(tg.connect(t))
		s := newService(t, cc, presence.Config{Metadata: spec, Logger: quiet})
		ctx := ctxT(t)
		res(s.SetMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "1"}}, presence.MetadataOptions{})).must(t)
		cc.Reset()
		res(s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a", Value: "2"}}, presence.MetadataOptions{})).must(t)
		want := int64(1) // EVALSHA
		if spec != "lua" {
			want = 3 // WATCH, reads, MULTI/EXEC
		}
		if n := cc.RoundTrips(); n != want {
			t.Fatalf("%d round trips per update, want %d", n, want)
		}
	})
}

// Compare-and-set on a channel's metadata: read, then write only if nobody
// wrote in between.
func ExampleService_UpdateMetadata() {
	srv, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	client, err := goredis.New(ctx, goredis.Options{Addrs: []string{srv.Addr()}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	s, err := presence.New(client, presence.Config{Metadata: "lua", ReaperInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ch := presence.Channel{Type: "doc", Name: "readme"}
	if _, err := s.SetMetadata(ctx, ch, []presence.Item{{Key: "title", Value: "Draft"}}, presence.MetadataOptions{}); err != nil {
		log.Fatal(err)
	}
	cur, err := s.GetMetadata(ctx, ch)
	if err != nil {
		log.Fatal(err)
	}
	opts := presence.MetadataOptions{MajorRevision: presence.Rev(cur.MajorRevision)}
	r, err := s.UpdateMetadata(ctx, ch, []presence.Item{{Key: "title", Value: "Final"}}, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Metadata["title"].Value, r.Metadata["title"].Revision, r.MajorRevision)
	// The same majorRevision again is stale now.
	_, err = s.UpdateMetadata(ctx, ch, []presence.Item{{Key: "title", Value: "Oops"}}, opts)
	fmt.Println(errors.Is(err, presence.ErrConflict))
	// Output:
	// Final 2 2
	// true
}

// A named lock serializes writers; its TTL frees it if the owner dies.
func ExampleService_AcquireLock() {
	srv, err := embedded.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	client, err := goredis.New(ctx, goredis.Options{Addrs: []string{srv.Addr()}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	s, err := presence.New(client, presence.Config{ReaperInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ch := presence.Channel{Type: "doc", Name: "readme"}
	if _, err := s.AcquireLock(ctx, ch, "edit", "alice", 30*time.Second); err != nil {
		log.Fatal(err)
	}
	_, err = s.SetMetadata(ctx, ch, []presence.Item{{Key: "body", Value: "..."}},
		presence.MetadataOptions{LockName: "edit", Actor: "bob"})
	fmt.Println("bob:", errors.Is(err, presence.ErrLocked))
	_, err = s.SetMetadata(ctx, ch, []presence.Item{{Key: "body", Value: "..."}},
		presence.MetadataOptions{LockName: "edit", Actor: "alice"})
	fmt.Println("alice:", err)
	fmt.Println(s.ReleaseLock(ctx, ch, "edit", "alice"))
	// Output:
	// bob: true
	// alice: <nil>
	// <nil>
}

func TestMetadataAndLocksAfterClose(t *testing.T) {
	c := counting.New(embeddedGoredis(t))
	s := newService(t, c, presence.Config{Logger: quiet})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	c.Reset()
	calls := map[string]error{}
	_, calls["set"] = s.SetMetadata(ctx, chanA, nil, presence.MetadataOptions{})
	_, calls["update"] = s.UpdateMetadata(ctx, chanA, []presence.Item{{Key: "a"}}, presence.MetadataOptions{})
	_, calls["remove"] = s.RemoveMetadata(ctx, chanA, nil, presence.MetadataOptions{})
	_, calls["get"] = s.GetMetadata(ctx, chanA)
	_, calls["subscribe"] = s.SubscribeMetadata(ctx, func(presence.MetadataEvent) {})
	_, calls["acquire"] = s.AcquireLock(ctx, chanA, "l", "u", time.Second)
	_, calls["renew"] = s.RenewLock(ctx, chanA, "l", "u", time.Second)
	calls["release"] = s.ReleaseLock(ctx, chanA, "l", "u")
	_, calls["getLock"] = s.GetLock(ctx, chanA, "l")
	for name, err := range calls {
		if !errors.Is(err, presence.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	if n := c.RoundTrips(); n != 0 {
		t.Fatalf("%d round trips after Close", n)
	}
}

// embeddedGoredis connects go-redis to a fresh embedded server.
func embeddedGoredis(t *testing.T) backend.Client {
	srv, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c, err := goredis.New(ctxT(t), goredis.Options{Addrs: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
