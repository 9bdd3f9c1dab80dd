package presence_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// leaky reports what an error message must not show a client: Redis's or
// the library's internal prefixes, Go type names.
func leaky(err error) bool {
	m := err.Error()
	for _, s := range []string{"redis:", "ERR ", "EPOCH_EXHAUSTED", "interface {}", "Go value", "Go struct", "*types.", "map[string]"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func wantInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, presence.ErrInvalidArgument) {
		t.Fatalf("%s: %v, want ErrInvalidArgument", what, err)
	}
	if leaky(err) {
		t.Fatalf("%s: the message %q shows internals", what, err)
	}
}

// Issue 11 (6): a lock's TTL is capped (default 10 minutes); over the cap
// is refused and writes nothing.
func TestLockTTLCap(t *testing.T) {
	srv := redistest.Standalone(t)
	s := newService(t, connectTo(t, srv), presence.Config{})
	if got := s.Config().MaxLockTTL; got != 10*time.Minute {
		t.Fatalf("default MaxLockTTL = %v, want 10m", got)
	}
	ctx := ctxT(t)
	ch := presence.Channel{Type: "doc", Name: "d"}
	key := s.Keys().Lock("doc", "d", "edit")
	for _, ttl := range []time.Duration{10*time.Minute + time.Millisecond, time.Duration(1<<53-1) * time.Microsecond, math.MaxInt64} {
		_, err := s.AcquireLock(ctx, ch, "edit", "alice", ttl)
		wantInvalid(t, "AcquireLock ttl "+ttl.String(), err)
		if r, _ := s.Client().Do(ctx, backend.K("EXISTS", key)); r[0].Int != 0 {
			t.Errorf("a refused AcquireLock (ttl %v) wrote the lock", ttl)
		}
	}
	if _, err := s.AcquireLock(ctx, ch, "edit", "alice", 10*time.Minute); err != nil {
		t.Fatalf("AcquireLock at the cap: %v", err)
	}
	_, err := s.RenewLock(ctx, ch, "edit", "alice", time.Hour)
	wantInvalid(t, "RenewLock 1h", err)
	if r, _ := s.Client().Do(ctx, backend.K("PTTL", key)); r[0].Int > (10 * time.Minute).Milliseconds() {
		t.Fatalf("a refused RenewLock set PTTL %d", r[0].Int)
	}

	small := newService(t, connectTo(t, srv), presence.Config{MaxLockTTL: time.Second})
	_, err = small.AcquireLock(ctx, ch, "edit", "bob", 2*time.Second)
	wantInvalid(t, "AcquireLock over a configured 1s cap", err)
	if _, err := small.AcquireLock(ctx, ch, "edit", "bob", time.Second); err != nil {
		t.Fatalf("AcquireLock at a configured 1s cap: %v", err)
	}
}

// Issue 11 (6): a client's epoch may lead the server clock by at most
// EpochLead, so no heartbeat can push a conn to the largest epoch and make
// its id unusable after a leave.
func TestHeartbeatEpochBoundedByClock(t *testing.T) {
	clk := newFakeClock()
	s := newService(t, connectTo(t, redistest.Standalone(t)), presence.Config{Now: clk.Now})
	ctx := ctxT(t)
	j, err := s.Join(ctx, "r", "c", "u", nil)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now().UnixMilli()
	limit := now + presence.EpochLead.Milliseconds()
	for _, e := range []int64{presence.MaxEpoch, presence.MaxEpoch - 1, limit + 1, -1} {
		_, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &e, PatchState: json.RawMessage(`{"a":1}`)})
		wantInvalid(t, "heartbeat with epoch "+jsonNum(e), err)
		if got := entryOf(t, s, "r", "c"); got.Epoch != j.Epoch || string(got.State) != `{}` && got.State != nil {
			t.Errorf("a refused heartbeat (epoch %d) changed the conn: %+v", e, got)
		}
	}
	if r, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &limit}); err != nil || r.Epoch != limit {
		t.Fatalf("heartbeat at the lead's limit: %+v, %v", r, err)
	}
	if err := s.Leave(ctx, "r", "c"); err != nil {
		t.Fatal(err)
	}
	j2, err := s.Join(ctx, "r", "c", "u", nil)
	if err != nil || j2.Epoch <= limit {
		t.Fatalf("rejoin after the largest allowed epoch %d: %+v, %v", limit, j2, err)
	}
	// What the room remembers of that epoch goes once the clock has
	// passed it by the lookback, not in 285,000 years.
	if err := s.Leave(ctx, "r", "c"); err != nil {
		t.Fatal(err)
	}
	pttl, _ := s.Client().Do(ctx, backend.K("PTTL", s.Keys().Gone("r")))
	if max := j2.Epoch - now + s.Config().ReaperLookback.Milliseconds(); pttl[0].Int <= 0 || pttl[0].Int > max {
		t.Fatalf("the gone index has PTTL %d, want within (0, %d]", pttl[0].Int, max)
	}
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

// Issue 11 (6): a join that would need an epoch past MaxEpoch is refused
// with a message that names neither Redis nor the script.
func TestEpochExhaustedMessage(t *testing.T) {
	clk := &fakeClock{now: time.UnixMilli(presence.MaxEpoch - 1)}
	s := newService(t, connectTo(t, redistest.Standalone(t)), presence.Config{Now: clk.Now})
	ctx := ctxT(t)
	for _, want := range []int64{presence.MaxEpoch - 1, presence.MaxEpoch} {
		j, err := s.Join(ctx, "r", "c", "u", nil)
		if err != nil || j.Epoch != want {
			t.Fatalf("join: %+v, %v; want epoch %d", j, err, want)
		}
		if r, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{Epoch: &j.Epoch}); err != nil || r.Epoch != want {
			t.Fatalf("heartbeat with the joined epoch: %+v %v", r, err)
		}
	}
	_, err := s.Join(ctx, "r", "c", "u", nil)
	wantInvalid(t, "join past the last epoch", err)
}

// Issue 11 (6): item keys and state keys follow the character rules of
// ids; invalid UTF-8 and lone surrogates are refused, not turned into
// U+FFFD; no message names a Go type.
func TestKeyAndTextRules(t *testing.T) {
	s := newService(t, connectTo(t, redistest.Standalone(t)), presence.Config{})
	ctx := ctxT(t)
	if _, err := s.Join(ctx, "r", "c", "u", json.RawMessage(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	ch := presence.Channel{Type: "doc", Name: "d"}
	if _, err := s.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "v"}}, presence.MetadataOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a\x00b", "a\x01", "line\nbreak", "tab\t", "del\x7f", "c1\u0085", "bad\xff"} {
		_, err := s.SetMetadata(ctx, ch, []presence.Item{{Key: k, Value: "v"}}, presence.MetadataOptions{})
		wantInvalid(t, "set item key "+jsonStr(k), err)
		_, err = s.UpdateMetadata(ctx, ch, []presence.Item{{Key: k, Value: "v"}}, presence.MetadataOptions{})
		wantInvalid(t, "update item key "+jsonStr(k), err)
		if utf8ok(k) {
			st := json.RawMessage(`{` + jsonStr(k) + `:1}`)
			_, err = s.Join(ctx, "r", "c2", "u", st)
			wantInvalid(t, "join state key "+jsonStr(k), err)
			_, err = s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: st})
			wantInvalid(t, "patch state key "+jsonStr(k), err)
		}
	}
	for _, st := range []string{
		`{"a":"\ud800"}`, `{"a":"x\udfffy"}`, `{"\udc00":1}`, `{"a":"\ud800\u0041"}`, `{"a":"\ud800\ud800"}`,
		`{"a":"\ud800`, "{\"a\":\"\xff\"}", "{\"a\":\"\xed\xa0\x80\"}", `[1]`, `{"a":}`, `"s"`,
	} {
		_, err := s.Join(ctx, "r", "c2", "u", json.RawMessage(st))
		wantInvalid(t, "join state "+st, err)
		_, err = s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: json.RawMessage(st)})
		wantInvalid(t, "patch "+st, err)
	}
	_, err := s.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "\xed\xa0\x80"}}, presence.MetadataOptions{})
	wantInvalid(t, "a value holding an encoded surrogate", err)
	if connHashExists(t, s, "r", "c2") {
		t.Fatal("a refused join wrote its conn")
	}
	got, err := s.GetMetadata(ctx, ch)
	if err != nil || len(got.Metadata) != 1 || got.MajorRevision != 1 {
		t.Fatalf("refused calls changed the channel: %+v, %v", got, err)
	}
	if e := entryOf(t, s, "r", "c"); string(e.State) != `{"a":1}` {
		t.Fatalf("refused patches changed the state: %s", e.State)
	}

	// What is allowed: a surrogate pair, an escaped backslash before "u",
	// braces and U+FFFD itself in keys and values.
	ok := `{"e":"\ud83d\ude00","b":"\\ud800","{k}":"\ufffd"}`
	if _, err := s.Heartbeat(ctx, "r", "c", presence.HeartbeatParams{PatchState: json.RawMessage(ok)}); err != nil {
		t.Fatalf("patch %s: %v", ok, err)
	}
	if e := entryOf(t, s, "r", "c"); string(e.State) != `{"a":1,"b":"\\ud800","e":"😀","{k}":"�"}` {
		t.Fatalf("state %s", e.State)
	}
	if _, err := s.SetMetadata(ctx, ch, []presence.Item{{Key: "{k} ü", Value: "line\nbreak\x00"}}, presence.MetadataOptions{}); err != nil {
		t.Fatalf("a value may hold any UTF-8: %v", err)
	}
}

func jsonStr(s string) string { b, _ := json.Marshal(s); return string(b) }

func utf8ok(s string) bool { return !strings.Contains(s, "\xff") }
