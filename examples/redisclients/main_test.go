package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestClientsExample(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	for backend, want := range map[string]string{"rueidis": "*rueidis.Client", "goredis": "*goredis.Client"} {
		t.Run(backend, func(t *testing.T) {
			t.Setenv("PRESENCE_BACKEND", backend)
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := run(ctx, &out)
			cancel()
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			for _, line := range []string{want, "stale heartbeat: presence: stale epoch", "event join alice/c1", `event update alice/c1 state={"mood":"happy"}`, "event leave alice/c1"} {
				if !strings.Contains(out.String(), line) {
					t.Errorf("missing %q in\n%s", line, out.String())
				}
			}
		})
	}
}
