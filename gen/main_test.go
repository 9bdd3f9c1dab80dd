package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The committed generated files must equal a fresh generation, so a .lua
// edit without `go generate` fails here, not in production.
func TestGeneratedScriptsAreFresh(t *testing.T) {
	sources, calls, err := Generate("../luasrc")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{"../luasrc/scripts_gen.go": sources, "../luacall/calls_gen.go": calls} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `go generate ./luasrc` and commit it", path)
		}
		if !regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`).Match(got) {
			t.Errorf("%s: generated header does not match the Go convention", path)
		}
	}
}

// header is a valid script header for the rejection tests to break.
const header = `-- t: a test script.
-- KEYS[1] hash: a hash
-- ARGV[1] field: a field
-- ARGV[2..] rest {key, value}: pairs
-- Returns ok {1, n:int} | no {0, 'NO'}
`

const body = `for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1, 1} end
return {0, 'NO'}
`

func TestGenerateAcceptsAValidHeader(t *testing.T) {
	s, err := parseScript("t", []byte(header+body))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Keys) != 1 || len(s.Args) != 2 || s.Args[1].Tail == nil || len(s.Cases) != 2 || s.Summary != "a test script." {
		t.Fatalf("parsed %+v", s)
	}
}

// Each case breaks the valid script in one way the generator must refuse,
// naming the reason.
func TestGenerateRejectsBadScripts(t *testing.T) {
	r := strings.NewReplacer
	cases := []struct {
		name, src, want string
	}{
		{"no header", "return 1\n", "header"},
		{"body uses a key the header lacks", header + "redis.call('DEL', KEYS[2])\n" + body, "declares 1 KEYS, body uses up to KEYS[2]"},
		{"header declares a key the body never uses",
			r("-- KEYS[1] hash: a hash\n", "-- KEYS[1] hash: a hash\n-- KEYS[2] other: unused\n").Replace(header) + body,
			"declares 2 KEYS, body uses up to KEYS[1]"},
		{"body uses an argument the header lacks", header + "redis.call('DEL', ARGV[3])\n" + body, "declares 1 fixed ARGV, body uses up to ARGV[3]"},
		{"computed key index", header + "redis.call('DEL', KEYS[#KEYS])\n" + body, "only literal indexes"},
		{"tail walked from the wrong index", header + r("2, #ARGV, 2", "3, #ARGV, 2").Replace(body), "no loop"},
		{"tail walked in the wrong stride", header + r("2, #ARGV, 2", "2, #ARGV, 3").Replace(body), "no loop"},
		{"#ARGV without a tail", r("-- ARGV[2..] rest {key, value}: pairs\n", "").Replace(header) + body, "declares no tail"},
		{"gap in KEYS", r("KEYS[1] hash", "KEYS[2] hash").Replace(header) + body, "KEYS[2] declared where KEYS[1] is next"},
		{"malformed declaration", r("-- KEYS[1] hash: a hash", "-- KEYS[1] the hash").Replace(header) + body, "bad declaration"},
		{"duplicate name", r("ARGV[1] field", "ARGV[1] hash").Replace(header) + body, "already declared"},
		{"tail without elements", r("rest {key, value}:", "rest:").Replace(header) + body, "go together"},
		{"no Returns", r("-- Returns ok {1, n:int} | no {0, 'NO'}\n", "").Replace(header) + body, "no Returns"},
		{"unnamed case among several", r("| no {0", "| {0").Replace(header) + body, "names each"},
		{"unknown reply type", r("n:int", "n:float").Replace(header) + body, "unknown type"},
		{"one value, two types", r("{0, 'NO'}", "{0, n:str}").Replace(header) + body, "n is int in one case and str"},
		{"stray | line", header + "-- prose\n-- | stray {0}\n" + body, "continue the Returns"},
	}
	for _, tc := range cases {
		_, err := parseScript("t", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := parseScript("1bad", []byte(header+body)); err == nil {
		t.Error("a script name that is not a Go identifier was accepted")
	}
}

func TestGenerateNamesGoIdentifiers(t *testing.T) {
	for in, want := range map[string]string{"ok": "OK", "connId": "ConnID", "ttlMs": "TTLMs", "notFound": "NotFound", "lastSeen": "LastSeen"} {
		if got := goName(in); got != want {
			t.Errorf("goName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The mocks and wire_gen.go are generated too; regenerate them into a
// scratch copy and compare.
func TestGeneratedMockIsFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	out := filepath.Join(t.TempDir(), "client.go")
	cmd := exec.Command("go", "tool", "mockgen", "-write_command_comment=false", "-package", "backendmock",
		"-destination", out, ".", "Client,Subscription,Tx")
	cmd.Dir = "../backend"
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mockgen: %v\n%s", err, b)
	}
	want, _ := os.ReadFile(out)
	got, err := os.ReadFile("../backend/backendmock/client.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("backend/backendmock/client.go is stale: run `go generate ./backend` and commit it")
	}
}

func TestWireGenIsFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	cmd := exec.Command("go", "tool", "wire", "diff", ".")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wire_gen.go is stale (run `go generate .` and commit it): %v\n%s", err, b)
	}
}
