package core

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/realtime-message/presence/backend"
)

// MetaEntry is a stored item.
type MetaEntry struct {
	Value    string
	Revision int64
	Updated  string // ISO-8601 UTC with milliseconds, or ""
	Author   string // or ""
}

// MetaRecord is a channel's metadata.
type MetaRecord struct {
	MajorRevision int64
	Items         map[string]MetaEntry
}

// A channel's metadata is one hash, Keys.Meta(type, name), so every
// mutation touches one key (plus the lock key, in the same slot):
//
//	major     majorRevision (absent = 0)
//	v:<key>   the item's value
//	r:<key>   the item's revision; an item exists iff this field does
//	u:<key>   the item's updated time (ISO-8601 UTC, ms), when stamped
//	a:<key>   the item's author (authorUid), when stamped
//
// The hash outlives its last item (it keeps major), so majorRevision never
// goes back to 0 and a compare-and-set against an old majorRevision can't
// succeed again after remove-all. No count field is kept: the count is the
// number of r: fields, and "no items" is HLEN <= 1.
const (
	MetaFieldMajor    = "major"
	MetaPrefixValue   = "v:"
	MetaPrefixRev     = "r:"
	MetaPrefixUpdated = "u:"
	MetaPrefixAuthor  = "a:"
)

// metaTimeLayout is ISO-8601 UTC with milliseconds, as JavaScript's
// Date.prototype.toISOString writes it.
const metaTimeLayout = "2006-01-02T15:04:05.000Z"

// FormatMetaTime formats ms since the epoch as an item's updated time, e.g.
// "2026-11-26T08:00:00.123Z".
func FormatMetaTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(metaTimeLayout)
}

// ParseMetaHash decodes a channel's meta hash (HGETALL). An empty hash is
// an empty record with majorRevision 0.
func ParseMetaHash(h map[string]string) (MetaRecord, error) {
	rec := MetaRecord{Items: make(map[string]MetaEntry, len(h)/2)}
	if s, ok := h[MetaFieldMajor]; ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return MetaRecord{}, fmt.Errorf("presence: meta hash has majorRevision %q", s)
		}
		rec.MajorRevision = n
	}
	for f, s := range h {
		k, ok := strings.CutPrefix(f, MetaPrefixRev)
		if !ok {
			continue
		}
		rev, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return MetaRecord{}, fmt.Errorf("presence: meta item %q has revision %q", k, s)
		}
		rec.Items[k] = MetaEntry{
			Value:    h[MetaPrefixValue+k],
			Revision: rev,
			Updated:  h[MetaPrefixUpdated+k],
			Author:   h[MetaPrefixAuthor+k],
		}
	}
	return rec, nil
}

// ParseMetaReply decodes a reply holding a meta hash (HGETALL's, or the
// one meta_mutate.lua returns).
func ParseMetaReply(r backend.Reply) (MetaRecord, error) {
	if err := r.Error(); err != nil {
		return MetaRecord{}, err
	}
	h, err := r.AsStringMap()
	if err != nil {
		return MetaRecord{}, fmt.Errorf("presence: unexpected meta hash reply: %w", err)
	}
	return ParseMetaHash(h)
}
