package strategy_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/strategy"
)

// meta_mutate.lua returns the hash it read with its write applied, not the
// hash read again: what it returns must be what is stored, for every
// operation. The set writes 300 stamped items, an HSET of 2,402 arguments,
// which the script issues in slices.
func TestLuaMetadataReturnsWhatIsStored(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, srv *redistest.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := rueidis.New(ctx, rueidis.Options{Addrs: srv.Addrs})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		keys := core.Keys{Prefix: redistest.Prefix(t)}
		m := strategy.NewLuaMetadata(strategy.Env{Client: c, Scripts: backend.NewScripts(c), Keys: keys})
		const typ, name = "room", "r1"
		stored := func() core.MetaRecord {
			t.Helper()
			r, err := c.Do(ctx, backend.K("HGETALL", keys.Meta(typ, name)))
			if err != nil {
				t.Fatal(err)
			}
			rec, err := core.ParseMetaReply(r[0])
			if err != nil {
				t.Fatal(err)
			}
			return rec
		}
		now := int64(1_700_000_000_000)
		req := func(op strategy.MetaOp, major int64, items ...strategy.MetaItem) strategy.MetaRequest {
			now += 1000
			return strategy.MetaRequest{Op: op, Type: typ, Name: name, Items: items, MajorRevision: major,
				Actor: "u1", AddTimestamp: true, AddUserID: true, NowMs: now}
		}
		item := func(k string) strategy.MetaItem { return strategy.MetaItem{Key: k, Value: "x-" + k, Revision: -1} }
		var many []strategy.MetaItem
		for i := range 300 {
			many = append(many, item(fmt.Sprintf("k%03d", i)))
		}
		upd := req(strategy.OpUpdate, 1, item("k007"), item("k100"))
		upd.AddUserID, upd.Actor = false, "" // keeps the authors the set wrote
		steps := []struct {
			name  string
			req   strategy.MetaRequest
			major int64 // majorRevision afterwards
			items int   // items afterwards
		}{
			{"set 300 items", req(strategy.OpSet, -1, many...), 1, 300},
			{"update 2 items, new value, stamp, old author", upd, 2, 300},
			{"remove 2 items, one of them named twice, and one unknown", req(strategy.OpRemove, -1, item("k001"), item("k002"), item("k001"), item("nope")), 3, 298},
			{"remove of nothing stored", req(strategy.OpRemove, -1, item("nope")), 3, 298},
			{"set replaces", req(strategy.OpSet, 3, item("a"), strategy.MetaItem{Key: "b", Value: "", Revision: 9}), 4, 2},
			{"remove all", req(strategy.OpRemove, -1), 5, 0},
		}
		for _, s := range steps {
			got, err := m.Mutate(ctx, s.req)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			want := stored()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: returned\n%+v\nstored\n%+v", s.name, got, want)
			}
			if got.MajorRevision != s.major || len(got.Items) != s.items {
				t.Fatalf("%s: majorRevision %d with %d items, want %d with %d", s.name, got.MajorRevision, len(got.Items), s.major, s.items)
			}
		}

		// A conflict carries the record as stored, and writes nothing.
		if _, err := m.Mutate(ctx, req(strategy.OpSet, -1, item("a"), item("b"))); err != nil {
			t.Fatal(err)
		}
		before := stored()
		for _, r := range []strategy.MetaRequest{
			req(strategy.OpUpdate, 1, item("a")),
			req(strategy.OpUpdate, -1, strategy.MetaItem{Key: "b", Value: "y", Revision: 5}),
		} {
			_, err := m.Mutate(ctx, r)
			var ce *core.ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("stale update: %v, want a conflict", err)
			}
			if !reflect.DeepEqual(ce.Record, before) || !reflect.DeepEqual(stored(), before) {
				t.Fatalf("conflict carries %+v; stored %+v, before %+v", ce.Record, stored(), before)
			}
		}
	})
}
