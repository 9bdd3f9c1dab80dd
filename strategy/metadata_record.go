package strategy

import (
	"fmt"
	"slices"

	"github.com/realtime-message/presence/core"
)

// The errors of a refused mutation; both strategies return these, so a
// caller sees the same message whichever runs.
func errMetaLocked(req MetaRequest) error {
	if req.Actor == "" {
		return fmt.Errorf("%w: lock %q requires an acting user", core.ErrLocked, req.LockName)
	}
	return fmt.Errorf("%w: lock %q is not held by %q", core.ErrLocked, req.LockName, req.Actor)
}

// errMetaHeld is the refusal of enforced locks: lock is live and req
// does not write under it.
func errMetaHeld(req MetaRequest, lock string) error {
	if req.LockName == "" {
		return fmt.Errorf("%w: channel %s:%s is locked (lock %q); only its holder may write, naming it in lockName", core.ErrLocked, req.Type, req.Name, lock)
	}
	return fmt.Errorf("%w: channel %s:%s is also locked by lock %q, not held by %q", core.ErrLocked, req.Type, req.Name, lock, req.Actor)
}

// errMetaFenced: the writer's fencing token is not the lock's last one.
func errMetaFenced(req MetaRequest, last int64) error {
	if last == 0 {
		return fmt.Errorf("%w: fencing token %d of lock %q is not current: the lock keeps no token", core.ErrLocked, req.FencingToken, req.LockName)
	}
	return fmt.Errorf("%w: fencing token %d of lock %q is not current: the lock was acquired again, under token %d", core.ErrLocked, req.FencingToken, req.LockName, last)
}

// errMetaMajor and errMetaRevision carry rec, the record the check read.
func errMetaMajor(req MetaRequest, rec core.MetaRecord) error {
	return &core.ConflictError{Record: rec, Reason: fmt.Sprintf("majorRevision is %d, not %d", rec.MajorRevision, req.MajorRevision)}
}

func errMetaRevision(key string, cur, want int64, rec core.MetaRecord) error {
	return &core.ConflictError{Record: rec, Reason: fmt.Sprintf("item %q has revision %d, not %d", key, cur, want)}
}

func errMetaUnknown(key string) error {
	return fmt.Errorf("%w: update of unknown metadata item %q", core.ErrInvalidArgument, key)
}

func errMetaEmpty(req MetaRequest) error {
	return fmt.Errorf("%w: update of channel %s:%s, which has no metadata", core.ErrInvalidArgument, req.Type, req.Name)
}

// metaPlan is a mutation decided in Go against the stored record (the
// watch strategy's rules; meta_mutate.lua implements the same ones).
type metaPlan struct {
	replace bool                // set: the hash is deleted before the writes
	written []string            // keys written, in request order
	removed []string            // keys removed
	record  core.MetaRecord     // the record afterwards
	event   *core.MetadataEvent // nil: nothing changes, nothing is published
}

// lockState is the named lock as read (only when req.LockName is set).
type lockState struct {
	owner string // the lock key's value
	held  bool   // whether the lock key exists
	fence int64  // the lock's last fencing token, 0 when none is kept (read only when req.FencingToken is set)
}

// planMeta applies req to cur under the named lock as read.
func planMeta(req MetaRequest, cur core.MetaRecord, lock lockState) (metaPlan, error) {
	if req.LockName != "" && (req.Actor == "" || !lock.held || lock.owner != req.Actor) {
		return metaPlan{}, errMetaLocked(req)
	}
	if req.FencingToken > 0 && lock.fence != req.FencingToken {
		return metaPlan{}, errMetaFenced(req, lock.fence)
	}
	if req.MajorRevision >= 0 && req.MajorRevision != cur.MajorRevision {
		return metaPlan{}, errMetaMajor(req, cur)
	}
	stamp, author := "", ""
	if req.AddTimestamp {
		stamp = core.FormatMetaTime(req.NowMs)
	}
	if req.AddUserID {
		author = req.Actor
	}
	next := core.MetaRecord{MajorRevision: cur.MajorRevision, Items: make(map[string]core.MetaEntry, len(cur.Items)+len(req.Items))}
	p := metaPlan{}
	var out []core.MetadataEventItem
	write := func(k string, e core.MetaEntry) {
		if stamp != "" {
			e.Updated = stamp
		}
		if author != "" {
			e.Author = author
		}
		next.Items[k] = e
		p.written = append(p.written, k)
		out = append(out, core.MetadataEventItem{Key: k, Value: e.Value, Revision: e.Revision})
	}
	switch req.Op {
	case OpSet:
		p.replace = true
		for _, it := range req.Items {
			rev := int64(1)
			if it.Revision > 0 {
				rev = it.Revision
			}
			write(it.Key, core.MetaEntry{Value: it.Value, Revision: rev})
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
				return metaPlan{}, errMetaRevision(it.Key, e.Revision, it.Revision, cur)
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
				out = append(out, core.MetadataEventItem{Key: k, Value: e.Value, Revision: e.Revision})
			}
		}
		if len(p.removed) == 0 {
			p.record = cur
			return p, nil
		}
	default:
		return metaPlan{}, fmt.Errorf("%w: unknown metadata operation %d", core.ErrInvalidArgument, req.Op)
	}
	next.MajorRevision++
	if out == nil {
		out = []core.MetadataEventItem{}
	}
	p.record = next
	p.event = &core.MetadataEvent{
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
