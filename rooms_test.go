package presence_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/realtime-message/presence"
)

// TestActiveRoomsPaging walks 300 rooms (more than a small set's single
// SSCAN page) in pages of 50 and checks every room comes back with its
// counts, and that a room whose last conn left is no longer listed.
func TestActiveRoomsPaging(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// More than 128 rooms: a smaller set is a listpack, which SSCAN
		// returns whole whatever COUNT says. The embedded server has no
		// paging to show and is slow with many scripts: fewer rooms there.
		n := 300
		if tg.server.Embedded {
			n = 40
		}
		for i := range n {
			room := fmt.Sprintf("room-%03d", i)
			if _, err := s.Join(ctx, room, "c1", "alice", nil); err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 { // a second conn of the same user, and another user
				if _, err := s.Join(ctx, room, "c2", "alice", nil); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Join(ctx, room, "c3", "bob", nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Leave(ctx, "room-001", "c1"); err != nil {
			t.Fatal(err)
		}
		seen := map[string]presence.RoomCount{}
		cursor, pages := "", 0
		for {
			page, next, err := s.ActiveRooms(ctx, cursor, 50)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if pages > 200 {
				t.Fatal("the walk does not end")
			}
			if !slices.IsSortedFunc(page, func(a, b presence.RoomCount) int { return cmpStr(a.Room, b.Room) }) {
				t.Fatalf("page not sorted: %v", page)
			}
			for _, rc := range page {
				seen[rc.Room] = rc
			}
			if next == "0" {
				break
			}
			cursor = next
		}
		if !tg.server.Embedded && pages < 2 {
			t.Errorf("300 rooms in %d page(s) of 50: paging not applied", pages)
		}
		if len(seen) != n-1 {
			t.Fatalf("listed %d rooms, want %d", len(seen), n-1)
		}
		if _, ok := seen["room-001"]; ok {
			t.Error("room-001 is empty but still listed")
		}
		for i := range n {
			room := fmt.Sprintf("room-%03d", i)
			if i == 1 {
				continue
			}
			want := presence.RoomCount{Room: room, Conns: 1, Users: 1}
			if i%3 == 0 {
				want.Conns, want.Users = 3, 2
			}
			if seen[room] != want {
				t.Errorf("%s: %+v, want %+v", room, seen[room], want)
			}
		}
	})
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestActiveRoomsBadInput(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		ctx := ctxT(t)
		for _, c := range []struct {
			cursor string
			count  int
		}{{"", 0}, {"", presence.MaxRoomsPage + 1}, {"abc", 10}, {"-1", 10}, {"123456789012345678901", 10}} {
			if _, _, err := s.ActiveRooms(ctx, c.cursor, c.count); !errors.Is(err, presence.ErrInvalidArgument) {
				t.Errorf("ActiveRooms(%q, %d): %v, want ErrInvalidArgument", c.cursor, c.count, err)
			}
		}
		page, next, err := s.ActiveRooms(ctx, "", 10)
		if err != nil || len(page) != 0 || next != "0" {
			t.Errorf("no rooms: %v %q %v", page, next, err)
		}
	})
}

// TestChannelLocks lists the held locks of a channel: an expired one and a
// released one are gone, another channel's lock is not listed.
func TestChannelLocks(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		s := newService(t, tg.connect(t), presence.Config{})
		ctx := ctxT(t)
		ch := presence.Channel{Type: "doc", Name: "d1"}
		other := presence.Channel{Type: "doc", Name: "d2"}
		must := func(_ presence.Lock, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(s.AcquireLock(ctx, ch, "edit", "alice", time.Minute))
		must(s.AcquireLock(ctx, ch, "title", "bob", time.Minute))
		must(s.AcquireLock(ctx, ch, "brief", "carol", 50*time.Millisecond))
		must(s.AcquireLock(ctx, ch, "gone", "dave", time.Minute))
		must(s.AcquireLock(ctx, other, "edit", "erin", time.Minute))
		if err := s.ReleaseLock(ctx, ch, "gone", "dave"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // brief's lock expires (every kind expires by wall clock)
		locks, err := s.ChannelLocks(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range locks {
			got = append(got, l.Name+"="+l.Owner)
			if l.ExpiresAt.IsZero() {
				t.Errorf("%s: no expiry", l.Name)
			}
		}
		if want := []string{"edit=alice", "title=bob"}; !slices.Equal(got, want) {
			t.Errorf("locks %v, want %v", got, want)
		}
		if _, err := s.ChannelLocks(ctx, presence.Channel{Type: "a:b", Name: "x"}); !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("bad channel type: %v", err)
		}
		if l, err := s.ChannelLocks(ctx, presence.Channel{Type: "doc", Name: "none"}); err != nil || len(l) != 0 {
			t.Errorf("no locks: %v %v", l, err)
		}
	})
}
