package goredis

import (
	"errors"
	"math"
	"math/big"
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestConvert(t *testing.T) {
	serverErr := redis.ErrNoScript // a proto.RedisError, as go-redis parses error replies
	for _, tc := range []struct {
		name string
		in   any
		want backend.Reply
	}{
		{"nil", nil, backend.NilReply()},
		{"string", "x", backend.StrReply("x")},
		{"int", int64(-3), backend.IntReply(-3)},
		{"true", true, backend.IntReply(1)},
		{"false", false, backend.IntReply(0)},
		{"double", 1.5, backend.StrReply("1.5")},
		{"integral double", 1700000000000.0, backend.StrReply("1700000000000")},
		{"huge double", 1e300, backend.StrReply("1e+300")},
		{"inf", math.Inf(1), backend.StrReply("inf")},
		{"-inf", math.Inf(-1), backend.StrReply("-inf")},
		{"nan", math.NaN(), backend.StrReply("nan")},
		{"big", new(big.Int).Lsh(big.NewInt(1), 100), backend.StrReply("1267650600228229401496703205376")},
		{"nil big", (*big.Int)(nil), backend.NilReply()},
		{"empty array", []any{}, backend.Reply{Kind: backend.KindArray, Elems: []backend.Reply{}}},
		{"nested", []any{int64(1), nil, []any{"a"}, serverErr, redis.Nil},
			backend.ArrReply(backend.IntReply(1), backend.NilReply(), backend.ArrReply(backend.StrReply("a")),
				backend.Reply{Kind: backend.KindError, Err: &backend.RedisError{Msg: serverErr.Error()}}, backend.NilReply())},
		{"map", map[any]any{"b": int64(2), "a": nil, int64(3): []any{"x"}},
			backend.ArrReply(backend.IntReply(3), backend.ArrReply(backend.StrReply("x")),
				backend.StrReply("a"), backend.NilReply(), backend.StrReply("b"), backend.IntReply(2))},
		{"empty map", map[any]any{}, backend.Reply{Kind: backend.KindArray, Elems: []backend.Reply{}}},
		{"bytes", []byte("b"), backend.StrReply("b")},
		{"other", struct{ A int }{1}, backend.StrReply("{1}")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := convert(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("convert(%#v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestToReply(t *testing.T) {
	if r, err := toReply(nil, redis.Nil); err != nil || !r.IsNil() {
		t.Errorf("redis.Nil: %v %v", r, err)
	}
	if r, err := toReply(nil, redis.ErrNoScript); err != nil || !backend.IsRedisError(r.Err, "NOSCRIPT") {
		t.Errorf("NOSCRIPT: %v %v", r, err)
	}
	netErr := errors.New("connection reset")
	if _, err := toReply(nil, netErr); err != netErr {
		t.Errorf("network error: %v", err)
	}
	// A server error that go-redis wrapped is its own failure, not a reply.
	wrapped := errors.Join(errors.New("failed to authenticate"), redis.ErrNoScript)
	if _, err := toReply(nil, wrapped); err != wrapped {
		t.Errorf("wrapped server error: %v", err)
	}
}

// TestProtocols checks that RESP2 and RESP3 give the same replies, the
// shapes backend.Reply documents, for the replies whose RESP3 form differs
// (maps, doubles, booleans, big numbers, sets).
func TestProtocols(t *testing.T) {
	s := redistest.Standalone(t)
	k := "{" + redistest.Prefix(t) + "}:"
	setup := newClient(t, s, Options{})
	mustDo(t, setup,
		backend.K("HSET", k+"h", "b", "2", "a", "1"),
		backend.K("ZADD", k+"z", "1700000000000", "m", "1.5", "n"),
		backend.K("SADD", k+"s", "x"),
	)
	cmds := []backend.Cmd{
		backend.K("HGETALL", k+"h"),           // map
		backend.K("ZSCORE", k+"z", "m"),       // double
		backend.K("ZSCORE", k+"z", "n"),       // double
		backend.K("ZINCRBY", k+"z", "0", "n"), // double
		backend.K("SMEMBERS", k+"s"),          // set
		backend.K("HGET", k+"h", "missing"),   // null
		backend.K("ZRANGE", k+"z", "0", "0"),  // array
		backend.K("EVAL", "return redis.setresp(3) and false or 1", "0"),
	}
	r2 := mustDo(t, newClient(t, s, Options{Protocol: 2}), cmds...)
	r3 := mustDo(t, newClient(t, s, Options{Protocol: 3}), cmds...)
	// A RESP3 map has no order; it comes sorted by key.
	m2, err2 := r2[0].AsStringMap()
	m3, err3 := r3[0].AsStringMap()
	if err2 != nil || err3 != nil || !reflect.DeepEqual(m2, m3) || r3[0].Elems[0].Str != "a" {
		t.Errorf("HGETALL: RESP2 %v, RESP3 %v", r2[0], r3[0])
	}
	for i := 1; i < len(cmds); i++ {
		if !reflect.DeepEqual(r2[i], r3[i]) {
			t.Errorf("%v: RESP2 %v, RESP3 %v", cmds[i].Line(), r2[i], r3[i])
		}
	}
	if m, err := r2[0].AsStringMap(); err != nil || m["a"] != "1" || m["b"] != "2" {
		t.Errorf("HGETALL: %v %v", m, err)
	}
	if n, err := r2[1].AsInt(); err != nil || n != 1700000000000 {
		t.Errorf("ZSCORE: %v %v", r2[1], err)
	}
	if r2[3].Str != "1.5" {
		t.Errorf("ZINCRBY: %v", r2[3])
	}
}
