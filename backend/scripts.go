package backend

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/realtime-message/presence/luasrc"
)

// Eval is one call of a generated script.
type Eval struct {
	Script *luasrc.Script
	Keys   []string
	Args   []string
}

// Cmd returns the call as EVALSHA. Its Pre is shared by every call of the
// script with as many keys: adapters must not modify it (none does; they
// copy the words into their own buffers).
func (e Eval) Cmd() Cmd {
	return Cmd{Name: "EVALSHA", Pre: evalshaPre(e.Script, len(e.Keys)), Keys: e.Keys, Args: e.Args}
}

// preKey names one cached {sha1, numkeys}.
type preKey struct {
	script *luasrc.Script
	keys   int
}

// maxPre bounds the cache: a program that builds scripts on the fly gets
// a fresh Pre per call past it rather than a cache that only grows.
const maxPre = 1024

var (
	preMu    sync.Mutex
	preCache atomic.Pointer[map[preKey][]string] // copied on write: reads take no lock
)

// evalshaPre returns {sha1, numkeys} for s and n keys, built once per pair
// instead of a slice and a strconv.Itoa per call.
func evalshaPre(s *luasrc.Script, n int) []string {
	k := preKey{s, n}
	if m := preCache.Load(); m != nil {
		// The SHA1 check keeps a Script whose fields were changed after its
		// first call from using a stale entry.
		if p, ok := (*m)[k]; ok && p[0] == s.SHA1 {
			return p
		}
	}
	p := []string{s.SHA1, strconv.Itoa(n)}
	p = p[:2:2] // an append by anyone copies instead of writing into the shared array
	preMu.Lock()
	defer preMu.Unlock()
	old := preCache.Load()
	if old != nil && len(*old) >= maxPre {
		return p
	}
	m := make(map[preKey][]string, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[k] = p
	preCache.Store(&m)
	return p
}

func lenOf(m *map[preKey][]string) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// fallback returns the call as EVAL with the full source; Redis caches the
// script as a side effect, so the next EVALSHA on that node succeeds.
func (e Eval) fallback() Cmd {
	return Cmd{Name: "EVAL", Pre: []string{e.Script.Source, strconv.Itoa(len(e.Keys))}, Keys: e.Keys, Args: e.Args}
}

// Scripts runs generated scripts over any Client by SHA1. A NOSCRIPT reply
// (after a Redis restart, a failover or SCRIPT FLUSH) costs one more round
// trip with EVAL for the affected calls only, never an error: a call that
// got NOSCRIPT did not run, so resending it is safe. Safe for concurrent
// use.
type Scripts struct {
	c       Pipeliner
	flat    FlatDoer // c, when it has the fast path
	reloads atomic.Uint64
}

// NewScripts returns a script runner over c.
func NewScripts(c Pipeliner) *Scripts {
	s := &Scripts{c: c}
	s.flat, _ = c.(FlatDoer)
	return s
}

// Reloads counts script calls that were resent with EVAL after NOSCRIPT.
func (s *Scripts) Reloads() uint64 { return s.reloads.Load() }

// Run calls one script and returns its reply; a script error is returned
// as the error.
func (s *Scripts) Run(ctx context.Context, e Eval) (Reply, error) {
	f, err := s.RunFlat(ctx, e)
	if err != nil && f.Kind != KindError {
		return Reply{}, err
	}
	return f.Full(), err
}

// RunFlat is Run with the reply held by value: on a Client implementing
// FlatDoer, a short array reply costs no allocation and no command slice
// is built. Other clients get Do, as with Run.
func (s *Scripts) RunFlat(ctx context.Context, e Eval) (FlatReply, error) {
	f, err := s.doFlat(ctx, e.Cmd())
	if err != nil {
		return FlatReply{}, err
	}
	if f.Kind == KindError && IsRedisError(f.Err, "NOSCRIPT") {
		s.reloads.Add(1)
		if f, err = s.doFlat(ctx, e.fallback()); err != nil {
			return FlatReply{}, err
		}
	}
	return f, f.Error()
}

func (s *Scripts) doFlat(ctx context.Context, c Cmd) (FlatReply, error) {
	if s.flat != nil {
		return s.flat.DoFlat(ctx, c)
	}
	return doFlatVia(ctx, s.c, c)
}

// RunMany calls scripts in one pipeline, returning one reply per call;
// script errors stay in their Reply as with Do.
func (s *Scripts) RunMany(ctx context.Context, evals ...Eval) ([]Reply, error) {
	if len(evals) == 1 {
		// One call needs no pipeline: no []Cmd is built, and a FlatDoer
		// adds no []Reply of its own.
		f, err := s.RunFlat(ctx, evals[0])
		if err != nil && f.Kind != KindError {
			return nil, err
		}
		return []Reply{f.Full()}, nil
	}
	_, replies, err := s.DoWith(ctx, nil, evals...)
	return replies, err
}

// DoWith sends cmds and then evals in one pipeline and returns their
// replies apart; only the evals that got NOSCRIPT are resent.
func (s *Scripts) DoWith(ctx context.Context, cmds []Cmd, evals ...Eval) ([]Reply, []Reply, error) {
	all := make([]Cmd, 0, len(cmds)+len(evals))
	all = append(all, cmds...)
	for _, e := range evals {
		all = append(all, e.Cmd())
	}
	replies, err := s.c.Do(ctx, all...)
	if err != nil {
		return nil, nil, err
	}
	if len(replies) != len(all) {
		return nil, nil, fmt.Errorf("backend: %d replies for %d commands", len(replies), len(all))
	}
	cmdReplies, evalReplies := replies[:len(cmds)], replies[len(cmds):]
	var retry []int
	for i, r := range evalReplies {
		if r.Kind == KindError && IsRedisError(r.Err, "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 {
		return cmdReplies, evalReplies, nil
	}
	again := make([]Cmd, len(retry))
	for j, i := range retry {
		again[j] = evals[i].fallback()
	}
	s.reloads.Add(uint64(len(retry)))
	second, err := s.c.Do(ctx, again...)
	if err != nil {
		return nil, nil, err
	}
	for j, i := range retry {
		evalReplies[i] = second[j]
	}
	return cmdReplies, evalReplies, nil
}
