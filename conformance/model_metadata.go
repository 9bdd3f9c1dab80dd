package conformance

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The porcupine model of channel metadata and its lock, partitioned by
// channel.

type mKind uint8

const (
	mSet mKind = iota
	mUpdate
	mRemove
	mGet
	mAcquire
	mRelease
)

// mItemIn is one item of a mutation; Idx indexes itemKeys.
type mItemIn struct {
	Idx   int
	Value string
	Rev   int64 // set: stored when > 0, else 1; update: checked when >= 0
}

// mInput is a metadata operation on one channel.
type mInput struct {
	Kind   mKind
	Chan   string
	Items  []mItemIn // set, update; remove uses only Idx, none = all
	Major  int64     // checked when >= 0
	Locked bool      // the mutation requires lock Lock held by Actor
	Lock   int       // indexes lockNames: the lock named, acquired or released
	Actor  string    // for Locked; the owner for acquire and release
	// Enforced: the mutation ran on a service with enforced locks, so
	// any held lock of the channel bars it unless Actor holds them all
	// and names one.
	Enforced bool
}

// mItem is a stored item; comparable.
type mItem struct {
	Exists bool
	Value  string
	Rev    int64
}

// mState is a channel in the model; comparable.
type mState struct {
	Major int64
	Items [numKeys]mItem
	Locks [numLocks]string // owners, "" when free
}

// mOutput is the result of an operation: for a successful mutation or a
// get, the record it returned.
type mOutput struct {
	Out   outcome
	Major int64
	Items [numKeys]mItem
	Alien string // a key outside itemKeys in the returned record
}

func (o mOutput) outcome() outcome { return o.Out }

func metadataModel() porcupine.Model {
	m := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			return partitionBy(history, func(in any) string { return in.(mInput).Chan })
		},
		Init: func() []any { return []any{mState{}} },
		Step: func(state, input, output any) []any {
			return ambiguousStep(state, output.(mOutput).Out, func() (bool, any) {
				return metadataStep(state.(mState), input.(mInput), output.(mOutput))
			})
		},
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			fmt.Fprint(h, state)
			return h.Sum64()
		},
		DescribeOperation: func(input, output any) string { return describeMetadata(input.(mInput), output.(mOutput)) },
		DescribeState: func(state any) string {
			return describeRecord(state.(mState).Major, state.(mState).Items) + lockSuffix(state.(mState).Locks)
		},
	}
	return m.ToModel()
}

// failures returns the errors in allows against s, any one of which is a
// correct answer; none means the mutation must succeed.
func failures(s mState, in mInput) []outcome {
	var errs []outcome
	if in.Locked && (in.Actor == "" || s.Locks[in.Lock] != in.Actor) {
		errs = append(errs, outLocked)
	}
	if in.Enforced {
		for _, owner := range s.Locks {
			if owner != "" && (!in.Locked || owner != in.Actor) {
				errs = append(errs, outLocked)
			}
		}
	}
	if in.Major >= 0 && in.Major != s.Major {
		errs = append(errs, outConflict)
	}
	if in.Kind == mUpdate {
		for _, it := range in.Items {
			cur := s.Items[it.Idx]
			switch {
			case !cur.Exists:
				errs = append(errs, outInvalid)
			case it.Rev >= 0 && it.Rev != cur.Rev:
				errs = append(errs, outConflict)
			}
		}
	}
	return errs
}

// apply returns s after a successful mutation.
func apply(s mState, in mInput) mState {
	n := s
	switch in.Kind {
	case mSet:
		n.Items = [numKeys]mItem{}
		for _, it := range in.Items {
			n.Items[it.Idx] = mItem{Exists: true, Value: it.Value, Rev: max(1, it.Rev)}
		}
	case mUpdate:
		for _, it := range in.Items {
			n.Items[it.Idx] = mItem{Exists: true, Value: it.Value, Rev: s.Items[it.Idx].Rev + 1}
		}
	case mRemove:
		if len(in.Items) == 0 {
			n.Items = [numKeys]mItem{}
		}
		for _, it := range in.Items {
			n.Items[it.Idx] = mItem{}
		}
		if n.Items == s.Items {
			return s // nothing removed: not a mutation
		}
	}
	n.Major++
	return n
}

func metadataStep(s mState, in mInput, out mOutput) (bool, mState) {
	amb := out.Out == outAmbiguous
	switch in.Kind {
	case mGet:
		if amb {
			return true, s
		}
		return out.Out == outOK && out.Alien == "" && out.Major == s.Major && out.Items == s.Items, s
	case mAcquire:
		if cur := s.Locks[in.Lock]; cur != "" && cur != in.Actor {
			return amb || out.Out == outLocked, s
		}
		n := s
		n.Locks[in.Lock] = in.Actor
		return amb || out.Out == outOK, n
	case mRelease:
		if s.Locks[in.Lock] != in.Actor {
			return amb || out.Out == outLocked, s
		}
		n := s
		n.Locks[in.Lock] = ""
		return amb || out.Out == outOK, n
	}
	// A mutation. ErrConflict is always a correct answer that changed
	// nothing: a strategy may give up after bounded retries of an
	// optimistic transaction that concurrent writes kept aborting.
	if out.Out == outConflict {
		return true, s
	}
	if errs := failures(s, in); len(errs) > 0 {
		return amb || slices.Contains(errs, out.Out), s
	}
	n := apply(s, in)
	if amb {
		return true, n
	}
	return out.Out == outOK && out.Alien == "" && out.Major == n.Major && out.Items == n.Items, n
}

func describeRecord(major int64, items [numKeys]mItem) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{major %d", major)
	for i, it := range items {
		if it.Exists {
			fmt.Fprintf(&b, ", %s=%q@%d", itemKeys[i], it.Value, it.Rev)
		}
	}
	return b.String() + "}"
}

func lockSuffix(owners [numLocks]string) string {
	s := ""
	for i, owner := range owners {
		if owner != "" {
			s += " " + lockNames[i] + " held by " + owner
		}
	}
	return s
}

func describeMetadata(in mInput, out mOutput) string {
	var call string
	items := func(withValues bool) string {
		var parts []string
		for _, it := range in.Items {
			p := itemKeys[it.Idx]
			if withValues {
				p += fmt.Sprintf("=%q", it.Value)
				if in.Kind == mSet && it.Rev > 0 || in.Kind == mUpdate && it.Rev >= 0 {
					p += fmt.Sprintf("@%d", it.Rev)
				}
			}
			parts = append(parts, p)
		}
		return "[" + strings.Join(parts, " ") + "]"
	}
	opts := ""
	if in.Major >= 0 {
		opts += fmt.Sprintf(" major=%d", in.Major)
	}
	if in.Locked {
		opts += " lock " + lockNames[in.Lock] + " by " + in.Actor
	} else if in.Actor != "" {
		opts += " by " + in.Actor
	}
	if in.Enforced {
		opts += " (enforced)"
	}
	switch in.Kind {
	case mSet:
		call = "set" + items(true) + opts
	case mUpdate:
		call = "update" + items(true) + opts
	case mRemove:
		call = "remove" + items(false) + opts
	case mGet:
		call = "get"
	case mAcquire:
		call = "acquire(" + lockNames[in.Lock] + ", " + in.Actor + ")"
	case mRelease:
		call = "release(" + lockNames[in.Lock] + ", " + in.Actor + ")"
	}
	res := out.Out.String()
	if out.Out == outOK && in.Kind != mAcquire && in.Kind != mRelease {
		res = describeRecord(out.Major, out.Items)
		if out.Alien != "" {
			res += " +unknown key " + out.Alien
		}
	}
	return fmt.Sprintf("%s %s → %s", in.Chan, call, res)
}
