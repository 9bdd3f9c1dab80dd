package socketio

import (
	"context"
	"fmt"
	"time"

	"github.com/realtime-message/presence"
)

// errNoActor: a lock operation from a socket with no acting user (not
// authenticated, not joined). It acks METADATA_LOCK, as docs/PROTOCOL.md says.
var errNoActor = fmt.Errorf("%w: no authenticated user: join presence (or authenticate) first", presence.ErrLocked)

// Lock acks of docs/PROTOCOL.md.
type (
	lockAck struct {
		OK           bool   `json:"ok"`
		LockName     string `json:"lockName"`
		Owner        string `json:"owner"`
		ExpiresAt    int64  `json:"expiresAt"`
		FencingToken int64  `json:"fencingToken"`
	}
	getLockAck struct {
		OK        bool    `json:"ok"`
		LockName  string  `json:"lockName"`
		Owner     *string `json:"owner"`     // null when free
		ExpiresAt *int64  `json:"expiresAt"` // null when free (or no TTL)
		// The holder's fencing token; null when free (0: taken before
		// fencing tokens existed).
		FencingToken *int64 `json:"fencingToken"`
	}
	// metaAck is {ok:true, ...Response}.
	metaAck struct {
		OK bool `json:"ok"`
		*presence.MetadataResponse
	}
)

func (b *Binding) bindMetadata(c *conn) {
	b.handle(c, EventSetChannel, c.metadata, c.setChannel)
	b.handle(c, EventUpdateChannel, c.metadata, c.updateChannel)
	b.handle(c, EventRemoveChannel, c.metadata, c.removeChannel)
	b.handle(c, EventGetChannel, c.metadata, c.getChannel)
	b.handle(c, EventAcquireLock, c.metadata, c.acquireLock)
	b.handle(c, EventRenewLock, c.metadata, c.renewLock)
	b.handle(c, EventReleaseLock, c.metadata, c.releaseLock)
	b.handle(c, EventGetLock, c.metadata, c.getLock)
}

func (r metaReq) channel() presence.Channel {
	return presence.Channel{Type: r.ChannelType, Name: r.ChannelName}
}

func (r metaReq) items() []presence.Item {
	out := make([]presence.Item, len(r.Items))
	for i, it := range r.Items {
		out[i] = presence.Item{Key: it.Key, Value: it.Value}
		if it.Revision >= 0 {
			out[i].Revision = presence.Rev(it.Revision)
		}
	}
	return out
}

func (c *conn) metaOptions(r metaReq) presence.MetadataOptions {
	o := presence.MetadataOptions{
		LockName:     r.LockName,
		FencingToken: r.FencingToken,
		AddTimestamp: r.AddTimestamp,
		AddUserID:    r.AddUserID,
		Actor:        c.actor(),
	}
	if r.MajorRevision >= 0 {
		o.MajorRevision = presence.Rev(r.MajorRevision)
	}
	return o
}

func metaResult(resp *presence.MetadataResponse, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return metaAck{OK: true, MetadataResponse: resp}, nil
}

func (c *conn) setChannel(ctx context.Context, payload any) (any, error) {
	r, err := parseMeta(payload, dataOptional)
	if err != nil {
		return nil, err
	}
	return metaResult(c.b.svc.SetMetadata(ctx, r.channel(), r.items(), c.metaOptions(r)))
}

func (c *conn) updateChannel(ctx context.Context, payload any) (any, error) {
	r, err := parseMeta(payload, dataNonEmpty)
	if err != nil {
		return nil, err
	}
	return metaResult(c.b.svc.UpdateMetadata(ctx, r.channel(), r.items(), c.metaOptions(r)))
}

func (c *conn) removeChannel(ctx context.Context, payload any) (any, error) {
	r, err := parseMeta(payload, dataOptional)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(r.Items))
	for i, it := range r.Items {
		keys[i] = it.Key
	}
	return metaResult(c.b.svc.RemoveMetadata(ctx, r.channel(), keys, c.metaOptions(r)))
}

func (c *conn) getChannel(ctx context.Context, payload any) (any, error) {
	r, err := parseMeta(payload, dataNone)
	if err != nil {
		return nil, err
	}
	return metaResult(c.b.svc.GetMetadata(ctx, r.channel()))
}

func (r lockReq) channel() presence.Channel {
	return presence.Channel{Type: r.ChannelType, Name: r.ChannelName}
}

// owner returns the acting user for a lock call, or errNoActor.
func (c *conn) owner() (string, error) {
	if u := c.actor(); u != "" {
		return u, nil
	}
	return "", errNoActor
}

func lockResult(l presence.Lock, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return lockAck{OK: true, LockName: l.Name, Owner: l.Owner, ExpiresAt: l.ExpiresAt.UnixMilli(), FencingToken: l.FencingToken}, nil
}

func (c *conn) acquireLock(ctx context.Context, payload any) (any, error) {
	return c.lockWithTTL(ctx, payload, c.b.svc.AcquireLock)
}

func (c *conn) renewLock(ctx context.Context, payload any) (any, error) {
	return c.lockWithTTL(ctx, payload, c.b.svc.RenewLock)
}

// lockWithTTL runs AcquireLock or RenewLock for the socket's user.
func (c *conn) lockWithTTL(ctx context.Context, payload any,
	call func(context.Context, presence.Channel, string, string, time.Duration) (presence.Lock, error)) (any, error) {
	r, err := parseLock(payload, true)
	if err != nil {
		return nil, err
	}
	owner, err := c.owner()
	if err != nil {
		return nil, err
	}
	return lockResult(call(ctx, r.channel(), r.LockName, owner, time.Duration(r.TTLMs)*time.Millisecond))
}

func (c *conn) releaseLock(ctx context.Context, payload any) (any, error) {
	r, err := parseLock(payload, false)
	if err != nil {
		return nil, err
	}
	owner, err := c.owner()
	if err != nil {
		return nil, err
	}
	if err := c.b.svc.ReleaseLock(ctx, r.channel(), r.LockName, owner); err != nil {
		return nil, err
	}
	return okAck{OK: true}, nil
}

func (c *conn) getLock(ctx context.Context, payload any) (any, error) {
	r, err := parseLock(payload, false)
	if err != nil {
		return nil, err
	}
	l, err := c.b.svc.GetLock(ctx, r.channel(), r.LockName)
	if err != nil {
		return nil, err
	}
	a := getLockAck{OK: true, LockName: r.LockName}
	if l.Held() {
		a.Owner, a.FencingToken = &l.Owner, &l.FencingToken
		if !l.ExpiresAt.IsZero() {
			ms := l.ExpiresAt.UnixMilli()
			a.ExpiresAt = &ms
		}
	}
	return a, nil
}
