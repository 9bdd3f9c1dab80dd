package backendtest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// testDoFlat: backend.DoFlat (an adapter's FlatDoer, or Do for adapters
// without one) gives for every shape of reply exactly what Do gives,
// whether the reply fits inline or not, refuses cross-slot commands
// before sending, and fails with ErrClosed after Close.
func testDoFlat(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	str, h, z, l := tag(p, "s"), tag(p, "h"), tag(p, "z"), tag(p, "l")
	do(t, c, backend.C("DEL", []string{str, h, z, l}))
	do(t, c,
		backend.K("SET", str, "v"),
		backend.K("HSET", h, "a", "1", "b", "2"),
		backend.K("ZADD", z, "1", "m1", "2.5", "m2"),
		backend.K("RPUSH", l, "1", "2", "3", "4", "5"),
	)
	eval := func(src string) backend.Cmd { return backend.Cmd{Name: "EVAL", Pre: []string{src, "0"}} }
	cmds := []backend.Cmd{
		{Name: "PING"},
		backend.K("GET", str),
		backend.K("GET", tag(p, "missing")),
		backend.K("INCR", str), // an error
		backend.K("HGETALL", h),
		backend.K("ZRANGE", z, "0", "-1", "WITHSCORES"),
		backend.K("ZSCORE", z, "m2"),
		backend.K("LRANGE", l, "0", "3"),  // as long as inlines go
		backend.K("LRANGE", l, "0", "-1"), // one more
		backend.K("LRANGE", tag(p, "missing"), "0", "-1"),
		eval("return {1, 0, 1700000000000}"),
		eval("return {0, 'NOTFOUND'}"),
		eval("return {0, 'STALE', 42}"),
		eval("return {1, {2, 3}, 4}"),
		eval("return {1, false, 'x'}"), // a nil in the middle
		eval("return redis.error_reply('MYCODE custom')"),
		eval("return redis.status_reply('FINE')"),
	}
	for i, cmd := range cmds {
		want := do(t, c, cmd)[0]
		f, err := backend.DoFlat(ctx(t), c, cmd)
		if err != nil {
			t.Fatalf("DoFlat %d %v: %v", i, cmd.Line(), err)
		}
		if got := f.Full(); !sameReply(got, want) {
			t.Errorf("DoFlat %d %v: Full %v, Do gave %v", i, cmd.Line(), render(got), render(want))
		}
		if want.Kind == backend.KindArray {
			a, err := f.Array()
			if err != nil || !sameReply(backend.ArrReply(a...), want) {
				t.Errorf("DoFlat %d %v: Array %v %v, Do gave %v", i, cmd.Line(), a, err, render(want))
			}
		}
	}

	_, err := backend.DoFlat(ctx(t), c, backend.C("MGET", []string{p + ":a", p + ":b"}))
	if backend.KeySlot(p+":a") != backend.KeySlot(p+":b") {
		wantErrIs(t, "cross-slot DoFlat", err, backend.ErrCrossSlot)
	}

	c.Close()
	_, err = backend.DoFlat(ctx(t), c, backend.K("GET", str))
	wantErrIs(t, "DoFlat after Close", err, backend.ErrClosed)
}

// sameReply compares replies as values: errors by message, an empty array
// whatever its slice.
func sameReply(a, b backend.Reply) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case backend.KindError:
		return a.Err.Error() == b.Err.Error()
	case backend.KindArray:
		if len(a.Elems) != len(b.Elems) {
			return false
		}
		for i := range a.Elems {
			if !sameReply(a.Elems[i], b.Elems[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func render(r backend.Reply) string {
	switch r.Kind {
	case backend.KindNil:
		return "<nil>"
	case backend.KindInt:
		return fmt.Sprint(r.Int)
	case backend.KindString:
		return fmt.Sprintf("%q", r.Str)
	case backend.KindError:
		var re *backend.RedisError
		if errors.As(r.Err, &re) {
			return "error: " + re.Msg
		}
		return "error: " + r.Err.Error()
	}
	return fmt.Sprint(func() []string {
		out := make([]string, len(r.Elems))
		for i, e := range r.Elems {
			out[i] = render(e)
		}
		return out
	}())
}
