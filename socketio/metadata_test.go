package socketio_test

import (
	"testing"
	"time"

	"github.com/realtime-message/presence/internal/redistest"
)

// metadataSuite covers every metadata:* event of docs/PROTOCOL.md, its acks,
// its error codes and metadata:event.
func metadataSuite(t *testing.T, n *node) {
	t.Run("SetUpdateRemoveGet", func(t *testing.T) { testMetadataCRUD(t, n) })
	t.Run("Conflicts", func(t *testing.T) { testMetadataConflicts(t, n) })
	t.Run("Invalid", func(t *testing.T) { testMetadataInvalid(t, n) })
	t.Run("Locks", func(t *testing.T) { testLocks(t, n) })
}

func TestMetadataEmbedded(t *testing.T) {
	metadataSuite(t, startNode(t, redistest.Embedded(t), nodeConfig{}))
}

func ch(name string, extra map[string]any) map[string]any {
	m := map[string]any{"channelName": name, "channelType": "doc"}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func metaEvent(op string, major int64) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["operation"] == op && num(m["majorRevision"]) == major }
}

func testMetadataCRUD(t *testing.T, n *node) {
	name := "chan-" + redistest.Prefix(t)
	a := dial(t, n.url)
	b := dial(t, n.url)
	// Both are in the Socket.IO room named after the channel, so both get
	// metadata:event.
	a.ok("presence:join", map[string]any{"roomId": name, "userId": "alice"})
	b.ok("presence:join", map[string]any{"roomId": name, "userId": "bob"})

	// Get of a channel without metadata.
	g := a.ok("metadata:getChannel", ch(name, nil))
	if num(g["majorRevision"]) != 0 || num(g["totalCount"]) != 0 || len(g["metadata"].(map[string]any)) != 0 {
		t.Fatalf("empty get: %v", g)
	}

	before := time.Now().UnixMilli()
	s := a.ok("metadata:setChannel", ch(name, map[string]any{
		"data":    []any{map[string]any{"key": "title", "value": "Hello"}, map[string]any{"key": "body", "value": "x", "revision": 7}, map[string]any{"key": "empty"}},
		"options": map[string]any{"addTimestamp": true, "addUserId": true},
	}))
	for _, k := range []string{"timestamp", "channelName", "channelType", "totalCount", "majorRevision", "metadata"} {
		if _, ok := s[k]; !ok {
			t.Errorf("set ack %v lacks %s", s, k)
		}
	}
	if s["channelName"] != name || s["channelType"] != "doc" || num(s["totalCount"]) != 3 || num(s["majorRevision"]) != 1 || num(s["timestamp"]) < before {
		t.Fatalf("set ack %v", s)
	}
	md := s["metadata"].(map[string]any)
	title := md["title"].(map[string]any)
	if title["value"] != "Hello" || num(title["revision"]) != 1 || title["authorUid"] != "alice" {
		t.Fatalf("title %v", title)
	}
	if ts, _ := title["updated"].(string); len(ts) != len("2006-01-02T15:04:05.000Z") || ts[len(ts)-1] != 'Z' {
		t.Fatalf("updated %q is not ISO-8601 UTC with ms", title["updated"])
	}
	if num(md["body"].(map[string]any)["revision"]) != 7 {
		t.Fatalf("body %v, want the given revision 7", md["body"])
	}
	if e := md["empty"].(map[string]any); e["value"] != "" {
		t.Fatalf("item without value: %v", e)
	}
	for _, c := range []*client{a, b} {
		ev := c.waitEvent("metadata:event", metaEvent("set", 1))
		if ev["channelName"] != name || ev["channelType"] != "doc" || ev["authorUid"] != "alice" || len(ev["items"].([]any)) != 3 {
			t.Fatalf("set event %v", ev)
		}
		item := ev["items"].([]any)[0].(map[string]any)
		for _, k := range []string{"key", "value", "revision"} {
			if _, ok := item[k]; !ok {
				t.Fatalf("event item %v lacks %s", item, k)
			}
		}
		if _, ok := ev["timestamp"]; !ok {
			t.Fatalf("event %v lacks timestamp", ev)
		}
	}

	// Update bumps the item revision and keeps updated/authorUid.
	u := b.ok("metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "title", "value": "Hi", "revision": 1}}}))
	ut := u["metadata"].(map[string]any)["title"].(map[string]any)
	if ut["value"] != "Hi" || num(ut["revision"]) != 2 || ut["authorUid"] != "alice" || ut["updated"] != title["updated"] || num(u["majorRevision"]) != 2 {
		t.Fatalf("update ack %v", u)
	}
	a.waitEvent("metadata:event", metaEvent("update", 2))
	// Re-stamped by bob.
	u = b.ok("metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "title", "value": "Hey"}}, "options": map[string]any{"addUserId": true, "majorRevision": 2}}))
	if got := u["metadata"].(map[string]any)["title"].(map[string]any)["authorUid"]; got != "bob" {
		t.Fatalf("re-stamped authorUid %v, want bob", got)
	}
	ev := a.waitEvent("metadata:event", metaEvent("update", 3))
	if ev["authorUid"] != "bob" {
		t.Fatalf("update event %v", ev)
	}

	// Remove one key, then nothing (no bump), then everything.
	r := a.ok("metadata:removeChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "body"}}}))
	if num(r["majorRevision"]) != 4 || num(r["totalCount"]) != 2 {
		t.Fatalf("remove ack %v", r)
	}
	b.waitEvent("metadata:event", metaEvent("remove", 4))
	r = a.ok("metadata:removeChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "nope"}}}))
	if num(r["majorRevision"]) != 4 || num(r["totalCount"]) != 2 {
		t.Fatalf("remove of nothing bumped: %v", r)
	}
	r = a.ok("metadata:removeChannel", ch(name, nil))
	if num(r["majorRevision"]) != 5 || num(r["totalCount"]) != 0 {
		t.Fatalf("remove all: %v", r)
	}
	b.waitEvent("metadata:event", metaEvent("remove", 5))

	// set with no data clears (and bumps).
	a.ok("metadata:setChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "v"}}}))
	s = a.ok("metadata:setChannel", ch(name, nil))
	if num(s["majorRevision"]) != 7 || num(s["totalCount"]) != 0 {
		t.Fatalf("set without data: %v", s)
	}
	g = b.ok("metadata:getChannel", ch(name, nil))
	if num(g["majorRevision"]) != 7 {
		t.Fatalf("get %v", g)
	}

	// A socket outside the room gets no metadata:event.
	c := dial(t, n.url)
	a.ok("metadata:setChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "v"}}}))
	b.waitEvent("metadata:event", metaEvent("set", 8))
	c.noEvent(200*time.Millisecond, "metadata:event", nil)
}

func testMetadataConflicts(t *testing.T, n *node) {
	name := "chan-" + redistest.Prefix(t)
	a := dial(t, n.url)
	a.ok("metadata:setChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "v"}}}))
	// majorRevision mismatch, on every mutation.
	a.fail("METADATA_CONFLICT", "metadata:setChannel", ch(name, map[string]any{"data": []any{}, "options": map[string]any{"majorRevision": 5}}))
	a.fail("METADATA_CONFLICT", "metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "w"}}, "options": map[string]any{"majorRevision": 0}}))
	a.fail("METADATA_CONFLICT", "metadata:removeChannel", ch(name, map[string]any{"options": map[string]any{"majorRevision": 9}}))
	// Item revision mismatch. The ack carries the record it lost to.
	f := a.fail("METADATA_CONFLICT", "metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "w", "revision": 2}}}))
	cur, _ := f["current"].(map[string]any)
	if cur == nil || num(cur["majorRevision"]) != 1 || num(cur["totalCount"]) != 1 || cur["channelName"] != name {
		t.Fatalf("conflict ack %v: current must be the stored record", f)
	}
	if k, _ := cur["metadata"].(map[string]any)["k"].(map[string]any); k == nil || k["value"] != "v" || num(k["revision"]) != 1 {
		t.Fatalf("conflict ack %v: current.metadata.k must be v@1", f)
	}
	// Negative = unchecked.
	a.ok("metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "w", "revision": -1}}, "options": map[string]any{"majorRevision": -1}}))
	// The right majorRevision passes.
	a.ok("metadata:setChannel", ch(name, map[string]any{"data": []any{}, "options": map[string]any{"majorRevision": 2}}))
	// Update of a channel with no metadata, of an unknown key.
	a.fail("METADATA_INVALID", "metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "w"}}}))
	a.ok("metadata:setChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "v"}}}))
	a.fail("METADATA_INVALID", "metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "other", "value": "w"}}}))
}

func testMetadataInvalid(t *testing.T, n *node) {
	name := "chan-" + redistest.Prefix(t)
	a := dial(t, n.url)
	for _, ev := range []string{"metadata:setChannel", "metadata:updateChannel", "metadata:removeChannel", "metadata:getChannel"} {
		a.fail("METADATA_INVALID", ev)
		a.fail("METADATA_INVALID", ev, "x")
		a.fail("METADATA_INVALID", ev, map[string]any{"channelType": "doc"})
		a.fail("METADATA_INVALID", ev, map[string]any{"channelName": name})
		a.fail("METADATA_INVALID", ev, map[string]any{"channelName": "", "channelType": "doc"})
		a.fail("METADATA_INVALID", ev, map[string]any{"channelName": name, "channelType": 1})
		a.fail("METADATA_INVALID", ev, map[string]any{"channelName": "a}b", "channelType": "doc"})
		a.fail("METADATA_INVALID", ev, map[string]any{"channelName": name, "channelType": "a:b"})
	}
	for _, ev := range []string{"metadata:setChannel", "metadata:updateChannel", "metadata:removeChannel"} {
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": "x"}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{"x"}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"value": "v"}}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": ""}}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": 1}}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "revision": 1.5}}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k"}, map[string]any{"key": "k"}}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k"}}, "options": "x"}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k"}}, "options": map[string]any{"majorRevision": "1"}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k"}}, "options": map[string]any{"lockName": ""}}))
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"data": []any{map[string]any{"key": "k"}}, "options": map[string]any{"addTimestamp": "yes"}}))
	}
	// update needs at least one item.
	a.fail("METADATA_INVALID", "metadata:updateChannel", ch(name, nil))
	a.fail("METADATA_INVALID", "metadata:updateChannel", ch(name, map[string]any{"data": []any{}}))
	// addUserId without an acting user (not joined, not authenticated).
	a.fail("METADATA_INVALID", "metadata:setChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k"}}, "options": map[string]any{"addUserId": true}}))
	// Nothing was written by any of the above.
	if g := a.ok("metadata:getChannel", ch(name, nil)); num(g["majorRevision"]) != 0 {
		t.Fatalf("invalid payloads wrote: %v", g)
	}
}

func testLocks(t *testing.T, n *node) {
	name := "chan-" + redistest.Prefix(t)
	lock := func(extra map[string]any) map[string]any {
		m := ch(name, map[string]any{"lockName": "edit"})
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	a := dial(t, n.url)
	b := dial(t, n.url)

	// No acting user yet: METADATA_LOCK.
	a.fail("METADATA_LOCK", "metadata:acquireLock", lock(map[string]any{"ttlMs": 5000}))
	a.fail("METADATA_LOCK", "metadata:releaseLock", lock(nil))
	a.fail("METADATA_LOCK", "metadata:setChannel", ch(name, map[string]any{"data": []any{}, "options": map[string]any{"lockName": "edit"}}))

	a.ok("presence:join", map[string]any{"roomId": name, "userId": "alice"})
	b.ok("presence:join", map[string]any{"roomId": name, "userId": "bob"})

	// Free lock: owner and expiresAt are null.
	g := a.ok("metadata:getLock", lock(nil))
	if g["lockName"] != "edit" || g["owner"] != nil || g["expiresAt"] != nil || g["fencingToken"] != nil {
		t.Fatalf("free lock %v", g)
	}
	if _, ok := g["owner"]; !ok {
		t.Fatalf("free lock %v: owner must be present as null", g)
	}
	// Without the lock the lock-guarded mutation fails.
	a.fail("METADATA_LOCK", "metadata:setChannel", ch(name, map[string]any{"data": []any{}, "options": map[string]any{"lockName": "edit"}}))

	now := time.Now().UnixMilli()
	acq := a.ok("metadata:acquireLock", lock(map[string]any{"ttlMs": 5000}))
	if acq["lockName"] != "edit" || acq["owner"] != "alice" || num(acq["expiresAt"]) < now+4000 || num(acq["expiresAt"]) > now+6000 || num(acq["fencingToken"]) <= 0 {
		t.Fatalf("acquire ack %v", acq)
	}
	tok := num(acq["fencingToken"])
	g = b.ok("metadata:getLock", lock(nil))
	if g["owner"] != "alice" || num(g["expiresAt"]) < now+3000 || num(g["fencingToken"]) != tok {
		t.Fatalf("held lock %v (token %v)", g, tok)
	}
	// Held by alice: bob can't take, renew, release or write under it.
	b.fail("METADATA_LOCK", "metadata:acquireLock", lock(map[string]any{"ttlMs": 5000}))
	b.fail("METADATA_LOCK", "metadata:renewLock", lock(map[string]any{"ttlMs": 5000}))
	b.fail("METADATA_LOCK", "metadata:releaseLock", lock(nil))
	b.fail("METADATA_LOCK", "metadata:setChannel", ch(name, map[string]any{"data": []any{}, "options": map[string]any{"lockName": "edit"}}))
	// Alice can.
	a.ok("metadata:setChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "v"}}, "options": map[string]any{"lockName": "edit"}}))
	r := a.ok("metadata:renewLock", lock(map[string]any{"ttlMs": 60000}))
	if r["owner"] != "alice" || num(r["expiresAt"]) < now+50000 || num(r["fencingToken"]) != tok {
		t.Fatalf("renew ack %v: want fencingToken %d kept", r, tok)
	}
	fenced := func(token int64) map[string]any {
		return ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "f"}}, "options": map[string]any{"lockName": "edit", "fencingToken": token}})
	}
	a.ok("metadata:updateChannel", fenced(tok))
	re := a.ok("metadata:acquireLock", lock(map[string]any{"ttlMs": 5000})) // re-acquire by the owner
	if num(re["fencingToken"]) <= tok {
		t.Fatalf("re-acquire ack %v: fencingToken not above %d", re, tok)
	}
	// The older token is fenced off, atomically with the write.
	a.fail("METADATA_LOCK", "metadata:updateChannel", fenced(tok))
	a.ok("metadata:updateChannel", fenced(num(re["fencingToken"])))
	a.fail("METADATA_INVALID", "metadata:updateChannel", ch(name, map[string]any{"data": []any{map[string]any{"key": "k", "value": "f"}}, "options": map[string]any{"fencingToken": tok}}))
	a.fail("METADATA_INVALID", "metadata:updateChannel", fenced(0))
	if rel := a.ok("metadata:releaseLock", lock(nil)); len(rel) != 1 {
		t.Fatalf("release ack %v, want just ok", rel)
	}
	a.fail("METADATA_LOCK", "metadata:releaseLock", lock(nil)) // not held any more
	a.fail("METADATA_LOCK", "metadata:renewLock", lock(map[string]any{"ttlMs": 5000}))
	b.ok("metadata:acquireLock", lock(map[string]any{"ttlMs": 5000}))

	// Validation.
	for _, ev := range []string{"metadata:acquireLock", "metadata:renewLock"} {
		a.fail("METADATA_INVALID", ev, lock(nil))                            // no ttlMs
		a.fail("METADATA_INVALID", ev, lock(map[string]any{"ttlMs": 0}))     // ≤ 0
		a.fail("METADATA_INVALID", ev, lock(map[string]any{"ttlMs": -5}))    // ≤ 0
		a.fail("METADATA_INVALID", ev, lock(map[string]any{"ttlMs": 1.5}))   // not an int
		a.fail("METADATA_INVALID", ev, lock(map[string]any{"ttlMs": "100"})) // not a number
	}
	for _, ev := range []string{"metadata:acquireLock", "metadata:renewLock", "metadata:releaseLock", "metadata:getLock"} {
		a.fail("METADATA_INVALID", ev)
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"ttlMs": 100}))                             // no lockName
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"lockName": "", "ttlMs": 100}))             // empty
		a.fail("METADATA_INVALID", ev, ch(name, map[string]any{"lockName": "a{", "ttlMs": 100}))           // hash tag
		a.fail("METADATA_INVALID", ev, map[string]any{"channelName": name, "lockName": "l", "ttlMs": 100}) // no type
	}

	// A lock expires by its TTL.
	a.ok("metadata:acquireLock", ch(name, map[string]any{"lockName": "short", "ttlMs": 100}))
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := a.ok("metadata:getLock", ch(name, map[string]any{"lockName": "short"}))
		if g["owner"] == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock with ttl 100ms still held: %v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
