package rueidis_test

import (
	"errors"
	"testing"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	rb "github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/strategy"
)

// Replies of the shape of heartbeat.lua's go through DoFlat and its parser
// without a panic: well-formed ones decode, every malformed one is an
// error, under RESP2 and RESP3.
func TestFlatHeartbeatReplies(t *testing.T) {
	s := redistest.Standalone(t)
	for _, resp2 := range []bool{false, true} {
		c := newClient(t, s, rb.Options{AlwaysRESP2: resp2})
		for _, tc := range []struct {
			src  string
			want strategy.HeartbeatResult
			err  error // nil: any error when bad
			bad  bool
		}{
			{src: "return {1, 1, 1700000000000}", want: strategy.HeartbeatResult{Changed: true, Epoch: 1700000000000}},
			{src: "return {1, 0, 7}", want: strategy.HeartbeatResult{Epoch: 7}},
			{src: "return {0, 'NOTFOUND'}", err: core.ErrConnNotFound, bad: true},
			{src: "return {0, 'STALE', 9}", err: core.ErrStaleEpoch, bad: true},
			{src: "return {}", bad: true},
			{src: "return {1}", bad: true},
			{src: "return {1, 0}", bad: true},
			{src: "return {1, 0, 7, 8}", bad: true},
			{src: "return {1, 'x', 7}", bad: true},
			{src: "return {1, 0, {7}}", bad: true},
			{src: "return {1, 0, false}", bad: true},
			{src: "return {0, 'WHAT'}", bad: true},
			{src: "return {0, {1}}", bad: true},
			{src: "return {1, 2, 3, 4, 5, 6}", bad: true},
			{src: "return 1", bad: true},
			{src: "return 'NOTFOUND'", bad: true},
			{src: "return false", bad: true},
			{src: "return redis.error_reply('ERR broken')", bad: true},
		} {
			f, err := c.DoFlat(testCtx(t), backend.Cmd{Name: "EVAL", Pre: []string{tc.src, "0"}})
			if err != nil {
				t.Fatalf("DoFlat %s: %v", tc.src, err)
			}
			got, err := strategy.ParseHeartbeatFlat(&f)
			switch {
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Errorf("resp2=%v %s: %v, want %v", resp2, tc.src, err, tc.err)
			case tc.bad && err == nil:
				t.Errorf("resp2=%v %s: parsed as %+v, want an error", resp2, tc.src, got)
			case !tc.bad && (err != nil || got != tc.want):
				t.Errorf("resp2=%v %s: %+v %v, want %+v", resp2, tc.src, got, err, tc.want)
			}
		}
	}
}

// DoFlat of a short array reply allocates less than Do of it: the point of
// the fast path. (Allocations of rueidis's reader goroutine count for
// both alike.)
func TestDoFlatAllocatesLess(t *testing.T) {
	c := newClient(t, redistest.Standalone(t), rb.Options{})
	cmd := backend.Cmd{Name: "EVAL", Pre: []string{"return {1, 0, 1700000000000}", "0"}}
	ctx := testCtx(t)
	flat := testing.AllocsPerRun(200, func() {
		if _, err := c.DoFlat(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	})
	full := testing.AllocsPerRun(200, func() {
		if _, err := c.Do(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	})
	if flat+3 > full {
		t.Errorf("DoFlat: %.1f allocations per call, Do: %.1f; want at least 3 fewer", flat, full)
	}
	t.Logf("allocations per call: DoFlat %.1f, Do %.1f", flat, full)
}
