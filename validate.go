package presence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/realtime-message/presence/luacall"
)

// MaxEpoch is the largest epoch: 2^53-1, JavaScript's largest safe integer
// and exact in Lua's doubles. A Join whose conn already holds it fails with
// ErrInvalidArgument instead of returning an epoch that is not greater.
const MaxEpoch int64 = 1<<53 - 1

// EpochLead bounds how far a heartbeat's epoch may run ahead of the
// server's clock. Epochs are issued by Join as max(previous + 1, now), so
// an honest client's epoch leads the clock only by the skew between nodes;
// without the bound one heartbeat could push a conn's epoch to MaxEpoch
// and make its id unusable after the next leave, and keep its room's gone
// index alive for millennia.
const EpochLead = time.Hour

// checkEpoch validates a client's epoch against the clock (ms).
func checkEpoch(epoch, nowMs int64) error {
	if epoch < 0 {
		return invalid("epoch %d must not be negative", epoch)
	}
	if limit := nowMs + EpochLead.Milliseconds(); epoch > limit || epoch > MaxEpoch {
		return invalid("epoch %d is ahead of the server clock (%d ms) by more than %v; send the epoch join returned", epoch, nowMs, EpochLead)
	}
	return nil
}

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

// checkKey validates a metadata item key or a state key: the character
// rules of ids (UTF-8, no control characters such as NUL or newline), which
// keep keys printable in logs and events. Braces stay allowed: unlike ids,
// these keys never become part of a Redis key.
func checkKey(what, key string) error {
	if !utf8.ValidString(key) {
		return invalid("%s %q is not valid UTF-8", what, key)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return invalid("%s %q contains %q, which is not allowed", what, key, r)
		}
	}
	return nil
}

// checkJSONText refuses JSON text that encoding/json would silently repair:
// invalid UTF-8, and \u escapes of lone UTF-16 surrogates, both of which it
// decodes as U+FFFD, so the stored value would not be what was sent.
func checkJSONText(what string, raw []byte) error {
	if !utf8.Valid(raw) {
		return invalid("%s is not valid UTF-8", what)
	}
	lone := func(r rune) error {
		return invalid("%s holds a lone UTF-16 surrogate \\u%04x, which is not a character", what, r)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			continue // the decoder reports the syntax error
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return lone(r)
		case r >= 0xD800 && r <= 0xDBFF:
			if i+2 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return lone(r)
			}
			if lo, ok := hex4(raw[i+3:]); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return lone(r)
			}
			i += 6
		}
	}
	return nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

// canonicalValue returns a JSON value (already validated) in the one
// encoding the service stores, so equal values compare equal in Redis: no
// whitespace, numbers as written, strings with encoding/json's escapes,
// object keys sorted. Scalars already in that form, the common case of a
// patch, skip the decode and encode.
func canonicalValue(v json.RawMessage) (string, error) {
	if isCanonicalScalar(v) {
		return string(v), nil
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// isCanonicalScalar reports whether v, a valid JSON value, is a literal,
// a number or a string that encoding/json would write back unchanged:
// no escapes, and no U+2028 or U+2029 (which it escapes).
func isCanonicalScalar(v json.RawMessage) bool {
	if len(v) == 0 {
		return false
	}
	switch c := v[0]; {
	case c == 't' || c == 'f' || c == 'n':
		return string(v) == "true" || string(v) == "false" || string(v) == "null"
	case c == '-' || (c >= '0' && c <= '9'):
		for _, b := range v {
			if b == ' ' || b == '\t' || b == '\n' || b == '\r' {
				return false
			}
		}
		return true
	case c == '"':
		return !bytes.ContainsRune(v, '\\') && !bytes.ContainsRune(v, '\u2028') && !bytes.ContainsRune(v, '\u2029') &&
			len(v) >= 2 && v[len(v)-1] == '"'
	}
	return false
}

// canonicalState parses a JSON object and returns its top-level fields,
// sorted by key, each value re-encoded by canonicalValue, so "changed" can
// be decided by comparing bytes. Empty input and null are no fields (join
// and heartbeat accept both); anything else that is not an object, or
// whose encoding exceeds maxBytes, is ErrInvalidArgument naming what.
func canonicalState(what string, raw json.RawMessage, maxBytes int) ([]luacall.KeyValue, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	if len(raw) > 4*maxBytes+1024 {
		return nil, invalid("%s is %d bytes, more than %d", what, len(raw), maxBytes)
	}
	if err := checkJSONText(what, raw); err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		// The decoder's own messages name Go types ("Go value of type
		// map[string]json.RawMessage"), which mean nothing to a client.
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn) && strings.Contains(syn.Error(), "end of JSON input"):
			return nil, invalid("%s is not valid JSON (it ends early)", what)
		case errors.As(err, &syn) && strings.Contains(syn.Error(), "after top-level value"):
			return nil, invalid("%s has data after the JSON object", what)
		case errors.As(err, &syn):
			return nil, invalid("%s is not valid JSON (at byte %d)", what, syn.Offset)
		}
		return nil, invalid("%s must be a JSON object", what)
	}
	if obj == nil {
		return nil, invalid("%s must be a JSON object", what)
	}
	fields := make([]luacall.KeyValue, 0, len(obj))
	total := 2
	for k, v := range obj {
		if err := checkKey(what+" key", k); err != nil {
			return nil, err
		}
		val, err := canonicalValue(v)
		if err != nil {
			return nil, invalid("%s key %q holds a value that cannot be encoded", what, k)
		}
		fields = append(fields, luacall.KeyValue{Key: k, Value: val})
		total += len(k) + len(val) + 4
	}
	if total > maxBytes {
		return nil, invalid("%s is %d bytes encoded, more than %d", what, total, maxBytes)
	}
	slices.SortFunc(fields, func(a, b luacall.KeyValue) int { return strings.Compare(a.Key, b.Key) })
	return fields, nil
}
