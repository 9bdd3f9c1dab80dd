package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// BuiltinImport is the package whose blank import registers the built-in
// adapters (rueidis and goredis), named in the error of an Open that finds
// no adapter.
const BuiltinImport = "github.com/realtime-message/presence/backend/builtin"

// ErrUnknownAdapter is wrapped by the error of Open for a name no adapter
// registered.
var ErrUnknownAdapter = errors.New("backend: unknown adapter")

// OpenOptions say where Redis is: what a deployment configures, whatever
// the adapter. Adapter-specific settings (pool sizes, TLS, RESP version)
// belong to the adapter's own constructor, or to the URL where its parser
// reads them.
type OpenOptions struct {
	// URL is one server's redis:// or rediss:// URL; cluster seeds may be
	// added as ?addr=host:port.
	URL string
	// Addrs are host:port seeds, added to the URL's; several mean a Redis
	// Cluster.
	Addrs []string
	// Logger receives what the adapter's library reports (lost
	// subscriptions, failed dials). Never nil when called through Open.
	Logger *slog.Logger
}

// Opener connects an adapter as o says. The client it returns is owned by
// the caller: closing it closes its connections. It must work against a
// standalone Redis, a Redis Cluster and the embedded server (package
// embedded) without being told which one it faces.
type Opener func(ctx context.Context, o OpenOptions) (Client, error)

var adapters = struct {
	mu sync.RWMutex
	m  map[string]Opener
}{m: map[string]Opener{}}

// Register makes an adapter selectable by name, through Open and
// presence.Config.Backend. Call it from the adapter package's init, as
// database/sql drivers do; registering a name twice, an empty name or a nil
// Opener panics, since that is a programming error found at start-up.
func Register(name string, open Opener) {
	if name == "" || strings.TrimSpace(name) != name || open == nil {
		panic(fmt.Sprintf("backend: Register(%q): want a non-empty name without spaces and a non-nil Opener", name))
	}
	adapters.mu.Lock()
	defer adapters.mu.Unlock()
	if _, dup := adapters.m[name]; dup {
		panic(fmt.Sprintf("backend: adapter %q registered twice", name))
	}
	adapters.m[name] = open
}

// Adapters returns the registered adapter names, sorted.
func Adapters() []string {
	adapters.mu.RLock()
	defer adapters.mu.RUnlock()
	names := make([]string, 0, len(adapters.m))
	for n := range adapters.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Open connects the adapter registered as name. An unknown name is an
// error wrapping ErrUnknownAdapter that lists the registered names and
// says which import registers the built-in ones.
func Open(ctx context.Context, name string, o OpenOptions) (Client, error) {
	adapters.mu.RLock()
	open, ok := adapters.m[name]
	adapters.mu.RUnlock()
	if !ok {
		names := Adapters()
		if len(names) == 0 {
			return nil, fmt.Errorf("%w %q: no adapter is registered; import _ %q for rueidis and goredis, or your adapter's package",
				ErrUnknownAdapter, name, BuiltinImport)
		}
		return nil, fmt.Errorf("%w %q (registered: %s; import _ %q for rueidis and goredis)",
			ErrUnknownAdapter, name, strings.Join(names, ", "), BuiltinImport)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c, err := open(ctx, o)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("backend: adapter %q returned no client and no error", name)
	}
	return c, nil
}
