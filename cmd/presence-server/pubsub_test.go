package main

import (
	"io"
	"strings"
	"testing"
)

// The pub/sub mode comes from PRESENCE_PUBSUB or -pubsub (the flag wins),
// the server logs the mode it resolved, and a mode the backend or server
// cannot run stops it at start-up.
func TestPubSubSetting(t *testing.T) {
	t.Setenv("PRESENCE_PUBSUB", "channels")
	s, err := loadSettings(nil, io.Discard)
	if err != nil || s.Presence.PubSub != "channels" {
		t.Fatalf("PRESENCE_PUBSUB=channels: %q, %v", s.Presence.PubSub, err)
	}
	s, err = loadSettings([]string{"-pubsub", "pattern"}, io.Discard)
	if err != nil || s.Presence.PubSub != "pattern" {
		t.Fatalf("-pubsub pattern over PRESENCE_PUBSUB=channels: %q, %v", s.Presence.PubSub, err)
	}

	p := startServer(t, "PRESENCE_PUBSUB=pattern")
	if l := grepLines(strings.Join(p.logLines(), "\n"), "pub/sub mode"); !strings.Contains(l, "pubsub=pattern") || !strings.Contains(l, "configured=pattern") {
		t.Errorf("start-up log's pub/sub line %q, want pubsub=pattern configured=pattern", l)
	}

	// Sharded pub/sub needs SPUBLISH, which the embedded Redis lacks;
	// an unknown mode is refused by name.
	for _, mode := range []string{"sharded", "spublish"} {
		var out, errb strings.Builder
		t.Setenv("PRESENCE_PUBSUB", mode)
		t.Setenv("PORT", "0")
		if code := run(nil, &out, &errb); code == 0 || !strings.Contains(errb.String(), "PubSub") || !strings.Contains(errb.String(), mode) {
			t.Errorf("PRESENCE_PUBSUB=%s: exit %d, output:\n%s", mode, code, errb.String())
		}
	}
}
