package strategy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/luacall"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/goredis"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/strategy"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestConnKeysAreKeys(t *testing.T) {
	k := core.Keys{Prefix: "p:x"}
	for _, id := range [][2]string{{"r", "c"}, {"a:b:c", "conn:1"}, {"é", "ü:"}} {
		room, conn := id[0], id[1]
		ck := k.ConnKeys(room, conn)
		got := []string{ck.Room(), ck.Conn(), ck.ConnKey(), ck.LastSeen(), ck.ConnMeta(), ck.RoomEvents()}
		want := []string{room, conn, k.Conn(room, conn), k.LastSeen(room), k.ConnMeta(room), k.RoomEvents(room)}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ConnKeys(%q, %q) = %q, want %q", room, conn, got, want)
		}
	}
}

func sameData(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// With keys that fit the request, HeartbeatEval sends the very strings
// ConnKeys built: nothing is concatenated. Keys of another conn, room or
// prefix are ignored rather than obeyed.
func TestHeartbeatEvalUsesConnKeys(t *testing.T) {
	k := core.Keys{Prefix: "p"}
	req := strategy.HeartbeatRequest{Room: "r:1", Conn: "c", HasEpoch: true, Epoch: 5, NowMs: 1000,
		Patch: []luacall.KeyValue{{Key: "a", Value: "1"}}}
	plain := strategy.HeartbeatEval(k, 30000, req)
	wantKeys := []string{k.Conn("r:1", "c"), k.LastSeen("r:1"), k.ConnMeta("r:1"), k.Seq("r:1")}
	wantArgs := []string{"c", "1000", "30000", "5", k.RoomEvents("r:1"), "r:1", "PUBLISH", "a", "1"}
	if !reflect.DeepEqual(plain.Keys, wantKeys) || !reflect.DeepEqual(plain.Args, wantArgs) {
		t.Fatalf("HeartbeatEval without ConnKeys: %q %q", plain.Keys, plain.Args)
	}

	ck := k.ConnKeys("r:1", "c")
	req.ConnKeys = ck
	e := strategy.HeartbeatEval(k, 30000, req)
	if !reflect.DeepEqual(e.Keys, wantKeys) || !reflect.DeepEqual(e.Args, wantArgs) {
		t.Fatalf("HeartbeatEval with ConnKeys: %q %q", e.Keys, e.Args)
	}
	if !sameData(e.Keys[0], ck.ConnKey()) || !sameData(e.Keys[1], ck.LastSeen()) || !sameData(e.Keys[2], ck.ConnMeta()) ||
		!sameData(e.Keys[3], ck.Seq()) ||
		!sameData(e.Args[4], ck.RoomEvents()) {
		t.Fatal("HeartbeatEval built keys although ConnKeys were given")
	}

	for _, other := range []*core.ConnKeys{
		k.ConnKeys("r:1", "d"), k.ConnKeys("r:2", "c"), core.Keys{Prefix: "q"}.ConnKeys("r:1", "c"),
	} {
		req.ConnKeys = other
		e := strategy.HeartbeatEval(k, 30000, req)
		if !reflect.DeepEqual(e.Keys, wantKeys) || !reflect.DeepEqual(e.Args, wantArgs) {
			t.Errorf("HeartbeatEval with the keys of %s/%s: %q %q", other.Room(), other.Conn(), e.Keys, e.Args)
		}
	}
}

func flatOf(r backend.Reply) backend.FlatReply {
	if r.Kind != backend.KindArray || len(r.Elems) > backend.MaxFlat {
		return backend.FlatReply{Reply: r}
	}
	f := backend.FlatReply{Reply: backend.Reply{Kind: backend.KindArray}, N: len(r.Elems)}
	copy(f.Inline[:], r.Elems)
	return f
}

// Both parsers agree on every shape, inline or not, and never panic.
func TestParseHeartbeatShapes(t *testing.T) {
	i, s, a := backend.IntReply, backend.StrReply, backend.ArrReply
	for _, tc := range []struct {
		r    backend.Reply
		want strategy.HeartbeatResult
		err  error
		bad  bool
	}{
		{r: a(i(1), i(1), i(42)), want: strategy.HeartbeatResult{Changed: true, Epoch: 42}},
		{r: a(i(1), i(0), s("42")), want: strategy.HeartbeatResult{Epoch: 42}},
		{r: a(i(0), s("NOTFOUND")), err: core.ErrConnNotFound},
		{r: a(i(0), s("STALE"), i(9)), err: core.ErrStaleEpoch},
		{r: backend.ErrReply("ERR boom"), bad: true},
		{r: a(), bad: true},
		{r: a(i(1)), bad: true},
		{r: a(i(1), i(0)), bad: true},
		{r: a(i(1), i(0), i(1), i(2)), bad: true},
		{r: a(i(1), i(0), i(1), i(2), i(3)), bad: true},
		{r: a(i(1), s("x"), i(1)), bad: true},
		{r: a(i(1), i(0), a(i(1))), bad: true},
		{r: a(i(1), i(0), backend.NilReply()), bad: true},
		{r: a(i(0), s("OTHER")), bad: true},
		{r: a(i(0), a()), bad: true},
		{r: a(i(0), backend.NilReply()), bad: true},
		{r: i(1), bad: true},
		{r: s("NOTFOUND"), bad: true},
		{r: backend.NilReply(), bad: true},
	} {
		f := flatOf(tc.r)
		for name, parse := range map[string]func() (strategy.HeartbeatResult, error){
			"reply": func() (strategy.HeartbeatResult, error) { return strategy.ParseHeartbeatReply(tc.r) },
			"flat":  func() (strategy.HeartbeatResult, error) { return strategy.ParseHeartbeatFlat(&f) },
		} {
			got, err := parse()
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Errorf("%s %v: %v, want %v", name, tc.r, err, tc.err)
				}
			case tc.bad:
				if err == nil {
					t.Errorf("%s %v: parsed as %+v, want an error", name, tc.r, got)
				}
			default:
				if err != nil || got != tc.want {
					t.Errorf("%s %v: %+v %v, want %+v", name, tc.r, got, err, tc.want)
				}
			}
		}
	}
}

// Every heartbeat strategy, on both adapters, applies a heartbeat the same
// with ConnKeys, without, and with the keys of another conn: only the
// request's conn is touched.
func TestStrategiesWithConnKeys(t *testing.T) {
	srv := redistest.Standalone(t)
	for _, be := range []string{"rueidis", "goredis"} {
		for _, spec := range []string{"lua", "pipeline", "batch?window=2ms"} {
			t.Run(be+"/"+spec, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				var c backend.Client
				var err error
				if be == "rueidis" {
					c, err = rueidis.New(ctx, rueidis.Options{Addrs: srv.Addrs})
				} else {
					c, err = goredis.New(ctx, goredis.Options{Addrs: srv.Addrs})
				}
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				prefix := redistest.Prefix(t)
				svc, err := presence.New(c, presence.Config{KeyPrefix: prefix, ReaperInterval: -1, TTL: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				defer svc.Close()
				keys := svc.Keys()
				hb, err := strategy.NewHeartbeat(spec, strategy.Env{Client: c, Scripts: backend.NewScripts(c), Keys: keys, TTL: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				defer hb.Close()
				const room = "r:1"
				epochs := map[string]int64{}
				for _, conn := range []string{"a", "b", "x"} {
					j, err := svc.Join(ctx, room, conn, "u-"+conn, json.RawMessage(`{"n":0}`))
					if err != nil {
						t.Fatal(err)
					}
					epochs[conn] = j.Epoch
				}
				before, _ := svc.Snapshot(ctx, room)

				for n, ck := range []*core.ConnKeys{nil, keys.ConnKeys(room, "a"), keys.ConnKeys(room, "b"), keys.ConnKeys("r:2", "a")} {
					req := strategy.HeartbeatRequest{Room: room, Conn: "a", HasEpoch: true, Epoch: epochs["a"],
						NowMs: time.Now().UnixMilli() + int64(n+1)*1000,
						Patch: []luacall.KeyValue{{Key: "n", Value: fmt.Sprint(n + 1)}}, ConnKeys: ck}
					res, err := hb.Heartbeat(ctx, req)
					if err != nil || !res.Changed || res.Epoch != epochs["a"] {
						t.Fatalf("heartbeat %d: %+v %v", n, res, err)
					}
					req.Epoch--
					if _, err := hb.Heartbeat(ctx, req); !errors.Is(err, core.ErrStaleEpoch) {
						t.Fatalf("stale heartbeat %d: %v", n, err)
					}
					req.Conn, req.Epoch = "nobody", 1
					if _, err := hb.Heartbeat(ctx, req); !errors.Is(err, core.ErrConnNotFound) {
						t.Fatalf("heartbeat %d of an unknown conn: %v", n, err)
					}
					snap, err := svc.Snapshot(ctx, room)
					if err != nil || len(snap) != 3 {
						t.Fatalf("snapshot: %v %v", snap, err)
					}
					if got := string(snap[0].State); got != fmt.Sprintf(`{"n":%d}`, n+1) || snap[0].LastSeenMs != req.NowMs {
						t.Fatalf("heartbeat %d: conn a is %+v", n, snap[0])
					}
					if !reflect.DeepEqual(snap[1:], before[1:]) {
						t.Fatalf("heartbeat %d of conn a changed other conns: %+v, were %+v", n, snap[1:], before[1:])
					}
				}
			})
		}
	}
}
