package main

import (
	"runtime/debug"
	"testing"
)

func TestGCDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	if got := setGCDefault(""); got != "200" {
		t.Fatalf("setGCDefault(\"\") = %q", got)
	}
	if now := debug.SetGCPercent(100); now != defaultGOGC {
		t.Fatalf("GC percent %d after the default, want %d", now, defaultGOGC)
	}
	// GOGC set: the runtime already applied it; the server leaves it alone.
	if got := setGCDefault("50"); got != "50" {
		t.Fatalf("setGCDefault(\"50\") = %q", got)
	}
	if now := debug.SetGCPercent(100); now != 100 {
		t.Fatalf("GC percent %d with GOGC set, want it untouched (100)", now)
	}
}
