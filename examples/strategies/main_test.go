package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The example picks its strategy from the config string alone.
func TestStrategiesExample(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	for spec, want := range map[string]string{
		"lua":               `heartbeat strategy "lua"`,
		"batch?window=20ms": "batches sent:",
		"pipeline":          `heartbeat strategy "pipeline"`,
	} {
		t.Run(spec, func(t *testing.T) {
			t.Setenv("PRESENCE_HEARTBEAT", spec)
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := run(ctx, &out)
			cancel()
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "200 heartbeats") ||
				!strings.Contains(out.String(), "room has 10 connections") {
				t.Errorf("output lacks %q, 200 heartbeats or 10 connections:\n%s", want, out.String())
			}
		})
	}
	t.Setenv("PRESENCE_HEARTBEAT", "nope")
	if err := run(context.Background(), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "batch, lua, pipeline") {
		t.Fatalf("unknown strategy: %v", err)
	}
}
