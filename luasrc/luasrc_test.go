package luasrc_test

import (
	"crypto/sha1"
	"encoding/hex"
	"os"
	"testing"

	"github.com/realtime-message/presence/luasrc"
)

// Each script's SHA1 was computed by the generator from the file; it must
// be the SHA1 of the bytes embedded now, or EVALSHA would miss on every
// call, and the embedded bytes must be the file's.
func TestEmbeddedSourcesMatchTheirSHA1(t *testing.T) {
	if len(luasrc.All) == 0 {
		t.Fatal("no scripts")
	}
	for _, s := range luasrc.All {
		sum := sha1.Sum([]byte(s.Source))
		if got := hex.EncodeToString(sum[:]); got != s.SHA1 {
			t.Errorf("%s: SHA1 %s, embedded source hashes to %s: run go generate ./luasrc", s.Name, s.SHA1, got)
		}
		file, err := os.ReadFile(s.Name + ".lua")
		if err != nil {
			t.Fatal(err)
		}
		if string(file) != s.Source {
			t.Errorf("%s: embedded source differs from %s.lua", s.Name, s.Name)
		}
	}
}
