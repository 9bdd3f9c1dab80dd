package presence

import (
	"os"
	"testing"

	"github.com/realtime-message/presence/core"
)

// An expired-key event is read back into the room and conn core.Keys
// built the key from; keys of other prefixes and other room keys (which
// also expire: gone, a lock) are not conns.
func TestParseConnKey(t *testing.T) {
	for _, prefix := range []string{"prs", "a:b", "x*y"} {
		s := &Service{keys: core.Keys{Prefix: prefix}}
		k := s.keys
		for _, tc := range []struct{ room, conn string }{{"r", "c"}, {"a:b", ":conn:x"}, {"é", "}"}} {
			room, conn, ok := s.parseConnKey(k.Conn(tc.room, tc.conn))
			if !ok || room != tc.room || conn != tc.conn {
				t.Errorf("%s: parse(%q) = %q %q %v", prefix, k.Conn(tc.room, tc.conn), room, conn, ok)
			}
		}
		for _, key := range []string{k.Gone("r"), k.LastSeen("r"), k.Lock("t", "n", "l"), k.ActiveRooms(), "other:{room:r}:conn:c", k.ConnPrefix("r")} {
			if room, conn, ok := s.parseConnKey(key); ok {
				t.Errorf("%s: %q parsed as conn %q/%q", prefix, key, room, conn)
			}
		}
	}
}

func TestReaperConfig(t *testing.T) {
	c, err := Config{ReaperInterval: 2e9}.withDefaults()
	if err != nil || c.Reaper != ReaperSweep || c.ReaperBackstopInterval != 2e10 {
		t.Fatalf("defaults: reaper %q backstop %v err %v; want sweep, 10 × interval", c.Reaper, c.ReaperBackstopInterval, err)
	}
	if _, err := (Config{Reaper: "notfy"}).withDefaults(); err == nil {
		t.Fatal("an unknown reaper mode was accepted")
	}
	t.Setenv("PRESENCE_REAPER", "notify")
	t.Setenv("PRESENCE_REAPER_BACKSTOP_MS", "45000")
	t.Setenv("PRESENCE_REAPER_CONFIGURE_NOTIFY", "1")
	c, err = ConfigFromEnv()
	if err != nil || c.Reaper != ReaperNotify || c.ReaperBackstopInterval != 45e9 || !c.ReaperConfigureNotify {
		t.Fatalf("from env: %+v %v", c, err)
	}
	os.Setenv("PRESENCE_REAPER_CONFIGURE_NOTIFY", "maybe")
	if _, err := ConfigFromEnv(); err == nil {
		t.Fatal("PRESENCE_REAPER_CONFIGURE_NOTIFY=maybe was accepted")
	}
}
