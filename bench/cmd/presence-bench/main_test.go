package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunQuickScaled runs the program as documented, scaled down to a few
// seconds, on a redis-server of its own: JSON rows on stdout, the tables
// and the chart in files, progress on stderr.
func TestRunQuickScaled(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not on PATH and REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not on PATH (install Redis 7, or set REQUIRE_REDIS=1 to fail)")
	}
	t.Setenv("REDIS_URL", "")
	dir := t.TempDir()
	md, svg := filepath.Join(dir, "tables.md"), filepath.Join(dir, "chart.svg")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-quick", "-scale", "0.05", "-json", "-backends", "rueidis", "-strategies", "lua,batch",
		"-metadata", "watch,app-cas", "-writers", "4", "-concurrency", "8", "-out", md, "-svg", svg}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	rows := 0
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		rows++
	}
	if want := 3 + 2 + 2 + 2 + 2; rows != want { // ceiling ×3 (once with -quick), seed ×2, saturation ×2, metadata ×2, user index ×2
		t.Errorf("%d rows, want %d:\n%s", rows, want, stdout.String())
	}
	for _, f := range []string{md, svg} {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v (%d bytes)", f, err, len(b))
		}
	}
	// -render draws the same from the saved rows, measuring nothing.
	rowsFile, svg2 := filepath.Join(dir, "rows.json"), filepath.Join(dir, "again.svg")
	if err := os.WriteFile(rowsFile, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var tables bytes.Buffer
	if err := run(ctx, []string{"-render", rowsFile, "-svg", svg2}, &tables, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tables.String(), "| rueidis | lua |") {
		t.Errorf("-render tables:\n%s", tables.String())
	}
	if b, err := os.ReadFile(svg2); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("-render chart: %v", err)
	}
	if !strings.Contains(stderr.String(), "started redis-server") || !strings.Contains(stderr.String(), "[11/11") {
		t.Errorf("progress:\n%s", stderr.String())
	}
}

func TestFlags(t *testing.T) {
	var out, errw bytes.Buffer
	for _, args := range [][]string{{"-backends", "redis"}, {"-concurrency", "x"}, {"extra"},
		{"-user-index-conns", "0"}, {"-user-index-only", "-user-index-pairs", "0"}} {
		if err := run(context.Background(), args, &out, &errw); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestUserIndexOnly: -user-index-only measures the user index's cost
// alone, off and on per backend and operation, and prints their ratio.
func TestUserIndexOnly(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not on PATH and REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not on PATH")
	}
	t.Setenv("REDIS_URL", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-quick", "-scale", "0.05", "-backends", "rueidis", "-user-index-only", "-user-index-conns", "8"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"### User index cost", "| heartbeat | rueidis |", "| join+leave | rueidis |"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "### Heartbeat") || !strings.Contains(stderr.String(), "[ 2/2") {
		t.Errorf("not the user index rows alone:\n%s\n%s", out, stderr.String())
	}
}
