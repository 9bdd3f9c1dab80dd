package backend_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"testing"

	"go.uber.org/mock/gomock"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendmock"
	"github.com/realtime-message/presence/luasrc"
)

func testScript() *luasrc.Script {
	src := "-- KEYS[1]: counter; ARGV[1]: increment\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])\n"
	sum := sha1.Sum([]byte(src))
	return &luasrc.Script{Name: "incr", Source: src, SHA1: hex.EncodeToString(sum[:])}
}

func evalsha(s *luasrc.Script, key, arg string) backend.Cmd {
	return backend.Cmd{Name: "EVALSHA", Pre: []string{s.SHA1, "1"}, Keys: []string{key}, Args: []string{arg}}
}

func eval(s *luasrc.Script, key, arg string) backend.Cmd {
	return backend.Cmd{Name: "EVAL", Pre: []string{s.Source, "1"}, Keys: []string{key}, Args: []string{arg}}
}

const noscript = "NOSCRIPT No matching script. Please use EVAL."

func TestScriptsRunFallsBackOnNoscript(t *testing.T) {
	ctrl := gomock.NewController(t)
	c := backendmock.NewMockClient(ctrl)
	s := testScript()
	ctx := context.Background()
	gomock.InOrder(
		c.EXPECT().Do(ctx, evalsha(s, "k", "2")).Return([]backend.Reply{backend.ErrReply(noscript)}, nil),
		c.EXPECT().Do(ctx, eval(s, "k", "2")).Return([]backend.Reply{backend.IntReply(7)}, nil),
		// Cached now: the next call is EVALSHA alone.
		c.EXPECT().Do(ctx, evalsha(s, "k", "3")).Return([]backend.Reply{backend.IntReply(10)}, nil),
	)
	scripts := backend.NewScripts(c)
	r, err := scripts.Run(ctx, backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"2"}})
	if err != nil || r.Kind != backend.KindInt || r.Int != 7 {
		t.Fatalf("Run: %v, %v", r, err)
	}
	if n := scripts.Reloads(); n != 1 {
		t.Fatalf("Reloads = %d, want 1", n)
	}
	if r, err := scripts.Run(ctx, backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"3"}}); err != nil || r.Int != 10 {
		t.Fatalf("second Run: %v, %v", r, err)
	}
	if n := scripts.Reloads(); n != 1 {
		t.Fatalf("Reloads = %d after a cached call, want 1", n)
	}
}

func TestScriptsRunReturnsScriptErrorWithoutRetry(t *testing.T) {
	ctrl := gomock.NewController(t)
	c := backendmock.NewMockClient(ctrl)
	s := testScript()
	c.EXPECT().Do(gomock.Any(), evalsha(s, "k", "x")).
		Return([]backend.Reply{backend.ErrReply("ERR value is not an integer or out of range")}, nil).Times(1)
	scripts := backend.NewScripts(c)
	_, err := scripts.Run(context.Background(), backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"x"}})
	if !backend.IsRedisError(err, "ERR") {
		t.Fatalf("Run: %v, want the script's ERR", err)
	}
	if n := scripts.Reloads(); n != 0 {
		t.Fatalf("Reloads = %d, want 0", n)
	}
}

func TestScriptsRunReturnsTransportError(t *testing.T) {
	ctrl := gomock.NewController(t)
	c := backendmock.NewMockClient(ctrl)
	s := testScript()
	broken := errors.New("connection reset")
	c.EXPECT().Do(gomock.Any(), gomock.Any()).Return(nil, broken).Times(1)
	scripts := backend.NewScripts(c)
	if _, err := scripts.Run(context.Background(), backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"1"}}); !errors.Is(err, broken) {
		t.Fatalf("Run: %v, want %v", err, broken)
	}

	// A transport error on the EVAL retry is returned too.
	c.EXPECT().Do(gomock.Any(), evalsha(s, "k", "1")).Return([]backend.Reply{backend.ErrReply(noscript)}, nil)
	c.EXPECT().Do(gomock.Any(), eval(s, "k", "1")).Return(nil, broken)
	if _, err := scripts.Run(context.Background(), backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"1"}}); !errors.Is(err, broken) {
		t.Fatalf("Run with failing retry: %v, want %v", err, broken)
	}
}

func TestScriptsRunManyRetriesOnlyNoscript(t *testing.T) {
	ctrl := gomock.NewController(t)
	c := backendmock.NewMockClient(ctrl)
	s := testScript()
	gomock.InOrder(
		c.EXPECT().Do(gomock.Any(), evalsha(s, "a", "1"), evalsha(s, "b", "1"), evalsha(s, "c", "1")).Return([]backend.Reply{
			backend.ErrReply(noscript), backend.IntReply(5), backend.ErrReply(noscript),
		}, nil),
		c.EXPECT().Do(gomock.Any(), eval(s, "a", "1"), eval(s, "c", "1")).Return([]backend.Reply{
			backend.IntReply(1), backend.ErrReply("WRONGTYPE Operation against a key holding the wrong kind of value"),
		}, nil),
	)
	scripts := backend.NewScripts(c)
	rs, err := scripts.RunMany(context.Background(),
		backend.Eval{Script: s, Keys: []string{"a"}, Args: []string{"1"}},
		backend.Eval{Script: s, Keys: []string{"b"}, Args: []string{"1"}},
		backend.Eval{Script: s, Keys: []string{"c"}, Args: []string{"1"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Int != 1 || rs[1].Int != 5 || !backend.IsRedisError(rs[2].Error(), "WRONGTYPE") {
		t.Fatalf("RunMany replies out of place: %v", rs)
	}
	if n := scripts.Reloads(); n != 2 {
		t.Fatalf("Reloads = %d, want 2", n)
	}
}

func TestEvalCmd(t *testing.T) {
	s := testScript()
	got := backend.Eval{Script: s, Keys: []string{"k1", "k2"}, Args: []string{"a"}}.Cmd().Line()
	want := []string{"EVALSHA", s.SHA1, "2", "k1", "k2", "a"}
	if len(got) != len(want) {
		t.Fatalf("Line = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Line = %q, want %q", got, want)
		}
	}
}
