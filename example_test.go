package presence_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"

	"github.com/realtime-message/presence"
	_ "github.com/realtime-message/presence/backend/builtin"
	"github.com/realtime-message/presence/embedded"
)

// The README's library snippet: open a Service, join a room, heartbeat
// with a state patch. It runs on the embedded Redis; against a real one,
// set RedisURL to its URL (e.g. "redis://127.0.0.1:6379/0"). Open finds the
// adapter named by Backend in the backend registry, which the blank import
// of backend/builtin fills.
func ExampleOpen() {
	ctx := context.Background()
	srv, err := embedded.Start() // an in-process Redis, for development
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	svc, err := presence.Open(ctx, presence.Config{
		RedisURL:  srv.URL(), // or "redis://127.0.0.1:6379/0"
		Backend:   "rueidis", // or "goredis": registered by the import of backend/builtin
		Heartbeat: "lua",     // or "pipeline", "batch?window=50ms&max=100"
		Metadata:  "lua",     // or "watch?retries=5"
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	j, err := svc.Join(ctx, "room-1", "conn-1", "alice", json.RawMessage(`{"typing":false}`))
	if err != nil {
		log.Fatal(err)
	}
	r, err := svc.Heartbeat(ctx, "room-1", "conn-1", presence.HeartbeatParams{
		Epoch:      &j.Epoch, // fencing: fails with ErrStaleEpoch once a newer join owns conn-1
		PatchState: json.RawMessage(`{"typing":true}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	snap, err := svc.Snapshot(ctx, "room-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Changed, snap[0].UserID, string(snap[0].State))
	// Output: true alice {"typing":true}
}

// TestReadmeSnippetIsExampleOpen keeps the README's library snippet the
// body of ExampleOpen, so the snippet users copy compiles and runs.
func TestReadmeSnippetIsExampleOpen(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	start := strings.Index(s, "func ExampleOpen() {\n")
	end := strings.Index(s[start:], "\n}\n")
	if start < 0 || end < 0 {
		t.Fatal("ExampleOpen not found")
	}
	lines := strings.Split(s[start+len("func ExampleOpen() {\n"):start+end], "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	want := "```go\n" + strings.Join(lines, "\n") + "\n```"
	if !strings.Contains(string(readme), want) {
		t.Errorf("README.md's library snippet differs from ExampleOpen's body; paste this into README.md:\n%s", want)
	}
}
