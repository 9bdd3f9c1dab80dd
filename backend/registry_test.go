package backend

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// withAdapters runs the test on an empty registry, restored afterwards.
func withAdapters(t *testing.T) {
	adapters.mu.Lock()
	saved := adapters.m
	adapters.m = map[string]Opener{}
	adapters.mu.Unlock()
	t.Cleanup(func() {
		adapters.mu.Lock()
		adapters.m = saved
		adapters.mu.Unlock()
	})
}

type stubClient struct{ Client }

func TestRegistry(t *testing.T) {
	withAdapters(t)
	ctx := context.Background()

	// Nothing registered: the error says what to import.
	_, err := Open(ctx, "rueidis", OpenOptions{})
	if !errors.Is(err, ErrUnknownAdapter) || !strings.Contains(err.Error(), BuiltinImport) || !strings.Contains(err.Error(), "no adapter is registered") {
		t.Errorf("Open on an empty registry: %v", err)
	}

	var got OpenOptions
	Register("b", func(_ context.Context, o OpenOptions) (Client, error) { got = o; return stubClient{}, nil })
	Register("a", func(context.Context, OpenOptions) (Client, error) { return nil, errors.New("dial failed") })
	Register("nil", func(context.Context, OpenOptions) (Client, error) { return nil, nil })
	if names := strings.Join(Adapters(), ","); names != "a,b,nil" {
		t.Errorf("Adapters() = %s, want a,b,nil", names)
	}

	_, err = Open(ctx, "c", OpenOptions{})
	if !errors.Is(err, ErrUnknownAdapter) || !strings.Contains(err.Error(), `"c" (registered: a, b, nil;`) {
		t.Errorf("Open of an unknown name: %v", err)
	}
	c, err := Open(ctx, "b", OpenOptions{URL: "redis://x", Addrs: []string{"h:1"}})
	if err != nil || c == nil {
		t.Fatalf("Open(b) = %v, %v", c, err)
	}
	if got.URL != "redis://x" || len(got.Addrs) != 1 || got.Logger == nil {
		t.Errorf("the opener got %+v, want the options and a default logger", got)
	}
	if _, err := Open(ctx, "a", OpenOptions{}); err == nil || err.Error() != "dial failed" {
		t.Errorf("Open(a) = %v, want the opener's error unchanged", err)
	}
	if _, err := Open(ctx, "nil", OpenOptions{}); err == nil {
		t.Error("Open of an opener returning (nil, nil) succeeded")
	}

	for _, tc := range []struct {
		name string
		open Opener
	}{
		{"b", func(context.Context, OpenOptions) (Client, error) { return nil, nil }}, // twice
		{"", func(context.Context, OpenOptions) (Client, error) { return nil, nil }},
		{" x", func(context.Context, OpenOptions) (Client, error) { return nil, nil }},
		{"x", nil},
	} {
		t.Run("refuse/"+tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tc.name)
				}
			}()
			Register(tc.name, tc.open)
		})
	}
}
