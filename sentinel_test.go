package presence_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/realtime-message/presence"
)

// The sentinel reports its own absence once per loss: first write, after
// DropSentinel (as after a flush), and never while it is there.
func TestSentinel(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i, want := range []bool{false, true, true} {
			found, err := s.TouchSentinel(ctx, "node-1", time.Minute)
			if err != nil || found != want {
				t.Fatalf("touch %d: found %v, %v; want %v", i, found, err, want)
			}
		}
		if err := s.DropSentinel(ctx, "node-1"); err != nil {
			t.Fatal(err)
		}
		if found, err := s.TouchSentinel(ctx, "node-1", time.Minute); err != nil || found {
			t.Fatalf("touch after drop: found %v, %v; want false", found, err)
		}
		if _, err := s.TouchSentinel(ctx, "bad{id}", time.Minute); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Fatalf("touch with a bad id: %v, want ErrInvalidArgument", err)
		}
	})
}
