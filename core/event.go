package core

import "encoding/json"

// The events as publishers write them. Subscribers decode them as
// presence.Event and presence.MetadataEvent, declared where users read
// them; a test in package presence keeps both sides field for field.

// PresenceEvent is the payload published on a room's event channel and
// forwarded to clients as presence:event. The pipeline strategy marshals
// this struct; the scripts build the same JSON by hand; field names are
// docs/PROTOCOL.md's.
type PresenceEvent struct {
	Type   string          `json:"type"` // join, leave, update
	RoomID string          `json:"roomId"`
	UserID string          `json:"userId"`
	ConnID string          `json:"connId"`
	State  json.RawMessage `json:"state"` // object, or null
	TS     int64           `json:"ts"`
	Epoch  int64           `json:"epoch"`
	Seq    int64           `json:"seq"`
}

// MetadataEvent is the payload published on a channel's meta_events
// channel after every successful mutation and forwarded to clients as
// metadata:event (docs/PROTOCOL.md). The watch strategy marshals this struct;
// meta_mutate.lua builds the same fields by hand, so subscribers decode
// both alike.
type MetadataEvent struct {
	ChannelName   string              `json:"channelName"`
	ChannelType   string              `json:"channelType"`
	Operation     string              `json:"operation"` // set, update, remove
	Items         []MetadataEventItem `json:"items"`     // never null
	MajorRevision int64               `json:"majorRevision"`
	Timestamp     int64               `json:"timestamp"` // ms
	AuthorUID     string              `json:"authorUid,omitempty"`
}

// MetadataEventItem is one item an event carries: for set and update the
// item as written, for remove the item as it was before removal.
type MetadataEventItem struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Revision int64  `json:"revision"`
}
