package socketio

import (
	"strings"
	"testing"

	"github.com/zishang520/socket.io/v3/pkg/types"
)

// Issue 11 (6): a binary attachment where JSON belongs is refused without
// naming the parser's Go type, and so is a string the parser repaired.
func TestPayloadNonJSONValues(t *testing.T) {
	bin := types.NewBytesBufferString("x")
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"join with a binary roomId", func() error { _, err := parseJoin(map[string]any{"roomId": bin, "userId": "u"}); return err }()},
		{"binary payload", func() error { _, err := parseHeartbeat(bin); return err }()},
		{"binary state value", func() error {
			_, err := parseHeartbeat(map[string]any{"patchState": map[string]any{"k": []any{bin}}})
			return err
		}()},
		{"binary item value", func() error {
			_, err := parseMeta(map[string]any{"channelName": "n", "channelType": "t", "data": []any{map[string]any{"key": "k", "value": bin}}}, dataOptional)
			return err
		}()},
		{"binary lock name", func() error {
			_, err := parseLock(map[string]any{"channelName": "n", "channelType": "t", "lockName": bin}, false)
			return err
		}()},
		{"U+FFFD in a user id", func() error { _, err := parseJoin(map[string]any{"roomId": "r", "userId": "u\uFFFD"}); return err }()},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if strings.Contains(tc.err.Error(), "*types") || strings.Contains(tc.err.Error(), "Buffer") {
			t.Errorf("%s: %q names a Go type", tc.name, tc.err)
		}
	}
}
