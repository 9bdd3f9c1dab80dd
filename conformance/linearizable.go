package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"pgregory.net/rapid"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// history records a concurrent run: each client goroutine appends its own
// operations, invoked one after another, with call and return times on
// the monotonic clock.
type history struct {
	start    time.Time
	deadline time.Time
	maxOps   int64
	started  atomic.Int64

	mu        sync.Mutex
	ops       []porcupine.Operation
	calls     int // calls made (a snapshot is one call, several operations)
	ambiguous int
	errs      errorLog
	counts    map[string]int
}

func newHistory(opts Options) *history {
	now := time.Now()
	return &history{start: now, deadline: now.Add(opts.Duration), maxOps: int64(opts.MaxOps), counts: map[string]int{}}
}

// next reports whether a client may start another call.
func (h *history) next() bool {
	return time.Now().Before(h.deadline) && h.started.Add(1) <= h.maxOps
}

// now is the monotonic time since the start, in nanoseconds.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

// clientLog is what one client goroutine recorded.
type clientLog struct {
	id        int
	ops       []porcupine.Operation
	calls     int
	ambiguous int
	counts    map[string]int
}

// add records one call. An ambiguous call (err not nil, outcome
// outAmbiguous) may or may not have taken effect; unless the failure was
// injected, which happens only once the commands are done, it may also
// take effect at any time after it was invoked, even after later calls of
// the same client (its command may still be on its way), so it gets an
// infinite return time, as etcd's robustness tests do.
func (c *clientLog) add(kind string, input, output any, call, ret int64, err error) {
	var inj errInjected
	if err != nil && output.(interface{ outcome() outcome }).outcome() == outAmbiguous {
		c.ambiguous++
		if !errors.As(err, &inj) {
			ret = math.MaxInt64
		}
	}
	c.ops = append(c.ops, porcupine.Operation{ClientId: c.id, Input: input, Call: call, Output: output, Return: ret})
	c.counts[kind]++
}

func (h *history) merge(c *clientLog) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, c.ops...)
	h.calls += c.calls
	h.ambiguous += c.ambiguous
	for k, n := range c.counts {
		h.counts[k] += n
	}
}

// outcomeOf classifies err, logging unexpected errors.
func (h *history) outcomeOf(what string, err error) outcome {
	o, unexpected := classify(err)
	if unexpected {
		h.errs.add(what, err)
	}
	return o
}

func (h *history) summary() string {
	var parts []string
	for _, k := range []string{"join", "heartbeat", "leave", "expire", "snapshot", "observe", "set", "update", "remove", "get", "acquire", "release"} {
		if n := h.counts[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return strings.Join(parts, ", ")
}

// services builds Options.Nodes services sharing prefix and clock, each
// on its own client, with Options.FaultRate of the calls failing
// ambiguously.
func (h *harness) services(tb rapid.TB, prefix string, now func() time.Time) []*presence.Service {
	var out []*presence.Service
	for range h.opts.Nodes {
		s, err := h.service(faulty{h.client(), h.opts.FaultRate}, prefix, now)
		if err != nil {
			tb.Fatalf("presence.New: %v", err)
		}
		h.t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// checkPresenceLinearizable records Options.Clients clients doing random
// joins, heartbeats (stale, equal, higher, absent epochs; patches),
// leaves, expiries and snapshots on a few conns for Options.Duration, and
// checks the history against the presence model. The clock is fixed, so
// every join's epoch is determined: max(previous + 1, now).
func checkPresenceLinearizable(tb rapid.TB, h *harness) {
	prefix := h.prefix()
	nowMs := time.Now().UnixMilli()
	svcs := h.services(tb, prefix, func() time.Time { return time.UnixMilli(nowMs) })
	defer cleanup(unfaulty(svcs[0].Client()), prefix)
	hist := newHistory(h.opts)
	var wg sync.WaitGroup
	for i := range h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &clientLog{id: i, counts: map[string]int{}}
			presenceClient(h, hist, svcs[i%len(svcs)], c, nowMs, rand.New(rand.NewPCG(rand.Uint64(), uint64(i))))
			hist.merge(c)
		}()
	}
	wg.Wait()
	verify(tb, h, hist, presenceModel(nowMs), "presence")
}

func presenceClient(h *harness, hist *history, svc *presence.Service, c *clientLog, nowMs int64, rnd *rand.Rand) {
	known := map[roomConn]int64{} // the epoch this client last saw per conn
	fields := func(p int) [numKeys]string {
		var f [numKeys]string
		for i := range f {
			if rnd.IntN(100) < p {
				f[i] = stateVals[rnd.IntN(len(stateVals))]
			}
		}
		return f
	}
	for hist.next() {
		rc := roomConn{roomIDs[rnd.IntN(len(roomIDs))], connIDs[rnd.IntN(len(connIDs))]}
		in := pInput{Room: rc.room, Conn: rc.conn}
		ctx, cancel := h.ctx()
		c.calls++
		switch r := rnd.IntN(100); {
		case r < 14:
			in.Kind, in.User, in.Fields = pJoin, userIDs[rnd.IntN(len(userIDs))], fields(50)
			call := hist.now()
			j, err := svc.Join(ctx, rc.room, rc.conn, in.User, json.RawMessage(fieldsJSON(in.Fields)))
			ret := hist.now()
			o := hist.outcomeOf("join", err)
			if o == outOK {
				known[rc] = j.Epoch
			}
			c.add("join", in, pOutput{Out: o, Epoch: j.Epoch}, call, ret, err)
		case r < 60:
			in.Kind, in.Fields = pHeartbeat, fields(40)
			ref, ok := known[rc]
			if !ok {
				ref = nowMs
			}
			var p presence.HeartbeatParams
			switch e := rnd.IntN(100); {
			case e < 25:
			case e < 50:
				in.HasEpoch, in.Epoch = true, ref
			case e < 65:
				in.HasEpoch, in.Epoch = true, ref-1-rnd.Int64N(2)
			default:
				in.HasEpoch, in.Epoch = true, ref+1+rnd.Int64N(3)
			}
			if in.HasEpoch {
				p.Epoch = &in.Epoch
			}
			if in.Fields != ([numKeys]string{}) {
				p.PatchState = json.RawMessage(fieldsJSON(in.Fields))
			}
			call := hist.now()
			res, err := svc.Heartbeat(ctx, rc.room, rc.conn, p)
			ret := hist.now()
			o := hist.outcomeOf("heartbeat", err)
			if o == outOK {
				known[rc] = res.Epoch
			}
			c.add("heartbeat", in, pOutput{Out: o, Epoch: res.Epoch, Changed: res.Changed}, call, ret, err)
		case r < 67:
			in.Kind = pLeave
			call := hist.now()
			err := svc.Leave(ctx, rc.room, rc.conn)
			ret := hist.now()
			o := hist.outcomeOf("leave", err)
			c.add("leave", in, pOutput{Out: o}, call, ret, err)
		case r < 71:
			in.Kind = pExpire
			call := hist.now()
			_, err := svc.Client().Do(ctx, backend.K("DEL", svc.Keys().Conn(rc.room, rc.conn)))
			ret := hist.now()
			o := hist.outcomeOf("expire", err)
			c.add("expire", in, pOutput{Out: o}, call, ret, err)
		default:
			call := hist.now()
			snap, err := svc.Snapshot(ctx, rc.room)
			ret := hist.now()
			c.counts["snapshot"]++
			if hist.outcomeOf("snapshot", err) != outOK {
				break // a read that failed constrains nothing
			}
			seen := map[string]presence.Entry{}
			for _, e := range snap {
				seen[e.ConnID] = e
			}
			for _, conn := range connIDs {
				out := pOutput{Out: outOK}
				if e, ok := seen[conn]; ok {
					delete(seen, conn)
					out.Present, out.User, out.Epoch = true, e.UserID, e.Epoch
					out.State = parseFields(e.State)
					known[roomConn{rc.room, conn}] = e.Epoch
				}
				c.add("observe", pInput{Kind: pObserve, Room: rc.room, Conn: conn}, out, call, ret, nil)
			}
			for conn, e := range seen {
				// A conn the suite never joined: no partition can explain it.
				c.add("observe", pInput{Kind: pObserve, Room: rc.room, Conn: conn}, pOutput{Out: outOK, Present: true, User: e.UserID, Epoch: e.Epoch}, call, ret, nil)
			}
		}
		cancel()
	}
}

// parseFields maps a snapshot's state onto stateKeys; a key outside them
// is kept under an impossible value so the check fails.
func parseFields(raw json.RawMessage) [numKeys]string {
	var f [numKeys]string
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		f[0] = "unparsable state " + string(raw)
		return f
	}
	for i, k := range stateKeys {
		if v, ok := m[k]; ok {
			f[i] = string(v)
			delete(m, k)
		}
	}
	for k := range m {
		f[0] = "unexpected key " + k
	}
	return f
}

// checkMetadataLinearizable records Options.Clients clients doing random
// sets, updates and removes (right, wrong and unchecked revisions, some
// under one of two locks), gets, and lock acquires and releases on two
// channels for Options.Duration, and checks the history against the
// metadata model. Every node runs two services on its client, one with
// advisory locks and one with enforced locks, and the clients are spread
// over both, so one history checks both modes and how they mix.
func checkMetadataLinearizable(tb rapid.TB, h *harness) {
	prefix := h.prefix()
	nowMs := time.Now().UnixMilli()
	now := func() time.Time { return time.UnixMilli(nowMs) }
	advisory := h.services(tb, prefix, now)
	defer cleanup(unfaulty(advisory[0].Client()), prefix)
	enforced := make([]*presence.Service, len(advisory))
	for i, a := range advisory {
		if !h.enforcedOK() {
			break
		}
		s, err := h.serviceLocks(a.Client(), prefix, now, presence.LocksEnforced)
		if err != nil {
			tb.Fatalf("presence.New: %v", err)
		}
		h.t.Cleanup(func() { s.Close() })
		enforced[i] = s
	}
	hist := newHistory(h.opts)
	var wg sync.WaitGroup
	for i := range h.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &clientLog{id: i, counts: map[string]int{}}
			node, enforce := i%len(advisory), h.enforcedOK() && (i/len(advisory))%2 == 1
			svc := advisory[node]
			if enforce {
				svc = enforced[node]
			}
			metadataClient(h, hist, svc, enforce, c, rand.New(rand.NewPCG(rand.Uint64(), uint64(i))))
			hist.merge(c)
		}()
	}
	wg.Wait()
	spurious := 0
	for _, op := range hist.ops {
		in, out := op.Input.(mInput), op.Output.(mOutput)
		if out.Out == outConflict && !checked(in) {
			spurious++
		}
	}
	if spurious > 0 {
		tb.Logf("linearizable: %d unchecked mutations ended in ErrConflict (retries ran out under contention); the model allows that", spurious)
	}
	var enforcedOK, enforcedLocked int
	for _, op := range hist.ops {
		in, out := op.Input.(mInput), op.Output.(mOutput)
		switch {
		case !in.Enforced:
		case out.Out == outOK:
			enforcedOK++
		case out.Out == outLocked:
			enforcedLocked++
		}
	}
	tb.Logf("linearizable: mutations with enforced locks: %d succeeded, %d refused ErrLocked", enforcedOK, enforcedLocked)
	verify(tb, h, hist, metadataModel(), "metadata")
}

func metadataClient(h *harness, hist *history, svc *presence.Service, enforced bool, c *clientLog, rnd *rand.Rand) {
	type view struct {
		major int64
		items [numKeys]mItem
	}
	known := map[string]*view{}
	for _, ch := range chanIDs {
		known[ch.Name] = &view{}
	}
	learn := func(v *view, r *presence.MetadataResponse) mOutput {
		out := mOutput{Out: outOK, Major: r.MajorRevision}
		for k, e := range r.Metadata {
			i := indexOf(itemKeys, k)
			if i < 0 {
				out.Alien = k
				continue
			}
			out.Items[i] = mItem{Exists: true, Value: e.Value, Rev: e.Revision}
		}
		v.major, v.items = out.Major, out.Items
		return out
	}
	lockTTL := h.opts.Duration + time.Minute
	for hist.next() {
		ch := chanIDs[rnd.IntN(len(chanIDs))]
		v := known[ch.Name]
		in := mInput{Chan: ch.Name, Major: -1, Enforced: enforced, Lock: rnd.IntN(numLocks)}
		var o presence.MetadataOptions
		if rnd.IntN(100) < 40 {
			in.Major = v.major
			if rnd.IntN(100) < 20 {
				in.Major++
			}
			o.MajorRevision = presence.Rev(in.Major)
		}
		if rnd.IntN(100) < 15 {
			in.Locked, in.Actor = true, userIDs[rnd.IntN(len(userIDs))]
			o.LockName, o.Actor = lockNames[in.Lock], in.Actor
		} else if rnd.IntN(2) == 0 {
			// An actor without lockName: under enforced locks even the
			// holder is refused.
			in.Actor = userIDs[rnd.IntN(len(userIDs))]
			o.Actor = in.Actor
		}
		ctx, cancel := h.ctx()
		c.calls++
		var resp *presence.MetadataResponse
		var err error
		call := hist.now()
		kind := ""
		switch r := rnd.IntN(100); {
		case r < 15:
			kind, in.Kind = "set", mSet
			var items []presence.Item
			for i, k := range itemKeys {
				if rnd.IntN(2) == 0 {
					continue
				}
				it := mItemIn{Idx: i, Value: metaVals[rnd.IntN(len(metaVals))]}
				if rnd.IntN(100) < 20 {
					it.Rev = 1 + rnd.Int64N(5)
				}
				in.Items = append(in.Items, it)
				items = append(items, presence.Item{Key: k, Value: it.Value, Revision: presence.Rev(it.Rev)})
			}
			resp, err = svc.SetMetadata(ctx, ch, items, o)
		case r < 48:
			kind, in.Kind = "update", mUpdate
			var items []presence.Item
			for _, i := range rnd.Perm(numKeys) {
				if rnd.IntN(100) < 40 || !v.items[i].Exists && rnd.IntN(100) < 80 {
					continue
				}
				it := mItemIn{Idx: i, Value: metaVals[rnd.IntN(len(metaVals))], Rev: -1}
				switch p := rnd.IntN(100); {
				case p < 55:
					it.Rev = v.items[i].Rev
				case p < 70:
					it.Rev = v.items[i].Rev + 1
				}
				in.Items = append(in.Items, it)
				items = append(items, presence.Item{Key: itemKeys[i], Value: it.Value, Revision: presence.Rev(it.Rev)})
			}
			if len(items) == 0 {
				i := rnd.IntN(numKeys)
				in.Items = []mItemIn{{Idx: i, Value: "z", Rev: -1}}
				items = []presence.Item{{Key: itemKeys[i], Value: "z"}}
			}
			resp, err = svc.UpdateMetadata(ctx, ch, items, o)
		case r < 58:
			kind, in.Kind = "remove", mRemove
			var keys []string
			if rnd.IntN(100) >= 25 {
				for i, k := range itemKeys {
					if rnd.IntN(2) == 0 {
						in.Items = append(in.Items, mItemIn{Idx: i})
						keys = append(keys, k)
					}
				}
			}
			resp, err = svc.RemoveMetadata(ctx, ch, keys, o)
		case r < 88:
			kind, in = "get", mInput{Kind: mGet, Chan: ch.Name, Major: -1}
			resp, err = svc.GetMetadata(ctx, ch)
		case r < 95:
			kind, in = "acquire", mInput{Kind: mAcquire, Chan: ch.Name, Major: -1, Lock: in.Lock, Actor: userIDs[rnd.IntN(len(userIDs))]}
			var l presence.Lock
			l, err = svc.AcquireLock(ctx, ch, lockNames[in.Lock], in.Actor, lockTTL)
			if err == nil && l.Owner != in.Actor {
				err = fmt.Errorf("conformance: AcquireLock(%s) succeeded with owner %q", in.Actor, l.Owner)
			}
		default:
			kind, in = "release", mInput{Kind: mRelease, Chan: ch.Name, Major: -1, Lock: in.Lock, Actor: userIDs[rnd.IntN(len(userIDs))]}
			err = svc.ReleaseLock(ctx, ch, lockNames[in.Lock], in.Actor)
		}
		ret := hist.now()
		cancel()
		out := mOutput{Out: hist.outcomeOf(kind, err)}
		if out.Out == outOK && resp != nil {
			out = learn(v, resp)
		}
		if kind == "get" && out.Out != outOK {
			c.counts["get"]++
			continue // a read that failed constrains nothing
		}
		c.add(kind, in, out, call, ret, err)
	}
}

// checked reports whether a mutation compares any revision.
func checked(in mInput) bool {
	if in.Major >= 0 {
		return true
	}
	for _, it := range in.Items {
		if in.Kind == mUpdate && it.Rev >= 0 {
			return true
		}
	}
	return false
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// verify checks a recorded history and reports a violation with
// porcupine's visualisation.
func verify(tb rapid.TB, h *harness, hist *history, model porcupine.Model, what string) {
	recorded := time.Since(hist.start)
	if hist.errs.n > 0 {
		tb.Errorf("linearizable: %d calls failed with errors that are neither the API's nor a timeout or connection failure (counted as ambiguous), e.g.:\n  %s",
			hist.errs.n, strings.Join(hist.errs.first, "\n  "))
	}
	if len(hist.ops) == 0 {
		tb.Fatalf("linearizable: no operations recorded")
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, hist.ops, h.opts.CheckTimeout)
	took := time.Since(start)
	parts := len(model.Partition(hist.ops))
	tb.Logf("linearizable: %d operations checked (%d calls by %d clients on %d nodes in %v: %s; %d ambiguous); porcupine: %s in %v over %d partitions",
		len(hist.ops), hist.calls, h.opts.Clients, h.opts.Nodes, recorded.Round(time.Millisecond), hist.summary(), hist.ambiguous,
		res, took.Round(time.Millisecond), parts)
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(h.opts.ArtifactDir, fmt.Sprintf("conformance-%s-%d.html", fileName(tb.Name()), time.Now().UnixNano()))
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			tb.Errorf("linearizable: writing the visualisation: %v", err)
			path = "(not written)"
		}
		tb.Errorf("linearizable: the %s history of %d operations is NOT linearizable against the sequential model; "+
			"open %s in a browser to see the longest linearizable prefix of each partition and where it breaks%s",
			what, len(hist.ops), path, illegalPartitions(model, hist.ops, h.opts.CheckTimeout))
	case porcupine.Unknown:
		tb.Logf("linearizable: porcupine's search ran out of time (%v): inconclusive, not a violation; lower -conformance.maxops or raise CONFORMANCE_CHECK_TIMEOUT", h.opts.CheckTimeout)
	}
}

// illegalPartitions describes which partitions fail on their own.
func illegalPartitions(model porcupine.Model, ops []porcupine.Operation, timeout time.Duration) string {
	single := model
	single.Partition = nil
	var out []string
	for _, p := range model.Partition(ops) {
		if porcupine.CheckOperationsTimeout(single, p, timeout) == porcupine.Illegal {
			out = append(out, fmt.Sprintf("%s (%d operations)", partitionName(p[0].Input), len(p)))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; failing partitions: " + strings.Join(out, ", ")
}

func partitionName(in any) string {
	switch i := in.(type) {
	case pInput:
		return "conn " + i.Room + "/" + i.Conn
	case mInput:
		return "channel " + i.Chan
	}
	return "?"
}

func fileName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}
