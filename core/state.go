package core

import (
	"encoding/json"
	"slices"
	"strings"
)

// StatePrefix marks state fields in a conn hash: field "s:<key>" holds the
// canonical JSON of the state's top-level key.
const StatePrefix = "s:"

// StateFromHash assembles the JSON state object from a conn hash's state
// fields, keys sorted, values verbatim.
func StateFromHash(h map[string]string) json.RawMessage {
	var keys []string
	for f := range h {
		if k, ok := strings.CutPrefix(f, StatePrefix); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		b.Write(kj)
		b.WriteByte(':')
		b.WriteString(h[StatePrefix+k])
	}
	b.WriteByte('}')
	return json.RawMessage(b.String())
}
