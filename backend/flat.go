package backend

import (
	"context"
	"fmt"
)

// MaxFlat is the longest array a FlatReply holds inline.
const MaxFlat = 4

// FlatReply is one command's reply held by value, for paths that run on
// every heartbeat: Do allocates a []Reply per call and a slice per array
// reply, which for heartbeat.lua's {ok, changed, epoch} costs more than
// the rest of the call. An adapter implementing FlatDoer fills an array of
// at most MaxFlat elements into Inline, with Reply.Elems nil; any other
// reply is held in Reply as Do returns it. Read the elements with Array,
// which covers both.
type FlatReply struct {
	Reply
	N      int // elements in Inline, when Reply is an array whose Elems is nil
	Inline [MaxFlat]Reply
}

// Array returns the elements of an array reply, like Reply.AsArray. The
// slice may point into f: it is valid as long as f is.
func (f *FlatReply) Array() ([]Reply, error) {
	if f.Kind == KindArray && f.Elems == nil {
		return f.Inline[:f.N:f.N], nil
	}
	return f.AsArray()
}

// Full returns the reply as Do would have returned it, copying inline
// elements out of f.
func (f *FlatReply) Full() Reply {
	if f.Kind == KindArray && f.Elems == nil && f.N > 0 {
		return ArrReply(append([]Reply(nil), f.Inline[:f.N]...)...)
	}
	return f.Reply
}

// FlatDoer is implemented by a Client that can send one command and return
// its reply as a FlatReply without allocating for short array replies
// (the rueidis adapter). It is optional: DoFlat falls back on Do. The reply
// must be the one Do would give, and the errors Do's.
type FlatDoer interface {
	DoFlat(ctx context.Context, cmd Cmd) (FlatReply, error)
}

// DoFlat sends cmd through p's DoFlat when p has one, else through Do, so
// wrappers and user-supplied backends keep working unchanged.
func DoFlat(ctx context.Context, p Pipeliner, cmd Cmd) (FlatReply, error) {
	if fd, ok := p.(FlatDoer); ok {
		return fd.DoFlat(ctx, cmd)
	}
	return doFlatVia(ctx, p, cmd)
}

func doFlatVia(ctx context.Context, p Pipeliner, cmd Cmd) (FlatReply, error) {
	r, err := p.Do(ctx, cmd)
	if err != nil {
		return FlatReply{}, err
	}
	if len(r) != 1 {
		return FlatReply{}, fmt.Errorf("backend: %d replies for 1 command", len(r))
	}
	return FlatReply{Reply: r[0]}, nil
}
