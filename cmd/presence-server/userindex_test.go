package main

import (
	"io"
	"testing"

	"github.com/realtime-message/presence/internal/siotest"
)

// PRESENCE_USER_INDEX=0 (or -user-index=false, the flag winning) turns the
// user index off: joins still work, and a user query is refused with
// PRESENCE_INVALID instead of answering from an index nobody writes.
func TestUserIndexSetting(t *testing.T) {
	t.Setenv("PRESENCE_USER_INDEX", "0")
	s, err := loadSettings(nil, io.Discard)
	if err != nil || !s.Presence.DisableUserIndex {
		t.Fatalf("PRESENCE_USER_INDEX=0: DisableUserIndex %v, %v", s.Presence.DisableUserIndex, err)
	}
	s, err = loadSettings([]string{"-user-index=true"}, io.Discard)
	if err != nil || s.Presence.DisableUserIndex {
		t.Fatalf("-user-index=true over PRESENCE_USER_INDEX=0: DisableUserIndex %v, %v", s.Presence.DisableUserIndex, err)
	}
	t.Setenv("PRESENCE_USER_INDEX", "maybe")
	if _, err := loadSettings(nil, io.Discard); err == nil {
		t.Fatal("PRESENCE_USER_INDEX=maybe was accepted")
	}
	t.Setenv("PRESENCE_USER_INDEX", "")
	if s, err := loadSettings(nil, io.Discard); err != nil || s.Presence.DisableUserIndex {
		t.Fatalf("default: DisableUserIndex %v, %v; want the index on", s.Presence.DisableUserIndex, err)
	}

	for _, tc := range []struct {
		env  string
		code string // the presence:user ack's code; "" for ok
	}{
		{"PRESENCE_USER_INDEX=0", "PRESENCE_INVALID"},
		{"PRESENCE_USER_INDEX=1", ""},
	} {
		t.Run(tc.env, func(t *testing.T) {
			p := startServer(t, tc.env)
			c := dial(t, p.url, siotest.Options{})
			mustOK(t, c, "presence:join", map[string]any{"roomId": "r", "userId": "u"})
			a := call(t, c, "presence:user", map[string]any{"userId": "u"})
			switch {
			case tc.code == "" && a["ok"] != true:
				t.Fatalf("presence:user with the index on: %v", a)
			case tc.code != "" && (a["ok"] != false || a["code"] != tc.code):
				t.Fatalf("presence:user with the index off: %v, want code %s", a, tc.code)
			}
		})
	}
}
