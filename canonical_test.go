package presence

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// slowCanonical is the canonical encoding by decode and encode alone, the
// reference for canonicalValue's fast path.
func slowCanonical(t *testing.T, v string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestCanonicalValueMatchesDecodeEncode(t *testing.T) {
	for _, v := range []string{
		`true`, `false`, `null`, `0`, `-1`, `1.50`, `1e3`, `-0.0E-2`, `12345678901234567890`,
		`""`, `"abc"`, `"a<b>&c"`, `"é 😀"`, `"a\"b"`, `"\u0041"`, `"a\/b"`, `"line\nbreak"`,
		"\"\u2028\"", "\"x\u2029y\"", `"\ud83d\ude00"`,
		`{}`, `{"b":1,"a":2}`, `{ "a" : [1, 2 ,{"z":null,"y":true}] }`, `[ ]`, `[1,"2",[3]]`,
	} {
		got, err := canonicalValue(json.RawMessage(v))
		if err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		if want := slowCanonical(t, v); got != want {
			t.Errorf("canonicalValue(%s) = %s, want %s", v, got, want)
		}
	}
}

func TestCanonicalStateErrors(t *testing.T) {
	for raw, want := range map[string]string{
		`{"a":1`:        "ends early",
		`{"a":1} x`:     "data after the JSON object",
		`{"a":1,}`:      "not valid JSON (at byte",
		`[1]`:           "must be a JSON object",
		`"s"`:           "must be a JSON object",
		`{"a\u0000":1}`: "state key",
	} {
		_, err := canonicalState("state", json.RawMessage(raw), 1<<16)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("canonicalState(%s): %v, want an error containing %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "json.RawMessage") {
			t.Errorf("canonicalState(%s): %v names a Go type", raw, err)
		}
	}
	f, err := canonicalState("state", json.RawMessage(`{"b": "x", "a": {"d":1, "c":2}}`), 1<<16)
	if err != nil || len(f) != 2 || f[0].Key != "a" || f[0].Value != `{"c":2,"d":1}` || f[1].Value != `"x"` {
		t.Fatalf("canonicalState: %+v %v", f, err)
	}
}
