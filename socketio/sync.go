package socketio

import (
	"context"
	"encoding/json"

	"github.com/realtime-message/presence"
)

// Mirroring a room exactly. Every presence change of a room carries the
// room's sequence number (presence.Event.Seq), and so do the join ack and
// presence:sync's snapshot: a client applies, in order, the events whose
// seq is above its snapshot's and takes a new snapshot (presence:sync)
// when it sees a gap. Events lost by this node (its subscription to Redis
// reconnected, or Redis lost the room) leave a gap a client may never see,
// since no later event need come; so after such a loss the binding tells
// each local room to resync (a presence:event of type "resync").

// syncAck is presence:sync's success ack (docs/PROTOCOL.md).
type syncAck struct {
	OK       bool             `json:"ok"`
	RoomID   string           `json:"roomId"`
	Seq      int64            `json:"seq"`
	Snapshot []presence.Entry `json:"snapshot"`
}

// resyncEvent is the presence:event that tells a room's clients to take a
// new snapshot.
type resyncEvent struct {
	Type   string `json:"type"` // "resync"
	RoomID string `json:"roomId"`
}

// sync answers the socket's room as it is now, with its seq.
func (c *conn) sync(ctx context.Context, _ any) (any, error) {
	c.mu.Lock()
	room := c.room
	c.mu.Unlock()
	if room == "" {
		return nil, errNotJoined
	}
	r, err := c.b.svc.SnapshotSeq(ctx, room)
	if err != nil {
		return nil, err
	}
	snap := r.Snapshot
	if snap == nil {
		snap = []presence.Entry{}
	}
	return syncAck{OK: true, RoomID: room, Seq: r.Seq, Snapshot: snap}, nil
}

// announceResync sends every local presence room a resync event: the
// events of a lost stretch cannot be replayed, so clients take a snapshot.
func (b *Binding) announceResync() {
	b.rmu.RLock()
	rooms := make([]string, 0, len(b.rooms))
	for r := range b.rooms {
		rooms = append(rooms, r)
	}
	b.rmu.RUnlock()
	for _, r := range rooms {
		payload, err := json.Marshal(resyncEvent{Type: "resync", RoomID: r})
		if err != nil {
			continue // unreachable: two strings
		}
		b.forward(r, EventPresence, payload)
	}
}
