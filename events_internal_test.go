package presence

import (
	"testing"

	"github.com/realtime-message/presence/core"
)

// The target of a raw event is read back from the channel name exactly as
// core.Keys builds it, for every id validate.go lets through; channels
// of other prefixes (which a pattern with glob characters in the prefix
// can match) and names no id produces give none.
func TestRawEventTargets(t *testing.T) {
	for _, prefix := range []string{"prs", "a:b", "x*y?[z]"} {
		s := &Service{keys: core.Keys{Prefix: prefix}}
		k := s.keys
		for _, room := range []string{"r", "a:b:c", ":", "room:x}:events", "é €"} {
			got, ok := s.roomTarget(k.RoomEvents(room))
			if room == "room:x}:events" { // '}' is not a valid id: no channel of ours
				if ok {
					t.Errorf("prefix %q: roomTarget of a room id with '}' = %q", prefix, got)
				}
				continue
			}
			if !ok || got != room {
				t.Errorf("prefix %q: roomTarget(%q) = %q %v, want %q", prefix, k.RoomEvents(room), got, ok, room)
			}
		}
		for _, ch := range [][2]string{{"doc", "n"}, {"doc", "a:b:c"}, {"t", ":"}, {"t", "x:{"}} {
			got, ok := s.metaTarget(k.MetaEvents(ch[0], ch[1]))
			if ch[1] == "x:{" {
				if ok {
					t.Errorf("prefix %q: metaTarget of a name with '{' = %q", prefix, got)
				}
				continue
			}
			if !ok || got != ch[1] {
				t.Errorf("prefix %q: metaTarget(%q) = %q %v, want %q", prefix, k.MetaEvents(ch[0], ch[1]), got, ok, ch[1])
			}
		}
		for _, ch := range []string{
			"", prefix, prefix + ":{room:}:events", prefix + ":{room:r}:event", prefix + ":{room:r:events",
			"other:{room:r}:events", prefix + "x:{room:r}:events", prefix + ":{room:r}:meta_events",
			prefix + ":{chan:t:n}:events", prefix + ":{room:a}b}:events",
		} {
			if got, ok := s.roomTarget(ch); ok {
				t.Errorf("prefix %q: roomTarget(%q) = %q, want none", prefix, ch, got)
			}
		}
		for _, ch := range []string{
			"", prefix + ":{chan:t}:meta_events", prefix + ":{chan::n}:meta_events", prefix + ":{chan:t:}:meta_events",
			"other:{chan:t:n}:meta_events", prefix + ":{room:r}:meta_events", prefix + ":{chan:t:n}:events",
			prefix + ":{chan:t:a}b}:meta_events",
		} {
			if got, ok := s.metaTarget(ch); ok {
				t.Errorf("prefix %q: metaTarget(%q) = %q, want none", prefix, ch, got)
			}
		}
	}
}
