package presence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/backend"
)

// The values of Config.Reaper.
const (
	ReaperSweep  = "sweep"
	ReaperNotify = "notify"
)

// expiredPattern is the keyevent channel of expired keys, in every
// database: keyevent rather than keyspace notifications, since "Ex" is
// the setting most deployments that use notifications already have; the
// handler filters conn keys of this prefix.
const expiredPattern = "__keyevent@*__:expired"

// maxPendingExpired bounds the expired conns queued between the
// subscription and the worker; beyond it events are dropped and a sweep
// runs instead, so a burst cannot grow memory without bound.
const maxPendingExpired = 1 << 16

// ReaperStatus says which reaper runs on this node.
type ReaperStatus struct {
	// Mode is the configured reaper: "sweep", "notify", or "off" when
	// ReaperInterval is negative.
	Mode string
	// Active is the reaper running now: Mode, or "sweep" while the notify
	// reaper cannot subscribe (Reason says why), or "starting" until its
	// first attempt to subscribe ends.
	Active string
	Reason error
	// Subscription, while Active is "notify", is nil when the subscription
	// of every master is connected, else which are not (a master lost, or
	// a new one not subscribed yet): their events are lost until it
	// recovers, and the backstop sweep covers them.
	Subscription error
	// Notified counts conns removed by reaps that expired-key events
	// triggered (a subset of Stats.Reaped).
	Notified uint64
}

// ReaperStatus reports the configured and the running reaper.
func (s *Service) ReaperStatus() ReaperStatus {
	switch {
	case s.cfg.ReaperInterval <= 0:
		return ReaperStatus{Mode: "off", Active: "off"}
	case s.notify == nil:
		return ReaperStatus{Mode: ReaperSweep, Active: ReaperSweep}
	}
	n := s.notify
	st := ReaperStatus{Mode: ReaperNotify, Active: ReaperSweep, Notified: n.notified.Load()}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sub != nil {
		st.Active = ReaperNotify
		if ss, ok := n.sub.(backend.SubscriptionState); ok {
			st.Subscription = ss.Alive()
		}
	} else if st.Reason = n.reason; st.Reason == nil {
		st.Active = "starting" // the first subscription is under way
	}
	return st
}

// notifyReaper reaps rooms as their conn keys expire. Its control loop
// subscribes (or falls back to sweeping), sweeps as a backstop and checks
// the servers' setting; its worker turns expired events into reaps.
type notifyReaper struct {
	s    *Service
	life context.Context // ends when the service closes

	mu      sync.Mutex
	sub     backend.Subscription // nil while falling back to sweep
	reason  error                // why sub is nil
	pending map[string]expiredConn
	due     map[string]time.Time // room → when its conns pass the lookback

	wake     chan struct{} // the worker has pending events
	lost     atomic.Bool   // events were dropped: sweep soon
	notified atomic.Uint64
}

type expiredConn struct{ room, conn string }

func (s *Service) startNotifyReaper() {
	s.notify = &notifyReaper{
		s:       s,
		pending: map[string]expiredConn{},
		due:     map[string]time.Time{},
		wake:    make(chan struct{}, 1),
	}
	life, cancel := context.WithCancel(context.Background())
	s.notify.life = life
	s.bg.Add(3)
	go func() {
		defer s.bg.Done()
		<-s.stop
		cancel()
	}()
	go s.notify.control()
	go s.notify.worker()
}

// ctx returns a context that ends after d or when the service closes.
func (n *notifyReaper) ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(n.life, d)
}

// control subscribes, sweeps every ReaperBackstopInterval (every
// ReaperInterval while it cannot subscribe, and at once when events may
// have been lost), and closes the subscription when the service closes.
func (n *notifyReaper) control() {
	s := n.s
	defer s.bg.Done()
	defer func() {
		n.mu.Lock()
		sub := n.sub
		n.sub = nil
		n.mu.Unlock()
		if sub != nil {
			_ = sub.Close()
		}
	}()
	check := time.NewTicker(min(s.cfg.ReaperInterval, s.cfg.ReaperBackstopInterval))
	defer check.Stop()
	var lastSetup, lastSweep time.Time
	var resubs uint64
	var recheck, warned bool // a (re)subscribed master's setting is to be checked
	for {
		n.mu.Lock()
		sub := n.sub
		n.mu.Unlock()
		now := time.Now()
		sweep := false
		switch {
		case sub == nil && (lastSetup.IsZero() || now.Sub(lastSetup) >= s.cfg.ReaperBackstopInterval):
			lastSetup = now
			recheck, warned = false, false // setup checks every master
			if n.setup() {
				resubs = n.resubscribed()
			}
			sweep = true // what expired before the subscription
		case sub == nil:
			sweep = true // falling back: sweep every ReaperInterval
		case now.Sub(lastSweep) >= s.cfg.ReaperBackstopInterval:
			recheck, warned = false, false
			if err := n.verify(); err != nil {
				n.fallBack(err)
			}
			sweep = true
		default:
			if r := n.resubscribed(); r != resubs {
				resubs = r
				s.log.Warn("presence: notify reaper: a subscription was re-established; sweeping for events missed meanwhile")
				sweep = true
				// It may be a new master (a promoted replica, which
				// CONFIG SET on the masters never reached): check its
				// setting now rather than at the next backstop sweep.
				recheck = true
			}
			if recheck {
				// Retried every tick while it fails: during a failover a
				// master may be unreachable for a while, which is no
				// reason to stop using notifications; the backstop's
				// check falls back if it still fails then.
				err := n.verify()
				switch {
				case err == nil:
					recheck = false
					sweep = true // what expired before the setting was there
				case !warned:
					warned = true
					s.log.Warn("presence: notify reaper: checking notify-keyspace-events after a (re)subscription failed; retrying", "err", err)
				}
				if !recheck {
					warned = false
				}
			}
			if n.lost.Swap(false) {
				sweep = true
			}
		}
		if sweep {
			lastSweep = now
			if !n.sweep() {
				return
			}
		}
		select {
		case <-s.stop:
			return
		case <-check.C:
		}
	}
}

// sweep runs one reaper pass; false once the service is closing.
func (n *notifyReaper) sweep() bool {
	s := n.s
	ctx, cancel := n.ctx(max(s.cfg.ReaperInterval, 5*time.Second))
	defer cancel()
	removed, err := s.Reap(ctx)
	if err != nil && s.closed.Load() {
		return false
	}
	if err != nil {
		s.log.Warn("presence: reaper pass failed", "err", err, "removed", removed)
	} else if removed > 0 {
		s.log.Debug("presence: reaper sweep removed expired connections", "removed", removed)
	}
	return true
}

func (n *notifyReaper) resubscribed() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := n.sub.(backend.Resubscriber); ok {
		return r.Resubscribed()
	}
	return 0
}

// setup checks (or configures) the servers and subscribes on every
// master; on failure it records why and the node sweeps meanwhile.
func (n *notifyReaper) setup() bool {
	s := n.s
	ns, ok := s.client.(backend.NodeSubscriber)
	if !ok {
		n.fallBack(fmt.Errorf("the %T backend cannot subscribe on each master (backend.NodeSubscriber)", s.client))
		return false
	}
	if err := n.verify(); err != nil {
		n.fallBack(err)
		return false
	}
	ctx, cancel := n.ctx(10 * time.Second)
	defer cancel()
	sub, err := ns.PSubscribeEachMaster(ctx, expiredPattern, n.onExpired)
	if err != nil {
		if !s.closed.Load() {
			n.fallBack(fmt.Errorf("subscribe to %s: %w", expiredPattern, err))
		}
		return false
	}
	n.mu.Lock()
	n.sub, n.reason = sub, nil
	n.mu.Unlock()
	s.log.Info("presence: notify reaper subscribed to expired-key events on every master",
		"backstop", s.cfg.ReaperBackstopInterval)
	return true
}

// fallBack drops the subscription and sweeps every ReaperInterval until
// setup succeeds again.
func (n *notifyReaper) fallBack(err error) {
	n.mu.Lock()
	sub := n.sub
	n.sub, n.reason = nil, err
	n.mu.Unlock()
	if sub != nil {
		_ = sub.Close()
	}
	if n.s.closed.Load() {
		return
	}
	n.s.log.Error("presence: notify reaper unavailable; sweeping every ReaperInterval instead",
		"err", err, "interval", n.s.cfg.ReaperInterval, "retry", n.s.cfg.ReaperBackstopInterval)
}

// verify reads notify-keyspace-events on every master and, when told to,
// adds what expired events need. A new master after a failover may lack
// the setting, so this runs at every backstop sweep too.
func (n *notifyReaper) verify() error {
	s := n.s
	mr, ok := s.client.(backend.MasterRunner)
	if !ok {
		return fmt.Errorf("the %T backend cannot address each master (backend.MasterRunner)", s.client)
	}
	ctx, cancel := n.ctx(10 * time.Second)
	defer cancel()
	var errs []error
	var fix, all []string
	get := []backend.Cmd{{Name: "CONFIG", Args: []string{"GET", "notify-keyspace-events"}}}
	err := mr.EachMaster(ctx, get, func(addr string, r []backend.Reply, err error) {
		flags, err := notifyFlags(r, err)
		all = append(all, flags)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: CONFIG GET notify-keyspace-events: %w (the server may refuse CONFIG; set the option there)", addr, err))
		case expiredEvents(flags):
		case s.cfg.ReaperConfigureNotify:
			fix = append(fix, flags)
		default:
			errs = append(errs, fmt.Errorf("%s: notify-keyspace-events is %q; expired-key events need \"Ex\" (set it on every master, or PRESENCE_REAPER_CONFIGURE_NOTIFY=1)", addr, flags))
		}
	})
	if err != nil {
		return err
	}
	if len(errs) > 0 || len(fix) == 0 {
		return errors.Join(errs...)
	}
	// CONFIG SET replaces the flags, and EachMaster sends one pipeline to
	// every master: set each to the union of all masters' flags plus E and
	// x, which only adds events (masters normally share one setting).
	union := map[rune]bool{}
	var want strings.Builder
	for _, f := range append(all, "Ex") {
		for _, c := range f {
			if !union[c] {
				union[c] = true
				want.WriteRune(c)
			}
		}
	}
	set := []backend.Cmd{{Name: "CONFIG", Args: []string{"SET", "notify-keyspace-events", want.String()}}}
	err = mr.EachMaster(ctx, set, func(addr string, r []backend.Reply, err error) {
		if err == nil {
			err = r[0].Error()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: CONFIG SET notify-keyspace-events %s: %w", addr, want.String(), err))
		}
	})
	if err == nil && len(errs) == 0 {
		s.log.Info("presence: notify reaper enabled expired-key events on every master", "notify-keyspace-events", want.String(), "lacking", len(fix))
	}
	return errors.Join(err, errors.Join(errs...))
}

func notifyFlags(r []backend.Reply, err error) (string, error) {
	if err != nil {
		return "", err
	}
	if err := r[0].Error(); err != nil {
		return "", err
	}
	kv, err := r[0].AsStrings()
	if err != nil || len(kv) != 2 {
		return "", fmt.Errorf("unexpected reply %v", r[0])
	}
	return kv[1], nil
}

// expiredEvents reports whether flags publish keyevent expired events:
// E, and x or A (all events).
func expiredEvents(flags string) bool {
	return strings.ContainsRune(flags, 'E') && strings.ContainsAny(flags, "xA")
}

// onExpired queues an expired conn key of this prefix; other keys are
// ignored. Called by the subscription, possibly concurrently.
func (n *notifyReaper) onExpired(m backend.Message) {
	room, conn, ok := n.s.parseConnKey(m.Payload)
	if !ok {
		return
	}
	n.mu.Lock()
	if len(n.pending) >= maxPendingExpired {
		n.mu.Unlock()
		n.lost.Store(true)
		return
	}
	n.pending[m.Payload] = expiredConn{room, conn}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// parseConnKey reads room and conn from a conn hash key (core.Keys.Conn):
// prefix:{room:R}:conn:C, where R holds no brace.
func (s *Service) parseConnKey(key string) (room, conn string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.keys.Prefix+":{room:")
	if !ok {
		return "", "", false
	}
	i := strings.IndexByte(rest, '}')
	if i < 0 {
		return "", "", false
	}
	conn, ok = strings.CutPrefix(rest[i+1:], ":conn:")
	if !ok || conn == "" || i == 0 {
		return "", "", false
	}
	return rest[:i], conn, true
}

// worker reaps the rooms of expired conns: those past the lookback at
// once, the others when they will be (a conn is reaped only once its last
// heartbeat is older than ReaperLookback, and its key may expire sooner).
func (n *notifyReaper) worker() {
	s := n.s
	defer s.bg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.mu.Lock()
		next := time.Time{}
		for _, t := range n.due {
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
		n.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-s.stop:
			return
		case <-n.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		n.mu.Lock()
		batch := n.pending
		n.pending = map[string]expiredConn{}
		var rooms []string
		now := time.Now()
		for room, t := range n.due {
			if !t.After(now) {
				rooms = append(rooms, room)
				delete(n.due, room)
			}
		}
		n.mu.Unlock()
		if !n.process(batch, rooms) {
			return
		}
	}
}

// process reaps rooms (their due time has come) and the rooms of batch
// whose expired conn is past the lookback; it schedules the others.
// False once the service is closing.
func (n *notifyReaper) process(batch map[string]expiredConn, rooms []string) bool {
	s := n.s
	ctx, cancel := n.ctx(max(s.cfg.ReaperInterval, 5*time.Second))
	defer cancel()
	var errs []error
	if len(batch) > 0 {
		ready, err := n.ready(ctx, batch)
		errs = append(errs, err)
		rooms = append(rooms, ready...)
	}
	if len(rooms) > 0 {
		seen := make(map[string]bool, len(rooms))
		uniq := rooms[:0]
		for _, r := range rooms {
			if !seen[r] {
				seen[r] = true
				uniq = append(uniq, r)
			}
		}
		for len(uniq) > 0 {
			k := min(len(uniq), reapBatch)
			removed, err := s.reapRooms(ctx, uniq[:k])
			uniq = uniq[k:]
			n.notified.Add(uint64(removed))
			s.ctr.reaped.Add(uint64(removed))
			if h := s.cfg.Hooks.Reaped; h != nil && removed > 0 {
				h(removed)
			}
			if err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		if s.closed.Load() {
			return false
		}
		// The backstop sweep reaps what this pass could not.
		s.log.Warn("presence: notify reaper: reaping expired connections failed", "err", err)
		n.lost.Store(true)
	}
	return true
}

// ready reads the last heartbeat of each expired conn (one pipeline) and
// returns the rooms with a conn past the lookback; a conn not yet past it
// schedules its room, and one no longer listed was reaped or left already
// (by another node's reaper, say), which costs no script call.
func (n *notifyReaper) ready(ctx context.Context, batch map[string]expiredConn) ([]string, error) {
	s := n.s
	conns := make([]expiredConn, 0, len(batch))
	cmds := make([]backend.Cmd, 0, len(batch))
	for _, c := range batch {
		conns = append(conns, c)
		cmds = append(cmds, backend.K("ZSCORE", s.keys.LastSeen(c.room), c.conn))
	}
	replies, err := s.client.Do(ctx, cmds...)
	if err != nil {
		return nil, err
	}
	lookback := s.cfg.ReaperLookback.Milliseconds()
	nowMs := s.nowMs()
	var rooms []string
	var errs []error
	for i, r := range replies {
		if err := r.Error(); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.IsNil() {
			continue
		}
		str, err := r.AsString()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lastSeen, err := strconv.ParseFloat(str, 64)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		wait := int64(lastSeen) + lookback - nowMs
		if wait <= 0 {
			rooms = append(rooms, conns[i].room)
			continue
		}
		at := time.Now().Add(time.Duration(wait+1) * time.Millisecond)
		n.mu.Lock()
		if t, ok := n.due[conns[i].room]; !ok || at.Before(t) {
			n.due[conns[i].room] = at
		}
		n.mu.Unlock()
	}
	return rooms, errors.Join(errs...)
}
