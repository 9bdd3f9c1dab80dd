package strategy

import (
	"encoding/json"
	"slices"
	"strings"
)

// PresenceEvent is the payload published on a room's event channel and
// forwarded to clients as presence:event. Scripts build the same JSON by
// hand; field names are docs/PROTOCOL.md's.
type PresenceEvent struct {
	Type   string          `json:"type"` // join, leave, update
	RoomID string          `json:"roomId"`
	UserID string          `json:"userId"`
	ConnID string          `json:"connId"`
	State  json.RawMessage `json:"state"` // object, or null
	TS     int64           `json:"ts"`
	Epoch  int64           `json:"epoch"`
}

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
