package backendtest

import (
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luacall"
	"github.com/realtime-message/presence/luasrc"
)

// incrScript returns a test-only script whose source is unique to prefix, so
// no server has it cached before the test runs it.
func incrScript(prefix string) *luasrc.Script {
	src := "-- backendtest " + prefix + "\n" +
		"-- KEYS[1] a counter\n" +
		"-- ARGV[1] the increment, or 'fail' to return an error\n" +
		"if ARGV[1] == 'fail' then return redis.error_reply('ERR backendtest failure') end\n" +
		"return redis.call('INCRBY', KEYS[1], ARGV[1])\n"
	sum := sha1.Sum([]byte(src))
	return &luasrc.Script{Name: "backendtest_incr", Source: src, SHA1: hex.EncodeToString(sum[:])}
}

// testScriptFallback: EVALSHA of a script the server lacks comes back as a
// NOSCRIPT reply (not a failed Do), so Scripts resends it with EVAL; after
// SCRIPT FLUSH it costs one more retry, not an error.
func testScriptFallback(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	sc := backend.NewScripts(c)
	script := incrScript(p)
	key := p + ":n"
	run := func(arg string) (backend.Reply, error) {
		return sc.Run(ctx(t), backend.Eval{Script: script, Keys: []string{key}, Args: []string{arg}})
	}

	// Through Do, a missing script is a NOSCRIPT reply.
	rs := do(t, c, backend.Eval{Script: script, Keys: []string{key}, Args: []string{"1"}}.Cmd())
	if !backend.IsRedisError(rs[0].Error(), "NOSCRIPT") {
		t.Fatalf("EVALSHA of an unknown script: %v, want a NOSCRIPT error reply", rs[0])
	}

	r, err := run("2")
	if err != nil {
		t.Fatalf("first Run: %v", err)
	}
	wantInt(t, "first Run", r, 2)
	if n := sc.Reloads(); n != 1 {
		t.Errorf("Reloads after the first Run: %d, want 1", n)
	}
	r, err = run("3")
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	wantInt(t, "second Run", r, 5)
	if n := sc.Reloads(); n != 1 {
		t.Errorf("Reloads after a cached Run: %d, want 1", n)
	}

	redistest.FlushScripts(t, s.srv)
	r, err = run("1")
	if err != nil {
		t.Fatalf("Run after SCRIPT FLUSH: %v", err)
	}
	wantInt(t, "Run after SCRIPT FLUSH", r, 6)
	if n := sc.Reloads(); n != 2 {
		t.Errorf("Reloads after SCRIPT FLUSH: %d, want 2", n)
	}

	// A script's own error is the error of Run, and is not retried.
	_, err = run("fail")
	if !backend.IsRedisError(err, "ERR") || !strings.Contains(err.Error(), "backendtest failure") {
		t.Errorf("Run of a failing script: %v, want its ERR reply", err)
	}
	if n := sc.Reloads(); n != 2 {
		t.Errorf("Reloads after a script error: %d, want 2", n)
	}
}

// testScriptReal: a generated script of package luasrc runs through
// Scripts, again after SCRIPT FLUSH with one reload, and every generated
// SHA1 is the one the server computes.
func testScriptReal(t *testing.T, s *suite) {
	if len(luasrc.All) == 0 {
		t.Fatal("luasrc.All is empty")
	}
	for _, sc := range luasrc.All {
		for i := range s.target.Addrs {
			if r := s.srv.DoNode(t, i, "SCRIPT", "LOAD", sc.Source); r.Str != sc.SHA1 {
				t.Errorf("%s: SCRIPT LOAD on node %d returned %v, generated SHA1 is %s", sc.Name, i, r, sc.SHA1)
			}
		}
	}

	// snapshot.lua: KEYS[1] a set of ids, KEYS[2] a counter, ARGV[1] the
	// prefix of their hashes; returns {seq, {{id, {field, value, ...}}, ...}}.
	// Read-only and nested.
	c := s.client(t)
	p := redistest.Prefix(t)
	set, hashPrefix := tag(p, "conns"), tag(p, "conn:")
	do(t, c, backend.K("SADD", set, "c1"), backend.K("HSET", hashPrefix+"c1", "f", "v"))
	sc := backend.NewScripts(c)
	check := func(when string) {
		t.Helper()
		full, err := sc.Run(ctx(t), luacall.Snapshot{Conns: set, Seq: tag(p, "seq"), ConnPrefix: hashPrefix}.Eval())
		if err != nil {
			t.Fatalf("snapshot %s: %v", when, err)
		}
		if len(full.Elems) != 2 || full.Elems[0].Int != 0 {
			t.Fatalf("snapshot %s: %v, want {0, conns}", when, full)
		}
		r := full.Elems[1]
		if len(r.Elems) != 1 || r.Elems[0].Elems[0].Str != "c1" {
			t.Fatalf("snapshot %s: %v", when, r)
		}
		if m, err := r.Elems[0].Elems[1].AsStringMap(); err != nil || m["f"] != "v" {
			t.Errorf("snapshot %s: hash %v, %v", when, r.Elems[0].Elems[1], err)
		}
	}
	check("before SCRIPT FLUSH")
	before := sc.Reloads()
	redistest.FlushScripts(t, s.srv)
	check("after SCRIPT FLUSH")
	if n := sc.Reloads(); n != before+1 {
		t.Errorf("Reloads went from %d to %d over SCRIPT FLUSH, want +1", before, n)
	}
}

// testScriptReplies: Lua tables, nested tables, numbers, false and status
// replies arrive with the right kinds.
func testScriptReplies(t *testing.T, s *suite) {
	c := s.client(t)
	src := "return {1, 'two', {3, 'four'}, false, redis.status_reply('FINE')}"
	rs := do(t, c, backend.Cmd{Name: "EVAL", Pre: []string{src, "0"}})
	r := rs[0]
	if r.Kind != backend.KindArray || len(r.Elems) != 5 {
		t.Fatalf("EVAL: %v, want an array of 5", r)
	}
	wantInt(t, "[0]", r.Elems[0], 1)
	wantStr(t, "[1]", r.Elems[1], "two")
	wantKind(t, "[2]", r.Elems[2], backend.KindArray)
	if got, err := r.Elems[2].AsStrings(); err != nil || len(got) != 2 || got[0] != "3" || got[1] != "four" {
		t.Errorf("[2]: %v, %v", got, err)
	}
	// Lua false is nil under RESP2 and a boolean under RESP3, which the
	// port maps to integer 0.
	if f := r.Elems[3]; !f.IsNil() && (f.Kind != backend.KindInt || f.Int != 0) {
		t.Errorf("[3] (false): %v, want nil or integer 0", f)
	}
	wantStr(t, "[4] (status)", r.Elems[4], "FINE")
}

// testScriptsAcrossSlots: one RunMany over keys of every node, after SCRIPT
// FLUSH, reloads each call once and returns replies in call order.
func testScriptsAcrossSlots(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	keys := thirds(p)
	s.checkSpread(t, keys)
	script := incrScript(p)
	sc := backend.NewScripts(c)
	evals := make([]backend.Eval, len(keys))
	for i, k := range keys {
		evals[i] = backend.Eval{Script: script, Keys: []string{k}, Args: []string{strconv.Itoa(10 * (i + 1))}}
	}
	for round := 1; round <= 2; round++ {
		rs, err := sc.RunMany(ctx(t), evals...)
		if err != nil {
			t.Fatalf("RunMany round %d: %v", round, err)
		}
		for i, r := range rs {
			wantInt(t, "RunMany "+keys[i], r, int64(10*(i+1)*round))
		}
		if n := sc.Reloads(); n != uint64(len(keys)) {
			t.Errorf("Reloads after round %d: %d, want %d (one per key's node, first round only)", round, n, len(keys))
		}
	}
}
