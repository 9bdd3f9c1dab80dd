package presence

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/strategy"
)

// Channel names a metadata channel: metadata and locks live per
// (Type, Name). Both are ids (see Config.MaxIDBytes); Type may not contain
// ':' either.
type Channel struct {
	Type string `json:"channelType"`
	Name string `json:"channelName"`
}

// Item is one item of a metadata mutation (docs/PROTOCOL.md's Item).
type Item struct {
	// Key is non-empty UTF-8 of at most Config.MaxIDBytes bytes without
	// control characters, unique within a request.
	Key string `json:"key"`
	// Value is stored and returned byte for byte: any UTF-8 string of at
	// most Config.MaxMetadataValueBytes bytes, "" included.
	Value string `json:"value"`
	// Revision, when set and >= 0, is checked by UpdateMetadata against the
	// stored revision (ErrConflict on mismatch); SetMetadata stores it when
	// > 0, else 1. Nil or negative means unchecked. At most MaxRevision.
	Revision *int64 `json:"revision,omitempty"`
}

// Rev returns a pointer to n, for Item.Revision and
// MetadataOptions.MajorRevision.
func Rev(n int64) *int64 { return &n }

// MaxRevision bounds the revisions and majorRevisions a caller may pass:
// 2^52 keeps every revision exact in Lua's doubles and JavaScript numbers.
// It also keeps their increments exact.
const MaxRevision int64 = 1 << 52

// MetadataOptions are a mutation's options (docs/PROTOCOL.md's Opts) and the
// acting user.
type MetadataOptions struct {
	// MajorRevision, when set and >= 0, must equal the channel's current
	// majorRevision or the mutation fails with ErrConflict and writes
	// nothing. Nil or negative means unchecked.
	MajorRevision *int64 `json:"majorRevision,omitempty"`
	// LockName, when set, requires that lock of the channel to be held by
	// Actor, checked atomically with the write (ErrLocked otherwise). With
	// Config.Locks "enforced" a channel with a held lock requires it.
	LockName string `json:"lockName,omitempty"`
	// FencingToken, when > 0, is the Lock.FencingToken under which Actor
	// holds LockName (which it needs): the mutation fails with ErrLocked,
	// writing nothing, when the lock has been acquired again since, by
	// anyone, Actor included. 0 means unchecked.
	FencingToken int64 `json:"fencingToken,omitempty"`
	// AddTimestamp stamps each written item's updated time (ISO-8601 UTC,
	// milliseconds, from Config.Now).
	AddTimestamp bool `json:"addTimestamp,omitempty"`
	// AddUserID stamps each written item's authorUid with Actor, and the
	// event's authorUid; it needs an Actor.
	AddUserID bool `json:"addUserId,omitempty"`
	// Actor is the acting user (the socket's joined user), for locks and
	// AddUserID; "" means none. Not part of the wire payload.
	Actor string `json:"-"`
}

// MetadataEntry is one stored item as a response carries it.
type MetadataEntry struct {
	Value     string `json:"value"`
	Revision  int64  `json:"revision"`
	Updated   string `json:"updated,omitempty"`
	AuthorUID string `json:"authorUid,omitempty"`
}

// MetadataResponse is a channel's metadata after an operation; it marshals
// to docs/PROTOCOL.md's Response.
type MetadataResponse struct {
	Timestamp     int64                    `json:"timestamp"` // ms, when the operation ran
	ChannelName   string                   `json:"channelName"`
	ChannelType   string                   `json:"channelType"`
	TotalCount    int                      `json:"totalCount"`
	MajorRevision int64                    `json:"majorRevision"`
	Metadata      map[string]MetadataEntry `json:"metadata"` // never nil
}

// MetadataEvent is a metadata event (docs/PROTOCOL.md's metadata:event
// payload), as SubscribeMetadata decodes it. Exactly one is published per
// successful mutation. Scripts and strategies publish the same JSON
// (core.MetadataEvent); a test keeps the two field for field.
type MetadataEvent struct {
	ChannelName   string              `json:"channelName"`
	ChannelType   string              `json:"channelType"`
	Operation     string              `json:"operation"` // set, update, remove
	Items         []MetadataEventItem `json:"items"`     // never null
	MajorRevision int64               `json:"majorRevision"`
	Timestamp     int64               `json:"timestamp"` // ms
	AuthorUID     string              `json:"authorUid,omitempty"`
}

// MetadataEventItem is one item of a MetadataEvent: for set and update the
// item as written, for remove the item as it was before removal.
type MetadataEventItem struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Revision int64  `json:"revision"`
}

// SetMetadata replaces the channel's whole record with items (none
// clears it). Each item's revision is its Revision when > 0, else 1.
// Bumps majorRevision by one and publishes a "set" event.
func (s *Service) SetMetadata(ctx context.Context, ch Channel, items []Item, opts MetadataOptions) (*MetadataResponse, error) {
	return s.mutateMetadata(ctx, strategy.OpSet, ch, items, opts)
}

// UpdateMetadata changes existing items only: an unknown key (or a
// channel without metadata) is ErrInvalidArgument, an item Revision that
// differs from the stored one is ErrConflict, and nothing is written
// then. Each item's revision becomes the stored one + 1; its updated time
// and author stay unless re-stamped. Bumps majorRevision by one and
// publishes an "update" event.
func (s *Service) UpdateMetadata(ctx context.Context, ch Channel, items []Item, opts MetadataOptions) (*MetadataResponse, error) {
	return s.mutateMetadata(ctx, strategy.OpUpdate, ch, items, opts)
}

// RemoveMetadata deletes the items named by keys, or every item when keys
// is empty; keys that do not exist are ignored. When something was
// removed it bumps majorRevision by one and publishes a "remove" event
// carrying the removed items; when nothing was, it returns the current
// record and changes and publishes nothing.
func (s *Service) RemoveMetadata(ctx context.Context, ch Channel, keys []string, opts MetadataOptions) (*MetadataResponse, error) {
	items := make([]Item, len(keys))
	for i, k := range keys {
		items[i] = Item{Key: k}
	}
	return s.mutateMetadata(ctx, strategy.OpRemove, ch, items, opts)
}

// GetMetadata reads the channel's metadata; a channel without any is an
// empty record with majorRevision 0.
func (s *Service) GetMetadata(ctx context.Context, ch Channel) (*MetadataResponse, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := s.checkChannel(ch); err != nil {
		return nil, err
	}
	now := s.nowMs()
	r, err := s.client.Do(ctx, backend.K("HGETALL", s.keys.Meta(ch.Type, ch.Name)))
	if err != nil {
		return nil, fmt.Errorf("presence: get metadata: %w", err)
	}
	rec, err := core.ParseMetaReply(r[0])
	if err != nil {
		return nil, fmt.Errorf("presence: get metadata: %w", err)
	}
	return metadataResponse(ch, rec, now), nil
}

// SubscribeMetadata delivers every metadata event of every channel (from
// every node) to handler, sequentially, until the subscription or the
// Service is closed. Events of one channel arrive in majorRevision order.
func (s *Service) SubscribeMetadata(ctx context.Context, handler func(MetadataEvent)) (Subscription, error) {
	return subscribeJSON(ctx, s, s.metaEventsPattern(), "metadata", handler)
}

func (s *Service) mutateMetadata(ctx context.Context, op strategy.MetaOp, ch Channel, items []Item, opts MetadataOptions) (*MetadataResponse, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	req, err := s.metaRequest(op, ch, items, opts)
	if err != nil {
		return nil, err
	}
	rec, err := s.meta.Mutate(ctx, req)
	if err != nil {
		var ce *core.ConflictError
		if errors.As(err, &ce) {
			return nil, &ConflictError{Current: metadataResponse(ch, ce.Record, req.NowMs), reason: ce.Reason}
		}
		if isSentinel(err) {
			return nil, err
		}
		return nil, fmt.Errorf("presence: %s metadata: %w", op, err)
	}
	return metadataResponse(ch, rec, req.NowMs), nil
}

// isSentinel reports whether err is one of the package's errors, whose
// message already says "presence: ...".
func isSentinel(err error) bool {
	for _, e := range []error{ErrConflict, ErrLocked, ErrInvalidArgument, ErrClosed, ErrConnNotFound, ErrStaleEpoch} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Service) checkChannel(ch Channel) error {
	if err := checkID("channelType", ch.Type, s.cfg.MaxIDBytes, ":"); err != nil {
		return err
	}
	return checkID("channelName", ch.Name, s.cfg.MaxIDBytes, "")
}

// metaRequest validates a mutation; nothing invalid reaches Redis.
func (s *Service) metaRequest(op strategy.MetaOp, ch Channel, items []Item, opts MetadataOptions) (strategy.MetaRequest, error) {
	if err := s.checkChannel(ch); err != nil {
		return strategy.MetaRequest{}, err
	}
	req := strategy.MetaRequest{
		Op: op, Type: ch.Type, Name: ch.Name,
		MajorRevision: -1,
		LockName:      opts.LockName,
		FencingToken:  opts.FencingToken,
		Actor:         opts.Actor,
		EnforceLocks:  s.cfg.Locks == LocksEnforced,
		AddTimestamp:  opts.AddTimestamp,
		AddUserID:     opts.AddUserID,
		NowMs:         s.nowMs(),
	}
	if m := opts.MajorRevision; m != nil && *m >= 0 {
		if *m > MaxRevision {
			return req, invalid("majorRevision %d is more than %d", *m, MaxRevision)
		}
		req.MajorRevision = *m
	}
	if opts.LockName != "" {
		if err := checkID("lockName", opts.LockName, s.cfg.MaxIDBytes, ""); err != nil {
			return req, err
		}
	}
	switch {
	case opts.FencingToken < 0:
		return req, invalid("fencingToken %d is negative", opts.FencingToken)
	case opts.FencingToken > 0 && opts.LockName == "":
		return req, invalid("fencingToken needs the lockName it was handed out for")
	}
	if opts.Actor != "" {
		if err := checkID("actor", opts.Actor, s.cfg.MaxIDBytes, ""); err != nil {
			return req, err
		}
	}
	if opts.AddUserID && opts.Actor == "" {
		return req, invalid("addUserId needs an acting user")
	}
	switch {
	case op == strategy.OpUpdate && len(items) == 0:
		return req, invalid("update needs at least one item")
	case len(items) > s.cfg.MaxMetadataItems:
		// A set stores exactly its items; an update or remove can only
		// name existing items, of which there are at most as many.
		return req, invalid("%d items, more than the %d a channel may hold", len(items), s.cfg.MaxMetadataItems)
	}
	req.Items = make([]strategy.MetaItem, len(items))
	seen := make(map[string]struct{}, len(items))
	for i, it := range items {
		if it.Key == "" {
			return req, invalid("item %d has an empty key", i)
		}
		if len(it.Key) > s.cfg.MaxIDBytes {
			return req, invalid("item key is %d bytes, more than %d", len(it.Key), s.cfg.MaxIDBytes)
		}
		if err := checkKey("item key", it.Key); err != nil {
			return req, err
		}
		if _, dup := seen[it.Key]; dup {
			return req, invalid("item key %q appears twice", it.Key)
		}
		seen[it.Key] = struct{}{}
		if len(it.Value) > s.cfg.MaxMetadataValueBytes {
			return req, invalid("value of item %q is %d bytes, more than %d", it.Key, len(it.Value), s.cfg.MaxMetadataValueBytes)
		}
		if !utf8.ValidString(it.Value) {
			return req, invalid("value of item %q is not valid UTF-8", it.Key)
		}
		rev := int64(-1)
		if it.Revision != nil && *it.Revision >= 0 {
			if *it.Revision > MaxRevision {
				return req, invalid("revision %d of item %q is more than %d", *it.Revision, it.Key, MaxRevision)
			}
			rev = *it.Revision
		}
		req.Items[i] = strategy.MetaItem{Key: it.Key, Value: it.Value, Revision: rev}
	}
	return req, nil
}

func metadataResponse(ch Channel, rec core.MetaRecord, now int64) *MetadataResponse {
	m := make(map[string]MetadataEntry, len(rec.Items))
	for k, e := range rec.Items {
		m[k] = MetadataEntry{Value: e.Value, Revision: e.Revision, Updated: e.Updated, AuthorUID: e.Author}
	}
	return &MetadataResponse{
		Timestamp:     now,
		ChannelName:   ch.Name,
		ChannelType:   ch.Type,
		TotalCount:    len(m),
		MajorRevision: rec.MajorRevision,
		Metadata:      m,
	}
}
