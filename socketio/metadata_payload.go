package socketio

import (
	"fmt"
	"math"
	"time"
)

// item is a validated metadata Item: {key, value?, revision?}.
type item struct {
	Key      string
	Value    string
	Revision int64 // -1: unchecked / default
}

// metaReq is a validated metadata:{set,update,remove,get}Channel payload.
type metaReq struct {
	ChannelName, ChannelType string
	Items                    []item
	HasData                  bool
	MajorRevision            int64 // -1: unchecked
	LockName                 string
	FencingToken             int64 // 0: unchecked
	AddTimestamp, AddUserID  bool
}

// dataRule says what a metadata event requires of data.
type dataRule uint8

const (
	dataNone     dataRule = iota // getChannel: ignored
	dataOptional                 // set (default []), remove (absent = all)
	dataNonEmpty                 // update: at least one item
)

func parseChannel(o object) (name, typ string, err error) {
	if name, err = o.str("channelName"); err != nil {
		return "", "", err
	}
	if typ, err = o.str("channelType"); err != nil {
		return "", "", err
	}
	return name, typ, nil
}

func parseMeta(v any, rule dataRule) (metaReq, error) {
	if err := checkPayload(v); err != nil {
		return metaReq{}, err
	}
	o, err := asObject(v, "payload", false)
	if err != nil {
		return metaReq{}, err
	}
	fields := []string{"channelName", "channelType", "data", "options"}
	if rule == dataNone {
		fields = fields[:2]
	}
	if err := o.only("payload", fields...); err != nil {
		return metaReq{}, err
	}
	r := metaReq{MajorRevision: -1}
	if r.ChannelName, r.ChannelType, err = parseChannel(o); err != nil {
		return r, err
	}
	if rule == dataNone {
		return r, nil
	}
	data, present, err := o.optArray("data")
	if err != nil {
		return r, err
	}
	r.HasData = present
	if rule == dataNonEmpty && len(data) == 0 {
		return r, payloadErr("data must have at least one item")
	}
	for i, d := range data {
		io, err := asObject(d, "data item", false)
		if err != nil {
			return r, payloadErr("data[%d] must be an object", i)
		}
		if err := io.only(fmt.Sprintf("data[%d]", i), "key", "value", "revision"); err != nil {
			return r, err
		}
		var it item
		if it.Key, err = io.str("key"); err != nil {
			return r, payloadErr("data[%d]: %v", i, unwrapPayload(err))
		}
		if it.Value, _, err = io.optStr("value"); err != nil {
			return r, payloadErr("data[%d]: %v", i, unwrapPayload(err))
		}
		rev, ok, err := io.optInt("revision")
		if err != nil {
			return r, payloadErr("data[%d]: %v", i, unwrapPayload(err))
		}
		it.Revision = -1
		if ok && rev >= 0 {
			it.Revision = rev
		}
		r.Items = append(r.Items, it)
	}
	opts, err := asObject(o["options"], "options", true)
	if err != nil {
		return r, err
	}
	if err := opts.only("options", "majorRevision", "lockName", "fencingToken", "addTimestamp", "addUserId"); err != nil {
		return r, err
	}
	if mr, ok, err := opts.optInt("majorRevision"); err != nil {
		return r, err
	} else if ok && mr >= 0 {
		r.MajorRevision = mr
	}
	if ln, present, err := opts.optStr("lockName"); err != nil {
		return r, err
	} else if present {
		if ln == "" {
			return r, payloadErr("options.lockName must not be empty")
		}
		r.LockName = ln
	}
	if ft, ok, err := opts.optInt("fencingToken"); err != nil {
		return r, err
	} else if ok {
		if ft <= 0 {
			return r, payloadErr("options.fencingToken must be a token metadata:acquireLock returned, not %d", ft)
		}
		if r.LockName == "" {
			return r, payloadErr("options.fencingToken needs options.lockName")
		}
		r.FencingToken = ft
	}
	if r.AddTimestamp, err = opts.optBool("addTimestamp"); err != nil {
		return r, err
	}
	if r.AddUserID, err = opts.optBool("addUserId"); err != nil {
		return r, err
	}
	return r, nil
}

// lockReq is a validated metadata:*Lock payload.
type lockReq struct {
	ChannelName, ChannelType, LockName string
	TTLMs                              int64
}

func parseLock(v any, needTTL bool) (lockReq, error) {
	if err := checkPayload(v); err != nil {
		return lockReq{}, err
	}
	o, err := asObject(v, "payload", false)
	if err != nil {
		return lockReq{}, err
	}
	fields := []string{"channelName", "channelType", "lockName", "ttlMs"}
	if !needTTL {
		fields = fields[:3]
	}
	if err := o.only("payload", fields...); err != nil {
		return lockReq{}, err
	}
	var r lockReq
	if r.ChannelName, r.ChannelType, err = parseChannel(o); err != nil {
		return r, err
	}
	if r.LockName, err = o.str("lockName"); err != nil {
		return r, err
	}
	if !needTTL {
		return r, nil
	}
	ttl, ok, err := o.optInt("ttlMs")
	if err != nil {
		return r, err
	}
	if !ok {
		return r, payloadErr("ttlMs is required")
	}
	if ttl <= 0 {
		return r, payloadErr("ttlMs must be > 0, not %d", ttl)
	}
	if ttl > math.MaxInt64/int64(time.Millisecond) {
		// As a time.Duration it would overflow and wrap to some TTL the
		// client never asked for; the service caps what fits.
		return r, payloadErr("ttlMs %d is out of range", ttl)
	}
	r.TTLMs = ttl
	return r, nil
}

// unwrapPayload drops the "invalid payload: " prefix of a nested error so
// messages do not repeat it.
func unwrapPayload(err error) string {
	const p = "invalid payload: "
	s := err.Error()
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
