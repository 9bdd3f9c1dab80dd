package conformance

import (
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/anishathalye/porcupine"
)

// The porcupine model of presence, partitioned by conn: a history is
// linearizable iff the history of every conn is (a snapshot, which reads a
// whole room, is recorded as one observation per conn of the room, all
// with the snapshot's call and return times).

type pKind uint8

const (
	pJoin pKind = iota
	pHeartbeat
	pLeave
	pExpire  // the conn hash deleted, as its TTL running out would
	pObserve // one conn as a snapshot saw it
)

// pInput is a presence operation on one conn.
type pInput struct {
	Kind     pKind
	Room     string
	Conn     string
	User     string          // join
	Fields   [numKeys]string // join: the state; heartbeat: the patch ("" = key absent)
	HasEpoch bool            // heartbeat
	Epoch    int64
}

// pOutput is its result.
type pOutput struct {
	Out     outcome // outAmbiguous: may or may not have happened
	Epoch   int64   // join, heartbeat
	Changed bool    // heartbeat
	// observe: whether the conn was listed, and as what
	Present bool
	User    string
	State   [numKeys]string
}

func (o pOutput) outcome() outcome { return o.Out }

// pState is one conn in the model. Comparable: == is state equality.
type pState struct {
	Live  bool
	User  string
	Epoch int64 // stored epoch, while live
	Last  int64 // highest epoch ever stored, -1 for none
	State [numKeys]string
}

// presenceModel returns the model for a history recorded with the clock
// fixed at nowMs, so a join's epoch is exactly max(Last + 1, nowMs).
func presenceModel(nowMs int64) porcupine.Model {
	m := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			return partitionBy(history, func(in any) string { i := in.(pInput); return i.Room + "/" + i.Conn })
		},
		Init: func() []any { return []any{pState{Last: -1}} },
		Step: func(state, input, output any) []any {
			return ambiguousStep(state, output.(pOutput).Out, func() (bool, any) {
				return presenceStep(nowMs, state.(pState), input.(pInput), output.(pOutput))
			})
		},
		Hash: func(state any) uint64 {
			s := state.(pState)
			h := fnv.New64a()
			fmt.Fprint(h, s.Live, s.User, s.Epoch, s.Last, s.State)
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string { return describePresence(nowMs, input.(pInput), output.(pOutput)) },
		DescribeState: func(state any) string {
			s := state.(pState)
			if !s.Live {
				return fmt.Sprintf("gone (last epoch %s)", rel(nowMs, s.Last))
			}
			return fmt.Sprintf("%s epoch %s state %s (last %s)", s.User, rel(nowMs, s.Epoch), fieldsJSON(s.State), rel(nowMs, s.Last))
		},
	}
	return m.ToModel()
}

// ambiguousStep makes a deterministic step nondeterministic for an
// ambiguous call: it either did not happen (the state stays) or happened
// (step's state; step accepts any output when ambiguous).
func ambiguousStep(state any, out outcome, step func() (bool, any)) []any {
	ok, next := step()
	switch {
	case out == outAmbiguous && next != state:
		return []any{state, next}
	case ok:
		return []any{next}
	}
	return nil
}

func presenceStep(nowMs int64, s pState, in pInput, out pOutput) (bool, pState) {
	amb := out.Out == outAmbiguous
	switch in.Kind {
	case pJoin:
		e := max(s.Last+1, nowMs)
		ok := amb || out.Out == outOK && out.Epoch == e
		return ok, pState{Live: true, User: in.User, Epoch: e, Last: max(s.Last, e), State: in.Fields}
	case pHeartbeat:
		switch {
		case !s.Live:
			return amb || out.Out == outNotFound, s
		case in.HasEpoch && in.Epoch < s.Epoch:
			return amb || out.Out == outStale, s
		}
		n := s
		if in.HasEpoch && in.Epoch > s.Epoch {
			n.Epoch = in.Epoch
			n.Last = max(n.Last, in.Epoch)
		}
		changed := false
		for i, v := range in.Fields {
			if v != "" && n.State[i] != v {
				n.State[i] = v
				changed = true
			}
		}
		return amb || out.Out == outOK && out.Epoch == n.Epoch && out.Changed == changed, n
	case pLeave, pExpire:
		n := s
		n.Live = false
		return amb || out.Out == outOK, n
	case pObserve:
		if !out.Present {
			return !s.Live, s
		}
		return s.Live && out.User == s.User && out.Epoch == s.Epoch && out.State == s.State, s
	}
	return false, s
}

// rel shows an epoch relative to the recording's clock, "T+3".
func rel(nowMs, e int64) string {
	switch {
	case e < 0:
		return "none"
	case e >= nowMs:
		return "T+" + strconv.FormatInt(e-nowMs, 10)
	}
	return "T-" + strconv.FormatInt(nowMs-e, 10)
}

func describePresence(nowMs int64, in pInput, out pOutput) string {
	res := out.Out.String()
	var call string
	switch in.Kind {
	case pJoin:
		call = fmt.Sprintf("join(%s, %s)", in.User, fieldsJSON(in.Fields))
		if out.Out == outOK {
			res = rel(nowMs, out.Epoch)
		}
	case pHeartbeat:
		e := "-"
		if in.HasEpoch {
			e = rel(nowMs, in.Epoch)
		}
		call = fmt.Sprintf("hb(%s, %s)", e, fieldsJSON(in.Fields))
		if out.Out == outOK {
			res = fmt.Sprintf("%s changed=%v", rel(nowMs, out.Epoch), out.Changed)
		}
	case pLeave:
		call = "leave"
	case pExpire:
		call = "expire"
	case pObserve:
		call = "snapshot"
		res = "absent"
		if out.Present {
			res = fmt.Sprintf("%s %s %s", out.User, rel(nowMs, out.Epoch), fieldsJSON(out.State))
		}
	}
	return fmt.Sprintf("%s/%s %s → %s", in.Room, in.Conn, call, res)
}

// partitionBy splits a history by key, keeping each partition in order.
func partitionBy(history []porcupine.Operation, key func(input any) string) [][]porcupine.Operation {
	idx := map[string]int{}
	var out [][]porcupine.Operation
	for _, op := range history {
		k := key(op.Input)
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], op)
	}
	return out
}
