package presence_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
)

// TestCoreImportsNoAdapter: the root package reaches Redis only through
// the backend registry, so a program linking one adapter does not link the
// other, nor miniredis.
func TestCoreImportsNoAdapter(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps .: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "/backend/rueidis") || strings.HasSuffix(dep, "/backend/goredis") ||
			strings.Contains(dep, "miniredis") || strings.HasPrefix(dep, "github.com/redis/") {
			t.Errorf("package presence depends on %s", dep)
		}
	}
}

// TestOpenUnknownBackend: a name nobody registered is refused before any
// connection, naming what is registered and what to import.
func TestOpenUnknownBackend(t *testing.T) {
	_, err := presence.Open(ctxT(t), presence.Config{RedisURL: "redis://127.0.0.1:1", Backend: "redix"})
	if !errors.Is(err, presence.ErrInvalidArgument) || !errors.Is(err, backend.ErrUnknownAdapter) {
		t.Fatalf("Open with Backend redix: %v, want ErrInvalidArgument and backend.ErrUnknownAdapter", err)
	}
	for _, want := range []string{`"redix"`, "goredis", "rueidis", backend.BuiltinImport} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// recordingAdapter is a custom adapter registered by name: it records what
// Open passed it and connects through rueidis.
var recordingAdapter struct {
	mu   sync.Mutex
	seen []backend.OpenOptions
}

func init() {
	backend.Register("recording-test", func(ctx context.Context, o backend.OpenOptions) (backend.Client, error) {
		recordingAdapter.mu.Lock()
		recordingAdapter.seen = append(recordingAdapter.seen, o)
		recordingAdapter.mu.Unlock()
		return rueidis.New(ctx, rueidis.Options{URL: o.URL, Addrs: o.Addrs, Logger: o.Logger})
	})
}

// TestOpenRegisteredBackend: Config.Backend selects an adapter registered
// from outside the package the same way as a built-in one, and the adapter
// gets the configured address and logger.
func TestOpenRegisteredBackend(t *testing.T) {
	srv := redistest.Embedded(t)
	url := "redis://" + srv.Addr()
	svc, err := presence.Open(ctxT(t), presence.Config{RedisURL: url, Backend: "recording-test", Logger: quiet, KeyPrefix: redistest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.Join(ctxT(t), "r", "c", "u", nil); err != nil {
		t.Fatalf("Join through the registered adapter: %v", err)
	}
	recordingAdapter.mu.Lock()
	defer recordingAdapter.mu.Unlock()
	if len(recordingAdapter.seen) != 1 {
		t.Fatalf("the adapter was opened %d times, want 1", len(recordingAdapter.seen))
	}
	if o := recordingAdapter.seen[0]; o.URL != url || len(o.Addrs) != 0 || o.Logger != quiet {
		t.Errorf("the adapter got %+v, want URL %s and the configured logger", o, url)
	}
}
