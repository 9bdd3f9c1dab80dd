package backend_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"unsafe"

	"go.uber.org/mock/gomock"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/backendmock"
	"github.com/realtime-message/presence/luasrc"
)

func TestFlatReplyArrayAndFull(t *testing.T) {
	inline := backend.FlatReply{Reply: backend.Reply{Kind: backend.KindArray}, N: 3}
	inline.Inline[0], inline.Inline[1], inline.Inline[2] = backend.IntReply(1), backend.StrReply("x"), backend.NilReply()
	a, err := inline.Array()
	if err != nil || len(a) != 3 || a[1].Str != "x" {
		t.Fatalf("inline Array: %v %v", a, err)
	}
	full := inline.Full()
	want := backend.ArrReply(backend.IntReply(1), backend.StrReply("x"), backend.NilReply())
	if !reflect.DeepEqual(full, want) {
		t.Fatalf("Full = %v, want %v", full, want)
	}
	// Full must not alias the inline storage: the caller may keep it after
	// the FlatReply is gone or reused.
	inline.Inline[1] = backend.StrReply("changed")
	if full.Elems[1].Str != "x" {
		t.Fatal("Full aliases the FlatReply's inline elements")
	}
	// Array's slice must not let an append write past N into Inline.
	a = append(a, backend.IntReply(9))
	if inline.Inline[3].Kind != backend.KindNil {
		t.Fatal("append to Array's result wrote into Inline")
	}

	held := backend.FlatReply{Reply: want}
	if a, err := held.Array(); err != nil || len(a) != 3 {
		t.Fatalf("held Array: %v %v", a, err)
	}
	if !reflect.DeepEqual(held.Full(), want) {
		t.Fatal("Full of a held reply changed it")
	}

	empty := backend.FlatReply{Reply: backend.Reply{Kind: backend.KindArray}}
	if a, err := empty.Array(); err != nil || len(a) != 0 {
		t.Fatalf("empty Array: %v %v", a, err)
	}
	if _, err := (&backend.FlatReply{Reply: backend.IntReply(3)}).Array(); err == nil {
		t.Fatal("Array of an integer reply: no error")
	}
	if _, err := (&backend.FlatReply{}).Array(); err != nil {
		t.Fatalf("Array of a nil reply: %v, want an empty array as AsArray gives", err)
	}
}

// A client without the fast path gets exactly Do, and a Do that breaks the
// port's contract (wrong reply count) is an error, not a panic.
func TestDoFlatFallsBackOnDo(t *testing.T) {
	ctrl := gomock.NewController(t)
	c := backendmock.NewMockClient(ctrl)
	ctx := context.Background()
	cmd := backend.K("GET", "k")
	c.EXPECT().Do(ctx, cmd).Return([]backend.Reply{backend.StrReply("v")}, nil)
	f, err := backend.DoFlat(ctx, c, cmd)
	if err != nil || f.Str != "v" {
		t.Fatalf("DoFlat: %v %v", f.Reply, err)
	}
	c.EXPECT().Do(ctx, cmd).Return(nil, nil)
	if _, err := backend.DoFlat(ctx, c, cmd); err == nil {
		t.Fatal("DoFlat with no reply from Do: no error")
	}
	broken := errors.New("reset")
	c.EXPECT().Do(ctx, cmd).Return(nil, broken)
	if _, err := backend.DoFlat(ctx, c, cmd); !errors.Is(err, broken) {
		t.Fatalf("DoFlat: %v, want %v", err, broken)
	}
}

// flatClient is a Client with the fast path; Do must not be called.
type flatClient struct {
	*backendmock.MockClient
	calls []backend.Cmd
	reply func(backend.Cmd) backend.FlatReply
}

func (c *flatClient) DoFlat(_ context.Context, cmd backend.Cmd) (backend.FlatReply, error) {
	c.calls = append(c.calls, cmd)
	return c.reply(cmd), nil
}

// Scripts uses a client's DoFlat for single calls, including the EVAL
// resend after NOSCRIPT, and RunMany of one script goes the same way.
func TestScriptsUseFlatDoer(t *testing.T) {
	ctrl := gomock.NewController(t) // no EXPECT: any Do fails the test
	s := testScript()
	c := &flatClient{MockClient: backendmock.NewMockClient(ctrl), reply: func(cmd backend.Cmd) backend.FlatReply {
		if cmd.Name == "EVALSHA" && cmd.Args[0] == "noscript" {
			return backend.FlatReply{Reply: backend.ErrReply(noscript)}
		}
		f := backend.FlatReply{Reply: backend.Reply{Kind: backend.KindArray}, N: 2}
		f.Inline[0], f.Inline[1] = backend.StrReply(cmd.Name), backend.IntReply(int64(len(cmd.Keys)))
		return f
	}}
	scripts := backend.NewScripts(c)
	ctx := context.Background()

	f, err := scripts.RunFlat(ctx, backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"1"}})
	if a, _ := f.Array(); err != nil || len(a) != 2 || a[0].Str != "EVALSHA" {
		t.Fatalf("RunFlat: %v %v", f.Full(), err)
	}
	r, err := scripts.Run(ctx, backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"noscript"}})
	if err != nil || len(r.Elems) != 2 || r.Elems[0].Str != "EVAL" {
		t.Fatalf("Run after NOSCRIPT: %v %v, want the EVAL resend's reply", r, err)
	}
	if scripts.Reloads() != 1 {
		t.Fatalf("Reloads = %d, want 1", scripts.Reloads())
	}
	rs, err := scripts.RunMany(ctx, backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"2"}})
	if err != nil || len(rs) != 1 || rs[0].Elems[0].Str != "EVALSHA" {
		t.Fatalf("RunMany of one: %v %v", rs, err)
	}
	if len(c.calls) != 4 {
		t.Fatalf("%d DoFlat calls, want 4: %v", len(c.calls), c.calls)
	}
}

// A script error comes back from RunMany of one script in its reply, not
// as the error, as for several.
func TestRunManyOneKeepsScriptErrorInReply(t *testing.T) {
	ctrl := gomock.NewController(t)
	c := backendmock.NewMockClient(ctrl)
	s := testScript()
	c.EXPECT().Do(gomock.Any(), evalsha(s, "k", "x")).Return([]backend.Reply{backend.ErrReply("ERR boom")}, nil)
	rs, err := backend.NewScripts(c).RunMany(context.Background(), backend.Eval{Script: s, Keys: []string{"k"}, Args: []string{"x"}})
	if err != nil || len(rs) != 1 || !backend.IsRedisError(rs[0].Error(), "ERR") {
		t.Fatalf("RunMany: %v %v", rs, err)
	}
}

// Eval.Cmd's {sha1, numkeys} is built once per script and key count: no
// allocation per call, and no caller can corrupt it for the others.
func TestEvalCmdPreShared(t *testing.T) {
	s := testScript()
	e := backend.Eval{Script: s, Keys: []string{"a", "b"}}
	p1, p2 := e.Cmd().Pre, e.Cmd().Pre
	if unsafe.SliceData(p1) != unsafe.SliceData(p2) {
		t.Fatal("Pre rebuilt per call")
	}
	if n := testing.AllocsPerRun(100, func() { _ = e.Cmd() }); n != 0 {
		t.Fatalf("Eval.Cmd allocates %v times per call", n)
	}
	_ = append(p1, "extra")
	if got := e.Cmd().Pre; len(got) != 2 || got[0] != s.SHA1 || got[1] != "2" || cap(got) != 2 {
		t.Fatalf("Pre after an append by a caller: %q (cap %d)", got, cap(got))
	}
	if got := (backend.Eval{Script: s, Keys: []string{"a"}}).Cmd().Pre; got[1] != "1" {
		t.Fatalf("Pre for one key: %q", got)
	}
	// A script is identified by its SHA1 too: a Script value changed
	// after its first call is not sent under its old SHA1.
	changed := &luasrc.Script{Name: s.Name, Source: s.Source, SHA1: s.SHA1}
	_ = backend.Eval{Script: changed, Keys: []string{"a"}}.Cmd()
	changed.SHA1 = "0123456789abcdef0123456789abcdef01234567"
	if got := (backend.Eval{Script: changed, Keys: []string{"a"}}).Cmd().Pre; got[0] != changed.SHA1 {
		t.Fatalf("Pre after the script's SHA1 changed: %q", got)
	}
}
