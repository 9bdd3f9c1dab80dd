package presence

import (
	"errors"
	"testing"
)

// A prefix that would move the hash tag or widen the pattern
// subscriptions built from it is refused; an ordinary one is kept.
func TestKeyPrefixCharacters(t *testing.T) {
	for _, p := range []string{"a{b", "a}b", "app*", "app?", "app[1]", `a\b`, "a b", "a\tb", "a\x00b", "a\x7fb"} {
		if _, err := (Config{KeyPrefix: p}).withDefaults(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("KeyPrefix %q: %v, want ErrInvalidArgument", p, err)
		}
	}
	for _, p := range []string{"prs", "app:v2", "tenant-1.eu_west"} {
		c, err := (Config{KeyPrefix: p}).withDefaults()
		if err != nil || c.KeyPrefix != p {
			t.Errorf("KeyPrefix %q: %q, %v", p, c.KeyPrefix, err)
		}
	}
}
