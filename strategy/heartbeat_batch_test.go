package strategy_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/realtime-message/presence/core"

	"go.uber.org/mock/gomock"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendmock"
	"github.com/realtime-message/presence/luasrc"
	"github.com/realtime-message/presence/strategy"
)

func batcherOn(t *testing.T, window time.Duration, max int) (*strategy.Batcher, *backendmock.MockClient) {
	ctrl := gomock.NewController(t)
	m := backendmock.NewMockClient(ctrl)
	env := strategy.Env{Client: m, Scripts: backend.NewScripts(m), Keys: core.Keys{Prefix: "t"}, TTL: time.Second}
	b := strategy.NewBatcher(env, window, max, 5*time.Second)
	t.Cleanup(func() { b.Close() })
	return b, m
}

func okReply(changed, epoch int64) backend.Reply {
	return backend.ArrReply(backend.IntReply(1), backend.IntReply(changed), backend.IntReply(epoch))
}

type outcome struct {
	res strategy.HeartbeatResult
	err error
}

// beat runs n heartbeats concurrently and waits until all are buffered.
func beat(t *testing.T, b *strategy.Batcher, reqs ...strategy.HeartbeatRequest) []chan outcome {
	out := make([]chan outcome, len(reqs))
	for i, r := range reqs {
		out[i] = make(chan outcome, 1)
		go func() {
			res, err := b.Heartbeat(context.Background(), r)
			out[i] <- outcome{res, err}
		}()
		// Queue in order, so replies map to callers deterministically.
		if i == len(reqs)-1 {
			break
		}
		deadline := time.Now().Add(5 * time.Second)
		for b.BufferSize() < i+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

func recv(t *testing.T, c chan outcome) outcome {
	t.Helper()
	select {
	case o := <-c:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("caller never answered")
		return outcome{}
	}
}

func TestBatcherAnswersTwoHeartbeatsOfOneConn(t *testing.T) {
	b, m := batcherOn(t, 20*time.Millisecond, 100)
	m.EXPECT().Do(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
		if len(cmds) != 2 {
			t.Errorf("batch of %d, want 2", len(cmds))
		}
		for _, c := range cmds {
			if c.Name != "EVALSHA" || c.Pre[0] != luasrc.Heartbeat.SHA1 || c.Keys[0] != "t:{room:r}:conn:c" {
				t.Errorf("unexpected command %+v", c)
			}
		}
		return []backend.Reply{okReply(0, 7), okReply(1, 9)}, nil
	}).Times(1)
	req := strategy.HeartbeatRequest{Room: "r", Conn: "c", NowMs: 1}
	outs := beat(t, b, req, req)
	if o := recv(t, outs[0]); o.err != nil || o.res != (strategy.HeartbeatResult{Changed: false, Epoch: 7}) {
		t.Fatalf("first: %+v", o)
	}
	if o := recv(t, outs[1]); o.err != nil || o.res != (strategy.HeartbeatResult{Changed: true, Epoch: 9}) {
		t.Fatalf("second: %+v", o)
	}
	if b.BufferSize() != 0 {
		t.Fatalf("buffer %d after flush", b.BufferSize())
	}
}

func TestBatcherCloseFailsPendingWithErrClosed(t *testing.T) {
	b, _ := batcherOn(t, time.Hour, 100) // no Do expected: gomock fails the test on any call
	outs := beat(t, b, strategy.HeartbeatRequest{Room: "r", Conn: "a"}, strategy.HeartbeatRequest{Room: "r", Conn: "b"})
	for deadline := time.Now().Add(5 * time.Second); b.BufferSize() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if b.BufferSize() != 2 {
		t.Fatalf("buffer %d", b.BufferSize())
	}
	b.Close()
	for _, c := range outs {
		if o := recv(t, c); !errors.Is(o.err, core.ErrClosed) {
			t.Fatalf("pending caller got %+v", o)
		}
	}
	if _, err := b.Heartbeat(context.Background(), strategy.HeartbeatRequest{Room: "r", Conn: "a"}); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestBatcherPipelineErrorReachesEveryCaller(t *testing.T) {
	b, m := batcherOn(t, 20*time.Millisecond, 100)
	boom := errors.New("connection reset")
	m.EXPECT().Do(gomock.Any(), gomock.Any()).Return(nil, boom).Times(1)
	outs := beat(t, b, strategy.HeartbeatRequest{Room: "r", Conn: "a"}, strategy.HeartbeatRequest{Room: "r", Conn: "b"},
		strategy.HeartbeatRequest{Room: "q", Conn: "c"})
	for i, c := range outs {
		if o := recv(t, c); !errors.Is(o.err, boom) {
			t.Fatalf("caller %d got %+v", i, o)
		}
	}
}

func TestBatcherPerCallerOutcomes(t *testing.T) {
	b, m := batcherOn(t, 20*time.Millisecond, 100)
	m.EXPECT().Do(gomock.Any(), gomock.Any()).Return([]backend.Reply{
		backend.ArrReply(backend.IntReply(0), backend.StrReply("STALE"), backend.IntReply(5)),
		backend.ArrReply(backend.IntReply(0), backend.StrReply("NOTFOUND")),
		okReply(1, 3),
	}, nil).Times(1)
	outs := beat(t, b, strategy.HeartbeatRequest{Room: "r", Conn: "a"}, strategy.HeartbeatRequest{Room: "r", Conn: "b"},
		strategy.HeartbeatRequest{Room: "r", Conn: "c"})
	if o := recv(t, outs[0]); !errors.Is(o.err, core.ErrStaleEpoch) {
		t.Fatalf("a: %+v", o)
	}
	if o := recv(t, outs[1]); !errors.Is(o.err, core.ErrConnNotFound) {
		t.Fatalf("b: %+v", o)
	}
	if o := recv(t, outs[2]); o.err != nil || !o.res.Changed {
		t.Fatalf("c: %+v", o)
	}
}

func TestBatcherFlushesOnMaxBeforeWindow(t *testing.T) {
	b, m := batcherOn(t, time.Hour, 3)
	var mu sync.Mutex
	sizes := []int{}
	m.EXPECT().Do(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
		mu.Lock()
		sizes = append(sizes, len(cmds))
		mu.Unlock()
		r := make([]backend.Reply, len(cmds))
		for i := range r {
			r[i] = okReply(0, 1)
		}
		return r, nil
	}).Times(1)
	outs := beat(t, b, strategy.HeartbeatRequest{Room: "r", Conn: "a"}, strategy.HeartbeatRequest{Room: "r", Conn: "b"},
		strategy.HeartbeatRequest{Room: "r", Conn: "c"})
	for _, c := range outs {
		if o := recv(t, c); o.err != nil {
			t.Fatal(o.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 1 || sizes[0] != 3 {
		t.Fatalf("batches %v, want one of 3 (the hour-long window never elapsed)", sizes)
	}
}

func TestBatcherNoScriptCostsOneRetry(t *testing.T) {
	b, m := batcherOn(t, 10*time.Millisecond, 100)
	gomock.InOrder(
		m.EXPECT().Do(gomock.Any(), gomock.Any()).Return([]backend.Reply{backend.ErrReply("NOSCRIPT No matching script. Please use EVAL.")}, nil),
		m.EXPECT().Do(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
			if len(cmds) != 1 || cmds[0].Name != "EVAL" || cmds[0].Pre[0] != luasrc.Heartbeat.Source {
				t.Errorf("fallback %+v", cmds)
			}
			return []backend.Reply{okReply(0, 4)}, nil
		}),
	)
	outs := beat(t, b, strategy.HeartbeatRequest{Room: "r", Conn: "a"})
	if o := recv(t, outs[0]); o.err != nil || o.res.Epoch != 4 {
		t.Fatalf("%+v", o)
	}
}
