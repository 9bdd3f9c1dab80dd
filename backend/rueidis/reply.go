package rueidis

import (
	"fmt"
	"sort"
	"strings"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// toReply converts one rueidis message to the port's protocol-independent
// shape: RESP3 maps become arrays of alternating keys and values (keys
// sorted, since a map has no order), booleans integers 0/1, doubles, big
// numbers and verbatim strings plain strings, errors KindError with the
// server's message unchanged.
func toReply(m *rueidis.RedisMessage) backend.Reply {
	switch {
	case m.IsNil():
		return backend.NilReply()
	case m.IsInt64():
		n, _ := m.AsInt64()
		return backend.IntReply(n)
	case m.IsString(), m.IsFloat64():
		s, _ := m.ToString()
		return backend.StrReply(s)
	case m.IsArray():
		elems, _ := m.ToArray()
		out := make([]backend.Reply, len(elems))
		for i := range elems {
			out[i] = toReply(&elems[i])
		}
		return backend.Reply{Kind: backend.KindArray, Elems: out}
	case m.IsMap():
		kv, err := m.ToMap()
		if err != nil { // a key that is not a string: no map we send has one
			return backend.Reply{Kind: backend.KindError, Err: fmt.Errorf("backend/rueidis: %w", err)}
		}
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([]backend.Reply, 0, 2*len(keys))
		for _, k := range keys {
			v := kv[k]
			out = append(out, backend.StrReply(k), toReply(&v))
		}
		return backend.Reply{Kind: backend.KindArray, Elems: out}
	case m.IsBool():
		if b, _ := m.AsBool(); b {
			return backend.IntReply(1)
		}
		return backend.IntReply(0)
	}
	// Error, verbatim string, big number. ToString returns the raw text of
	// an error: m.Error() would drop a leading "ERR " (a rueidis workaround
	// for kvrocks), and the port promises the message unchanged.
	s, _ := m.ToString()
	if m.Error() != nil {
		return backend.ErrReply(s)
	}
	if len(s) >= 4 && s[3] == ':' { // verbatim "txt:..."; a big number has no ':'
		s = s[4:]
	}
	return backend.StrReply(s)
}

// pairReplies are the commands that answer pairs (member and score, field
// and value) as one flat array in RESP2 but as an array of two-element
// arrays in RESP3.
var pairReplies = map[string]bool{
	"ZRANGE": true, "ZRANGEBYSCORE": true, "ZREVRANGE": true, "ZREVRANGEBYSCORE": true,
	"ZPOPMIN": true, "ZPOPMAX": true, "ZRANDMEMBER": true,
	"ZUNION": true, "ZINTER": true, "ZDIFF": true,
	"HRANDFIELD": true,
}

// normalize gives a reply of cmd the RESP2 shape, so callers see one shape
// whatever the protocol: [[m1 s1] [m2 s2]] becomes [m1 s1 m2 s2].
func normalize(cmd backend.Cmd, r backend.Reply) backend.Reply {
	if r.Kind != backend.KindArray || len(r.Elems) == 0 || !pairReplies[strings.ToUpper(cmd.Name)] {
		return r
	}
	for _, e := range r.Elems {
		if e.Kind != backend.KindArray || len(e.Elems) != 2 {
			return r
		}
	}
	flat := make([]backend.Reply, 0, 2*len(r.Elems))
	for _, e := range r.Elems {
		flat = append(flat, e.Elems...)
	}
	return backend.Reply{Kind: backend.KindArray, Elems: flat}
}
