package strategy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/realtime-message/presence/backend"
)

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

// MaxMetaRevision bounds revisions and majorRevisions a caller may pass:
// 2^52 keeps them, and their increments, exact in Lua's doubles and in
// JavaScript numbers.
const MaxMetaRevision int64 = 1 << 52

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
			return MetaRecord{}, fmt.Errorf("strategy: meta hash has majorRevision %q", s)
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
			return MetaRecord{}, fmt.Errorf("strategy: meta item %q has revision %q", k, s)
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
		return MetaRecord{}, fmt.Errorf("strategy: unexpected meta hash reply: %w", err)
	}
	return ParseMetaHash(h)
}

// The errors of a refused mutation; both strategies return these, so a
// caller sees the same message whichever runs.
func errMetaLocked(req MetaRequest) error {
	if req.Actor == "" {
		return fmt.Errorf("%w: lock %q requires an acting user", ErrLocked, req.LockName)
	}
	return fmt.Errorf("%w: lock %q is not held by %q", ErrLocked, req.LockName, req.Actor)
}

// errMetaHeld is the refusal of enforced locks: lock is live and req
// does not write under it.
func errMetaHeld(req MetaRequest, lock string) error {
	if req.LockName == "" {
		return fmt.Errorf("%w: channel %s:%s is locked (lock %q); only its holder may write, naming it in lockName", ErrLocked, req.Type, req.Name, lock)
	}
	return fmt.Errorf("%w: channel %s:%s is also locked by lock %q, not held by %q", ErrLocked, req.Type, req.Name, lock, req.Actor)
}

func errMetaMajor(req MetaRequest, cur int64) error {
	return fmt.Errorf("%w: majorRevision is %d, not %d", ErrConflict, cur, req.MajorRevision)
}

func errMetaRevision(key string, cur, want int64) error {
	return fmt.Errorf("%w: item %q has revision %d, not %d", ErrConflict, key, cur, want)
}

func errMetaUnknown(key string) error {
	return fmt.Errorf("%w: update of unknown metadata item %q", ErrInvalidArgument, key)
}

func errMetaEmpty(req MetaRequest) error {
	return fmt.Errorf("%w: update of channel %s:%s, which has no metadata", ErrInvalidArgument, req.Type, req.Name)
}

// metaPlan is a mutation decided in Go against the stored record (the
// watch strategy's rules; meta_mutate.lua implements the same ones).
type metaPlan struct {
	replace bool           // set: the hash is deleted before the writes
	written []string       // keys written, in request order
	removed []string       // keys removed
	record  MetaRecord     // the record afterwards
	event   *MetadataEvent // nil: nothing changes, nothing is published
}

// planMeta applies req to cur. lockOwner is the lock's value and lockHeld
// whether the lock key exists (only read when req.LockName is set).
func planMeta(req MetaRequest, cur MetaRecord, lockOwner string, lockHeld bool) (metaPlan, error) {
	if req.LockName != "" && (req.Actor == "" || !lockHeld || lockOwner != req.Actor) {
		return metaPlan{}, errMetaLocked(req)
	}
	if req.MajorRevision >= 0 && req.MajorRevision != cur.MajorRevision {
		return metaPlan{}, errMetaMajor(req, cur.MajorRevision)
	}
	stamp, author := "", ""
	if req.AddTimestamp {
		stamp = FormatMetaTime(req.NowMs)
	}
	if req.AddUserID {
		author = req.Actor
	}
	next := MetaRecord{MajorRevision: cur.MajorRevision, Items: make(map[string]MetaEntry, len(cur.Items)+len(req.Items))}
	p := metaPlan{}
	var out []MetadataEventItem
	write := func(k string, e MetaEntry) {
		if stamp != "" {
			e.Updated = stamp
		}
		if author != "" {
			e.Author = author
		}
		next.Items[k] = e
		p.written = append(p.written, k)
		out = append(out, MetadataEventItem{Key: k, Value: e.Value, Revision: e.Revision})
	}
	switch req.Op {
	case OpSet:
		p.replace = true
		for _, it := range req.Items {
			rev := int64(1)
			if it.Revision > 0 {
				rev = it.Revision
			}
			write(it.Key, MetaEntry{Value: it.Value, Revision: rev})
		}
	case OpUpdate:
		for _, it := range req.Items {
			e, ok := cur.Items[it.Key]
			if !ok {
				if len(cur.Items) == 0 {
					return metaPlan{}, errMetaEmpty(req)
				}
				return metaPlan{}, errMetaUnknown(it.Key)
			}
			if it.Revision >= 0 && it.Revision != e.Revision {
				return metaPlan{}, errMetaRevision(it.Key, e.Revision, it.Revision)
			}
		}
		for k, e := range cur.Items {
			next.Items[k] = e
		}
		for _, it := range req.Items {
			e := cur.Items[it.Key]
			e.Value, e.Revision = it.Value, e.Revision+1
			write(it.Key, e)
		}
	case OpRemove:
		for k, e := range cur.Items {
			next.Items[k] = e
		}
		keys := make([]string, 0, len(req.Items))
		if len(req.Items) == 0 {
			for k := range cur.Items {
				keys = append(keys, k)
			}
			slices.Sort(keys) // byte order, as meta_mutate.lua sorts
		} else {
			for _, it := range req.Items {
				keys = append(keys, it.Key)
			}
		}
		for _, k := range keys {
			if e, ok := next.Items[k]; ok {
				delete(next.Items, k)
				p.removed = append(p.removed, k)
				out = append(out, MetadataEventItem{Key: k, Value: e.Value, Revision: e.Revision})
			}
		}
		if len(p.removed) == 0 {
			p.record = cur
			return p, nil
		}
	default:
		return metaPlan{}, fmt.Errorf("%w: unknown metadata operation %d", ErrInvalidArgument, req.Op)
	}
	next.MajorRevision++
	if out == nil {
		out = []MetadataEventItem{}
	}
	p.record = next
	p.event = &MetadataEvent{
		ChannelName:   req.Name,
		ChannelType:   req.Type,
		Operation:     req.Op.String(),
		Items:         out,
		MajorRevision: next.MajorRevision,
		Timestamp:     req.NowMs,
		AuthorUID:     author,
	}
	return p, nil
}
