package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// The committed luasrc/scripts_gen.go must equal a fresh generation, so a
// .lua edit without `go generate` fails here, not in production.
func TestGeneratedScriptsAreFresh(t *testing.T) {
	want, err := Generate("../luasrc")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../luasrc/scripts_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("luasrc/scripts_gen.go is stale: run `go generate ./luasrc` and commit it")
	}
	if !regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`).Match(got) {
		t.Fatal("generated header does not match the Go convention")
	}
}

func TestGenerateRejectsUndocumentedScript(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x.lua"), []byte("return 1\n"), 0o644)
	if _, err := Generate(dir); err == nil {
		t.Fatal("a script without a KEYS/ARGV header comment was accepted")
	}
	os.WriteFile(filepath.Join(dir, "x.lua"), []byte("-- KEYS none\nreturn 1\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "1bad.lua"), []byte("-- KEYS none\nreturn 1\n"), 0o644)
	if _, err := Generate(dir); err == nil {
		t.Fatal("a script name that is not a Go identifier was accepted")
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
