package strategy_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/realtime-message/presence/core"

	"go.uber.org/mock/gomock"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendmock"
	"github.com/realtime-message/presence/strategy"
)

// storedTx answers the watch strategy's reads from a fixed meta hash.
type storedTx struct{ hash map[string]string }

func (s storedTx) Do(_ context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	out := make([]backend.Reply, len(cmds))
	for i, c := range cmds {
		switch c.Name {
		case "HGETALL":
			var kv []backend.Reply
			for k, v := range s.hash {
				kv = append(kv, backend.StrReply(k), backend.StrReply(v))
			}
			out[i] = backend.ArrReply(kv...)
		case "GET":
			out[i] = backend.NilReply()
		default:
			out[i] = backend.ErrReply("ERR unexpected " + c.Name)
		}
	}
	return out, nil
}

// recorder counts hook calls and keeps log records.
type recorder struct {
	mu                  sync.Mutex
	attempts, conflicts int
	retries             [][2]int
	logs                []string
	levels              []slog.Level
}

func (r *recorder) hooks() strategy.Hooks {
	return strategy.Hooks{
		MetadataAttempt:  func() { r.mu.Lock(); r.attempts++; r.mu.Unlock() },
		MetadataConflict: func() { r.mu.Lock(); r.conflicts++; r.mu.Unlock() },
		MetadataRetry: func(n, max int) {
			r.mu.Lock()
			r.retries = append(r.retries, [2]int{n, max})
			r.mu.Unlock()
		},
	}
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var attrs []string
	rec.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
	r.logs = append(r.logs, rec.Message+" "+strings.Join(attrs, " "))
	r.levels = append(r.levels, rec.Level)
	return nil
}

func watchOn(t *testing.T, retries int) (*strategy.WatchMetadata, *backendmock.MockClient, *recorder) {
	ctrl := gomock.NewController(t)
	m := backendmock.NewMockClient(ctrl)
	rec := &recorder{}
	env := strategy.Env{Client: m, Keys: core.Keys{Prefix: "t"}, Logger: slog.New(rec), Hooks: rec.hooks()}
	return strategy.NewWatchMetadata(env, retries), m, rec
}

var stored = map[string]string{"major": "4", "v:a": "x", "r:a": "2"}

func updateReq() strategy.MetaRequest {
	return strategy.MetaRequest{Op: strategy.OpUpdate, Type: "room", Name: "r1", MajorRevision: -1, NowMs: 1,
		Items: []strategy.MetaItem{{Key: "a", Value: "y", Revision: -1}}}
}

// watchThat runs fn against the stored hash, then answers EXEC with
// ErrTxAborted for the first aborts calls.
func watchThat(m *backendmock.MockClient, aborts int, gotKeys *[]string) {
	calls := 0
	m.EXPECT().Watch(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
			*gotKeys = keys
			calls++
			cmds, err := fn(ctx, storedTx{stored})
			if err != nil {
				return nil, err
			}
			if calls <= aborts {
				return nil, backend.ErrTxAborted
			}
			return make([]backend.Reply, len(cmds)), nil
		}).AnyTimes()
}

func TestWatchRetriesAbortsThenSucceeds(t *testing.T) {
	w, m, rec := watchOn(t, 5)
	var keys []string
	watchThat(m, 3, &keys)
	got, err := w.Mutate(context.Background(), updateReq())
	if err != nil {
		t.Fatal(err)
	}
	if got.MajorRevision != 5 || got.Items["a"].Value != "y" || got.Items["a"].Revision != 3 {
		t.Fatalf("record %+v", got)
	}
	if !slices.Equal(keys, []string{"t:{chan:room:r1}:meta"}) {
		t.Fatalf("watched %v", keys)
	}
	if rec.attempts != 4 || rec.conflicts != 0 || !slices.Equal(rec.retries, [][2]int{{1, 5}, {2, 5}, {3, 5}}) {
		t.Fatalf("attempts %d conflicts %d retries %v", rec.attempts, rec.conflicts, rec.retries)
	}
	want := []string{"Metadata transaction conflict, retry 1/5", "Metadata transaction conflict, retry 2/5",
		"Metadata transaction conflict, retry 3/5", "Metadata operation succeeded after 3 retries"}
	for i, w := range want {
		if !strings.HasPrefix(rec.logs[i], w) || !strings.Contains(rec.logs[i], "channelName=r1") {
			t.Fatalf("log %d: %q, want %q", i, rec.logs[i], w)
		}
	}
	if !slices.Equal(rec.levels, []slog.Level{slog.LevelDebug, slog.LevelDebug, slog.LevelDebug, slog.LevelInfo}) {
		t.Fatalf("levels %v", rec.levels)
	}
}

func TestWatchGivesUpAfterRetries(t *testing.T) {
	w, m, rec := watchOn(t, 2)
	var keys []string
	watchThat(m, 1000, &keys)
	_, err := w.Mutate(context.Background(), updateReq())
	if !errors.Is(err, core.ErrConflict) {
		t.Fatalf("after exhausting retries: %v", err)
	}
	if rec.attempts != 3 || rec.conflicts != 1 || len(rec.retries) != 2 {
		t.Fatalf("attempts %d conflicts %d retries %v", rec.attempts, rec.conflicts, rec.retries)
	}
}

func TestWatchRevisionMismatchNeverRetried(t *testing.T) {
	for _, req := range []strategy.MetaRequest{
		func() strategy.MetaRequest { r := updateReq(); r.MajorRevision = 3; return r }(),
		func() strategy.MetaRequest { r := updateReq(); r.Items[0].Revision = 1; return r }(),
	} {
		w, m, rec := watchOn(t, 5)
		var keys []string
		watchThat(m, 1000, &keys)
		_, err := w.Mutate(context.Background(), req)
		if !errors.Is(err, core.ErrConflict) {
			t.Fatalf("mismatch: %v", err)
		}
		if rec.attempts != 1 || rec.conflicts != 1 || len(rec.retries) != 0 {
			t.Fatalf("attempts %d conflicts %d retries %v", rec.attempts, rec.conflicts, rec.retries)
		}
	}
}

func TestWatchOtherErrorsNotRetried(t *testing.T) {
	w, m, rec := watchOn(t, 5)
	boom := errors.New("connection reset")
	m.EXPECT().Watch(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil, boom).Times(1)
	if _, err := w.Mutate(context.Background(), updateReq()); !errors.Is(err, boom) {
		t.Fatalf("backend error: %v", err)
	}
	if rec.attempts != 1 || rec.conflicts != 0 {
		t.Fatalf("attempts %d conflicts %d", rec.attempts, rec.conflicts)
	}
}

func TestWatchBackoffHonoursContext(t *testing.T) {
	w, m, _ := watchOn(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	m.EXPECT().Watch(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(context.Context, []string, backend.TxFunc) ([]backend.Reply, error) {
			cancel()
			return nil, backend.ErrTxAborted
		}).Times(1)
	if _, err := w.Mutate(ctx, updateReq()); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled during backoff: %v", err)
	}
}

func TestWatchWatchesLockAndNeedsActor(t *testing.T) {
	w, m, rec := watchOn(t, 5)
	req := updateReq()
	req.LockName = "L"
	// No actor: ErrLocked before any round trip.
	if _, err := w.Mutate(context.Background(), req); !errors.Is(err, core.ErrLocked) {
		t.Fatalf("lock without actor: %v", err)
	}
	req.Actor = "u"
	var keys []string
	watchThat(m, 0, &keys)
	// The lock is missing (storedTx answers GET with nil).
	if _, err := w.Mutate(context.Background(), req); !errors.Is(err, core.ErrLocked) {
		t.Fatalf("missing lock: %v", err)
	}
	if !slices.Equal(keys, []string{"t:{chan:room:r1}:meta", "t:{chan:room:r1}:lock:L"}) {
		t.Fatalf("watched %v", keys)
	}
	if rec.attempts != 1 {
		t.Fatalf("attempts %d", rec.attempts)
	}
}

func TestWatchSpecParams(t *testing.T) {
	if _, err := strategy.NewMetadata("watch?retries=-1", strategy.Env{}); !errors.Is(err, core.ErrInvalidArgument) {
		t.Fatalf("negative retries: %v", err)
	}
	if _, err := strategy.NewMetadata("watch?tries=3", strategy.Env{}); err == nil || !strings.Contains(err.Error(), "retries") {
		t.Fatalf("unknown parameter: %v", err)
	}
	if _, err := strategy.NewMetadata("lua?retries=3", strategy.Env{}); err == nil {
		t.Fatal("lua accepted a parameter")
	}
	for _, spec := range []string{"watch", "watch?retries=0", "lua"} {
		if _, err := strategy.NewMetadata(spec, strategy.Env{}); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
	}
}
