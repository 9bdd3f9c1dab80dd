package socketio_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/realtime-message/presence/internal/redistest"
)

// refused calls event with a payload that must be refused with code, and
// checks that the message shows no internals: Redis's prefix, the
// library's, Go type names.
func (c *client) refused(code, event string, payload any) string {
	c.t.Helper()
	a := c.fail(code, event, payload)
	msg, _ := a["error"].(string)
	for _, bad := range []string{"redis:", "presence:", "EPOCH_EXHAUSTED", "ERR ", "*types.", "interface {}", "map[string]", "Go value"} {
		if strings.Contains(msg, bad) {
			c.t.Fatalf("%s %v: the message %q shows %q", event, payload, msg, bad)
		}
	}
	return msg
}

// Issue 11 (6): hostile payloads are refused with the event's INVALID code,
// write nothing, and leave the conn id, the room and the channel usable.
func TestHostilePayloads(t *testing.T) {
	n := startNode(t, redistest.Standalone(t), nodeConfig{})
	room := "room-" + redistest.Prefix(t)
	a := dial(t, n.url)
	j := a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice", "state": map[string]any{"s": 1}})
	epoch := num(j["self"].(map[string]any)["epoch"])
	a.ok("metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": "keep", "value": "v"}}}))
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }

	// A misspelt field is refused, not ignored with its default applied:
	// setChannel with items instead of data would have wiped the channel.
	a.refused("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"items": []any{}}))
	a.refused("METADATA_INVALID", "metadata:removeChannel", ch(room, map[string]any{"keys": []any{"keep"}}))
	a.refused("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": "k", "val": "v"}}}))
	a.refused("METADATA_INVALID", "metadata:updateChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": "keep", "value": "w"}},
		"options": map[string]any{"majorRevison": 0}}))
	a.refused("METADATA_INVALID", "metadata:getChannel", ch(room, map[string]any{"data": []any{}}))
	a.refused("METADATA_INVALID", "metadata:acquireLock", ch(room, map[string]any{"lockName": "l", "ttl": 1000}))
	a.refused("METADATA_INVALID", "metadata:releaseLock", ch(room, map[string]any{"lockName": "l", "ttlMs": 1000}))
	a.refused("PRESENCE_INVALID", "presence:join", map[string]any{"roomId": room, "userId": "alice", "sate": map[string]any{}})
	a.refused("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": epoch, "patch": map[string]any{"s": 2}})

	// Control characters in item keys and state keys, as in ids.
	for _, k := range []string{"a\x00b", "\x01", "line\nbreak"} {
		a.refused("METADATA_INVALID", "metadata:setChannel", ch(room, map[string]any{"data": []any{map[string]any{"key": k, "value": "v"}}}))
		a.refused("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"patchState": map[string]any{k: 1}})
	}

	// Lone surrogates, which the parser would turn into U+FFFD, in every
	// kind of string a payload carries.
	for _, bad := range []string{`\ud800`, `x\udfff`, `\ud800\u0041`} {
		s := `"` + bad + `"`
		a.refused("PRESENCE_INVALID", "presence:join", raw(`{"roomId":`+q(room)+`,"userId":`+s+`}`))
		a.refused("PRESENCE_INVALID", "presence:heartbeat", raw(`{"patchState":{"t":`+s+`}}`))
		a.refused("PRESENCE_INVALID", "presence:heartbeat", raw(`{"patchState":{`+s+`:1}}`))
		a.refused("PRESENCE_INVALID", "presence:heartbeat", raw(`{"patchState":{"t":{"deep":[`+s+`]}}}`))
		a.refused("METADATA_INVALID", "metadata:setChannel", raw(`{"channelName":`+q(room)+`,"channelType":"doc","data":[{"key":`+s+`,"value":"v"}]}`))
		a.refused("METADATA_INVALID", "metadata:setChannel", raw(`{"channelName":`+q(room)+`,"channelType":"doc","data":[{"key":"k","value":`+s+`}]}`))
		a.refused("METADATA_INVALID", "metadata:getChannel", raw(`{"channelName":`+s+`,"channelType":"doc"}`))
	}

	// A lock's TTL is capped; 2^53-1 ms would be a lock until the year 287,000.
	for _, ttl := range []float64{1<<53 - 1, 10*60*1000 + 1} {
		a.refused("METADATA_INVALID", "metadata:acquireLock", ch(room, map[string]any{"lockName": "l", "ttlMs": ttl}))
	}
	if l := a.ok("metadata:getLock", ch(room, map[string]any{"lockName": "l"})); l["owner"] != nil {
		t.Fatalf("a refused acquire took the lock: %v", l)
	}

	// An epoch far ahead of the clock is refused, so the conn id stays
	// usable after a leave.
	msg := a.refused("PRESENCE_INVALID", "presence:heartbeat", map[string]any{"epoch": float64(1<<53 - 1)})
	if !strings.Contains(msg, "epoch") {
		t.Fatalf("the refusal %q does not say what is wrong", msg)
	}
	hb := a.ok("presence:heartbeat", map[string]any{"epoch": epoch})
	if num(hb["epoch"]) != epoch {
		t.Fatalf("heartbeat after the refusals: %v, want epoch %d", hb, epoch)
	}
	a.ok("presence:leave")
	j2 := a.ok("presence:join", map[string]any{"roomId": room, "userId": "alice"})
	if e := num(j2["self"].(map[string]any)["epoch"]); e <= epoch {
		t.Fatalf("rejoin epoch %d, not above %d", e, epoch)
	}

	got := a.ok("metadata:getChannel", ch(room, nil))
	md, _ := got["metadata"].(map[string]any)
	if len(md) != 1 || md["keep"] == nil || num(got["majorRevision"]) != 1 {
		t.Fatalf("the refused calls changed the channel: %v", got)
	}
}
