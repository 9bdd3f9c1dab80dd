package presence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/realtime-message/presence/strategy"
)

// MaxEpoch is the largest epoch: 2^53-1, JavaScript's largest safe integer
// and exact in Lua's doubles. Heartbeats accept epochs up to it, so any
// epoch Join returned is accepted; a Join whose conn already holds it fails
// with ErrInvalidArgument instead of returning an epoch that is not greater.
const MaxEpoch int64 = 1<<53 - 1

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

// checkID validates a room, conn, user, channel or lock id: non-empty UTF-8
// of at most max bytes, without '{', '}' (they would break the cluster hash
// tag and let two ids share keys) or control characters. extra lists more
// forbidden runes.
func checkID(what, id string, max int, extra string) error {
	if id == "" {
		return invalid("%s is empty", what)
	}
	if len(id) > max {
		return invalid("%s is %d bytes, more than %d", what, len(id), max)
	}
	if !utf8.ValidString(id) {
		return invalid("%s is not valid UTF-8", what)
	}
	for _, r := range id {
		if r == '{' || r == '}' || unicode.IsControl(r) || strings.ContainsRune(extra, r) {
			return invalid("%s %q contains %q, which is not allowed", what, id, r)
		}
	}
	return nil
}

// canonicalState parses a JSON object and returns its top-level fields,
// sorted by key, each value re-encoded canonically (object keys sorted,
// numbers as written, no HTML escaping), so "changed" can be decided by
// comparing bytes. Empty input is an empty object when allowEmpty.
func canonicalState(what string, raw json.RawMessage, maxBytes int) ([]strategy.Field, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	if len(raw) > 4*maxBytes+1024 {
		return nil, invalid("%s is %d bytes, more than %d", what, len(raw), maxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, invalid("%s must be a JSON object: %v", what, err)
	}
	if obj == nil {
		return nil, invalid("%s must be a JSON object", what)
	}
	if dec.More() {
		return nil, invalid("%s has data after the JSON object", what)
	}
	fields := make([]strategy.Field, 0, len(obj))
	total := 2
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for k, v := range obj {
		if !utf8.ValidString(k) {
			return nil, invalid("%s key %q is not valid UTF-8", what, k)
		}
		buf.Reset()
		if err := enc.Encode(v); err != nil {
			return nil, invalid("%s key %q: %v", what, k, err)
		}
		val := strings.TrimSuffix(buf.String(), "\n")
		fields = append(fields, strategy.Field{Key: k, Value: val})
		total += len(k) + len(val) + 4
	}
	if total > maxBytes {
		return nil, invalid("%s is %d bytes encoded, more than %d", what, total, maxBytes)
	}
	slices.SortFunc(fields, func(a, b strategy.Field) int { return strings.Compare(a.Key, b.Key) })
	return fields, nil
}
