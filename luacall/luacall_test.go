package luacall_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luacall"
	"github.com/realtime-message/presence/luasrc"
)

// Eval puts each named field where the script's header says, the tail's
// elements flattened in order, and keys apart from arguments.
func TestEvalFollowsTheHeader(t *testing.T) {
	e := luacall.Heartbeat{
		ConnHash: "k1", LastSeen: "k2", ConnMeta: "k3", Seq: "k4",
		Conn: "a1", NowMs: "a2", TTLMs: "a3", Epoch: "a4", Events: "a5", Room: "a6", Pub: "a7",
		Patch: []luacall.KeyValue{{Key: "x", Value: "1"}, {Key: "y", Value: "2"}},
	}.Eval()
	if e.Script != luasrc.Heartbeat {
		t.Fatalf("script %v", e.Script.Name)
	}
	if want := []string{"k1", "k2", "k3", "k4"}; !reflect.DeepEqual(e.Keys, want) {
		t.Errorf("keys %q, want %q", e.Keys, want)
	}
	if want := []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "x", "1", "y", "2"}; !reflect.DeepEqual(e.Args, want) {
		t.Errorf("args %q, want %q", e.Args, want)
	}
	// Keys and arguments share one array: appending to the keys must not
	// overwrite the first argument.
	_ = append(e.Keys, "extra")
	if e.Args[0] != "a1" {
		t.Errorf("appending to Keys overwrote Args[0]: %q", e.Args[0])
	}

	m := luacall.MetaMutate{Meta: "m", Lock: "l", Index: "i", Op: "set", Major: "3",
		Items: []luacall.KeyValueRevision{{Key: "k", Value: "v", Revision: "2"}}}.Eval()
	if want := []string{"set", "3", "", "", "", "", "", "", "", "", "", "", "k", "v", "2"}; !reflect.DeepEqual(m.Args, want) {
		t.Errorf("meta_mutate args %q, want %q", m.Args, want)
	}
}

func TestDecodeCases(t *testing.T) {
	i, s := backend.IntReply, backend.StrReply
	arr := backend.ArrReply
	for _, tc := range []struct {
		r    backend.Reply
		want luacall.HeartbeatReply
		bad  bool
	}{
		{r: arr(i(1), i(1), i(42)), want: luacall.HeartbeatReply{Case: luacall.HeartbeatOK, Changed: true, Epoch: 42}},
		{r: arr(i(1), i(0), s("42")), want: luacall.HeartbeatReply{Case: luacall.HeartbeatOK, Epoch: 42}},
		{r: arr(i(0), s("NOTFOUND")), want: luacall.HeartbeatReply{Case: luacall.HeartbeatNotFound}},
		{r: arr(i(0), s("STALE"), i(9)), want: luacall.HeartbeatReply{Case: luacall.HeartbeatStale, Stored: 9}},
		{r: arr(i(1), i(2), i(42)), bad: true},   // changed is 0 or 1
		{r: arr(i(1), i(1)), bad: true},          // too short for ok
		{r: arr(i(0), s("STALE")), bad: true},    // stale without stored
		{r: arr(i(0), s("GONE")), bad: true},     // unknown code
		{r: arr(i(1), i(1), s("x")), bad: true},  // epoch not a number
		{r: s("OK"), bad: true},                  // not an array
		{r: backend.NilReply(), bad: true},       // nil
		{r: arr(i(2), s("NOTFOUND")), bad: true}, // wrong discriminator
	} {
		got, err := luacall.DecodeHeartbeat(tc.r)
		f := backend.FlatReply{Reply: tc.r}
		gotFlat, errFlat := luacall.DecodeHeartbeatFlat(&f)
		if tc.bad {
			if err == nil || errFlat == nil || !strings.Contains(err.Error(), "unexpected heartbeat reply") {
				t.Errorf("%v: got %+v %v / %v, want an unexpected-reply error", tc.r, got, err, errFlat)
			}
			continue
		}
		if err != nil || errFlat != nil || got != tc.want || gotFlat != tc.want {
			t.Errorf("%v: got %+v %v / %+v %v, want %+v", tc.r, got, err, gotFlat, errFlat, tc.want)
		}
	}

	// A script error is the error, unchanged, so callers can match it.
	_, err := luacall.DecodeJoin(backend.ErrReply("EPOCH_EXHAUSTED conn c"))
	if !backend.IsRedisError(err, "EPOCH_EXHAUSTED") {
		t.Errorf("script error decoded as %v", err)
	}

	j, err := luacall.DecodeJoin(arr(i(7), arr(arr(s("c1"), arr(s("user"), s("u"), s("epoch"), s("7")))), i(9)))
	if err != nil || j.Epoch != 7 || len(j.Snapshot) != 1 || j.Snapshot[0].ID != "c1" || j.Snapshot[0].Hash["user"] != "u" || j.Seq != 9 {
		t.Errorf("join: %+v %v", j, err)
	}
	if _, err := luacall.DecodeJoin(arr(i(7), arr(arr(s("c1"))), i(9))); err == nil {
		t.Error("join: a snapshot row without a hash was accepted")
	}

	mm, err := luacall.DecodeMetaMutate(arr(i(0), s("REVISION"), s("k"), s("3"), arr(s("major"), s("5"))))
	if err != nil || !reflect.DeepEqual(mm, luacall.MetaMutateReply{Case: luacall.MetaMutateRevision, Key: "k", Revision: 3,
		Hash: map[string]string{"major": "5"}}) {
		t.Errorf("meta_mutate revision: %+v %v", mm, err)
	}
	if _, err := luacall.DecodeMetaMutate(arr(i(0), s("REVISION"), s("k"), s("3"))); err == nil {
		t.Error("meta_mutate: a revision conflict without the record read was accepted")
	}
	if mm, err := luacall.DecodeMetaMutate(arr(i(0), s("FENCED"), s("17"))); err != nil || mm.Case != luacall.MetaMutateFenced || mm.Token != 17 {
		t.Errorf("meta_mutate fenced: %+v %v", mm, err)
	}
	if r, err := luacall.DecodeLockRelease(i(1)); err != nil || !r.Released {
		t.Errorf("lock_release 1: %+v %v", r, err)
	}
	if r, err := luacall.DecodeLockRelease(i(0)); err != nil || r.Released {
		t.Errorf("lock_release 0: %+v %v", r, err)
	}
	if _, err := luacall.DecodeLockRelease(arr(i(1))); err == nil {
		t.Error("lock_release: an array was accepted as the bare 0/1")
	}
	var re *backend.RedisError
	if _, err := luacall.DecodeReap(backend.ErrReply("BUSY")); !errors.As(err, &re) {
		t.Errorf("reap: script error decoded as %v", err)
	}
}

// The guarantee the typed calls exist for: a call cannot be written with
// positional values, so two arguments cannot be swapped by order. Named
// fields compile; the same values positionally do not.
func TestPositionalCallDoesNotCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	build := func(literal string) (string, error) {
		dir := t.TempDir()
		src := filepath.Join(dir, "x.go")
		code := "package swapcheck\n\nimport \"github.com/realtime-message/presence/luacall\"\n\nvar _ = " + literal + "\n"
		if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
		overlay := filepath.Join(dir, "overlay.json")
		// A package that exists only in the overlay, so nothing is left in
		// the tree.
		target := filepath.Join(wd, "swapcheck", "x.go")
		if err := os.WriteFile(overlay, []byte(`{"Replace":{`+quote(target)+`:`+quote(src)+`}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("go", "build", "-overlay", overlay, "./swapcheck").CombinedOutput()
		return string(out), err
	}
	if out, err := build(`luacall.LockRelease{Lock: "l", Index: "i", Owner: "o", Name: "n"}`); err != nil {
		t.Fatalf("a call with named fields does not compile: %v\n%s", err, out)
	}
	out, err := build(`luacall.LockRelease{"l", "i", "n", "o"}`)
	if err == nil || !strings.Contains(out, "unexported field") {
		t.Fatalf("a positional call compiled (err %v):\n%s", err, out)
	}
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `\`, `\\`) + `"` }
