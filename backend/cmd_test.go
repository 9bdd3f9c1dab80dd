package backend_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/realtime-message/presence/backend"
)

func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{
		// Values from Redis's CLUSTER KEYSLOT.
		"foo":                  12182,
		"bar":                  5061,
		"":                     0,
		"{user1000}.following": 3443,
		"user1000":             3443,
	} {
		if got := backend.KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if a, b := backend.KeySlot("{user1000}.following"), backend.KeySlot("{user1000}.followers"); a != b {
		t.Errorf("hash tag ignored: %d != %d", a, b)
	}
	// An empty tag does not count: the whole key is hashed.
	if backend.KeySlot("{}x") == backend.KeySlot("") || backend.KeySlot("{}x") == backend.KeySlot("x") {
		t.Error(`KeySlot("{}x") hashed a part of the key`)
	}
	// Only the first '{' and the first '}' after it count.
	if backend.KeySlot("a{b}c{d}") != backend.KeySlot("b") || backend.KeySlot("{{b}}") != backend.KeySlot("{b") {
		t.Error("hash tag rules differ from Redis")
	}
	// No closing brace: the whole key.
	if backend.KeySlot("{abc") == backend.KeySlot("abc") {
		t.Error(`KeySlot("{abc") used an unterminated tag`)
	}
}

func TestCmdLine(t *testing.T) {
	c := backend.Cmd{Name: "EVALSHA", Pre: []string{"sha", "2"}, Keys: []string{"k1", "k2"}, Args: []string{"a", "b"}}
	if got, want := c.Line(), []string{"EVALSHA", "sha", "2", "k1", "k2", "a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Line = %q, want %q", got, want)
	}
	if got, want := backend.K("HSET", "h", "f", "v").Line(), []string{"HSET", "h", "f", "v"}; !slices.Equal(got, want) {
		t.Errorf("K: %q", got)
	}
	if got, want := backend.C("DEL", []string{"a", "b"}).Line(), []string{"DEL", "a", "b"}; !slices.Equal(got, want) {
		t.Errorf("C: %q", got)
	}
}

func TestSlotAndCheckSlots(t *testing.T) {
	if s, err := backend.K("PING", "").Slot(); err != nil || s != 0 {
		t.Errorf("Slot of one key: %d, %v", s, err)
	}
	if s, err := (backend.Cmd{Name: "PING"}).Slot(); err != nil || s != -1 {
		t.Errorf("Slot without keys: %d, %v", s, err)
	}
	same := backend.C("DEL", []string{"{u1}a", "{u1}b"})
	if s, err := same.Slot(); err != nil || s != backend.KeySlot("u1") {
		t.Errorf("Slot of tagged keys: %d, %v", s, err)
	}
	cross := backend.C("DEL", []string{"foo", "bar"})
	if _, err := cross.Slot(); !errors.Is(err, backend.ErrCrossSlot) {
		t.Errorf("Slot of cross-slot keys: %v", err)
	}
	if err := backend.CheckSlots([]backend.Cmd{backend.K("GET", "foo"), backend.K("GET", "bar"), same}); err != nil {
		t.Errorf("CheckSlots of single-slot commands: %v", err)
	}
	if err := backend.CheckSlots([]backend.Cmd{backend.K("GET", "foo"), cross}); !errors.Is(err, backend.ErrCrossSlot) {
		t.Errorf("CheckSlots with a cross-slot command: %v", err)
	}
	if err := backend.SameSlot([]string{"{x}1", "{x}2"}); err != nil {
		t.Errorf("SameSlot: %v", err)
	}
	if err := backend.SameSlot([]string{"foo", "bar"}); !errors.Is(err, backend.ErrCrossSlot) {
		t.Errorf("SameSlot cross: %v", err)
	}
	if backend.Itoa(-42) != "-42" {
		t.Error("Itoa")
	}
}

func TestCheckSlotsSharedTagFastPath(t *testing.T) {
	ok := []backend.Cmd{backend.C("DEL", []string{"a{t}1", "b{t}2", "{t}"})}
	if err := backend.CheckSlots(ok); err != nil {
		t.Fatal(err)
	}
	// Different tags that happen to collide would still pass through the
	// CRC path; different tags in different slots must fail.
	bad := []backend.Cmd{backend.C("DEL", []string{"{room:a}x", "{room:b}x"})}
	if backend.KeySlot("{room:a}x") != backend.KeySlot("{room:b}x") && !errors.Is(backend.CheckSlots(bad), backend.ErrCrossSlot) {
		t.Fatal("keys of two tags in two slots passed")
	}
	// An empty tag is no tag: "{}a" and "{}b" hash as whole keys.
	if backend.KeySlot("{}a") != backend.KeySlot("{}b") && !errors.Is(backend.CheckSlots([]backend.Cmd{backend.C("DEL", []string{"{}a", "{}b"})}), backend.ErrCrossSlot) {
		t.Fatal("empty tags treated as one tag")
	}
}
