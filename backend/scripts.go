package backend

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/realtime-message/presence/luasrc"
)

// Eval is one call of a generated script.
type Eval struct {
	Script *luasrc.Script
	Keys   []string
	Args   []string
}

// Cmd returns the call as EVALSHA.
func (e Eval) Cmd() Cmd {
	return Cmd{Name: "EVALSHA", Pre: []string{e.Script.SHA1, strconv.Itoa(len(e.Keys))}, Keys: e.Keys, Args: e.Args}
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
	reloads atomic.Uint64
}

// NewScripts returns a script runner over c.
func NewScripts(c Pipeliner) *Scripts { return &Scripts{c: c} }

// Reloads counts script calls that were resent with EVAL after NOSCRIPT.
func (s *Scripts) Reloads() uint64 { return s.reloads.Load() }

// Run calls one script and returns its reply; a script error is returned
// as the error.
func (s *Scripts) Run(ctx context.Context, e Eval) (Reply, error) {
	r, err := s.RunMany(ctx, e)
	if err != nil {
		return Reply{}, err
	}
	return r[0], r[0].Error()
}

// RunMany calls scripts in one pipeline, returning one reply per call;
// script errors stay in their Reply as with Do.
func (s *Scripts) RunMany(ctx context.Context, evals ...Eval) ([]Reply, error) {
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
