package rueidis

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
)

// How a channel subscription spreads its work.
const (
	// channelWorkers is how many goroutines of a subscription call its
	// handler. A channel always goes to the same one (by hash of its
	// name), which keeps its calls sequential and in order while a slow
	// channel holds up only the channels that share its worker.
	channelWorkers = 8
	// channelBatch bounds the channels of one SUBSCRIBE / UNSUBSCRIBE
	// command, so 10,000 channels go as a pipeline of ten commands.
	channelBatch = 1000
)

// SubscribeChannels opens a subscription to exact channels, added and
// removed with Add and Remove (backend.ChannelSubscriber).
//
// Why this shape rather than rueidis's own Receive: Receive blocks one
// goroutine per SUBSCRIBE call for its whole life, rides the shared
// auto-pipelined connection (a slow handler would stall every command of
// the client), and, for sharded pub/sub, returns as soon as the server
// pushes sunsubscribe, leaving the caller to find the channel's new
// owner. Instead a subscription holds a few dedicated connections with
// pub/sub hooks (as PSubscribe does): one for classic pub/sub (any node
// of a cluster delivers every PUBLISH) and, for sharded pub/sub on a
// cluster, one per master owning a subscribed channel, where the channels
// go as SSUBSCRIBE commands grouped by slot (the server refuses one that
// spans slots). One goroutine (the supervisor) sends every subscribe and
// unsubscribe, so that concurrent Adds share a pipeline and the commands
// of one channel reach the server in the order of the calls; the hooks
// see the server's confirmations and its unsolicited sunsubscribe (a slot
// migrated or its master failed over), after which the supervisor
// re-reads the slot map and subscribes the channel on its new owner.
//
// The handler runs on one of channelWorkers goroutines (a channel always
// on the same one), fed by the connections' readers: a handler that waits
// for Add or Remove of its own subscription can stall the reader that
// would bring the confirmation, so it must not (start them on another
// goroutine).
func (c *Client) SubscribeChannels(ctx context.Context, sharded bool, h backend.Handler) (backend.ChannelSubscription, error) {
	if c.closed.Load() {
		return nil, backend.ErrClosed
	}
	if h == nil {
		return nil, errors.New("backend/rueidis: SubscribeChannels needs a handler")
	}
	s := &chanSub{
		c:       c,
		sharded: sharded,
		perNode: sharded && c.Cluster(),
		h:       h,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		chans:   make(map[string]*chanEntry),
		pending: make(map[*chanEntry]struct{}),
		conns:   make(map[string]*chanConn),
		moved:   make(map[int]string),
		kickers: make(map[string]bool),
	}
	s.life, s.stop = context.WithCancel(context.Background())
	s.workers = make([]chan delivery, channelWorkers)
	for i := range s.workers {
		s.workers[i] = make(chan delivery, subscriptionBuffer/channelWorkers)
	}
	if !c.track(s, s.stop) {
		s.stop()
		return nil, backend.ErrClosed
	}
	if !s.perNode {
		// The one connection is opened now: a server that cannot be
		// reached, or that lacks sharded pub/sub, fails here rather than
		// at the first Add.
		err := c.firstAttempt(ctx, s, s.life, s.stop, func(ctx context.Context) error {
			cc, err := s.connect(ctx, "")
			if err == nil {
				s.conns[""] = cc
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	for _, w := range s.workers {
		s.wg.Go(func() { s.work(w) })
	}
	go s.supervise()
	return s, nil
}

var _ backend.ChannelSubscriber = (*Client)(nil)

// chanSub is one SubscribeChannels subscription.
type chanSub struct {
	c       *Client
	sharded bool // SSUBSCRIBE rather than SUBSCRIBE
	perNode bool // sharded on a cluster: a connection per owning master
	h       backend.Handler
	workers []chan delivery

	life context.Context // done once Close (of s or of the client) began
	stop context.CancelFunc
	wake chan struct{}  // tells the supervisor there is work
	wg   sync.WaitGroup // workers and connection watchers
	done chan struct{}  // closed when everything of s has returned

	resubs atomic.Uint64

	mu      sync.Mutex
	chans   map[string]*chanEntry   // the channels added and not removed
	pending map[*chanEntry]struct{} // entries to (re)subscribe
	unsubs  []*unsubRequest         // Removes waiting for the server
	conns   map[string]*chanConn    // by master address; "" when one connection serves all
	slots   []slotRange             // perNode: the cluster's slot map, nil until read
	moved   map[int]string          // perNode: MOVED answers newer than slots
	stale   bool                    // perNode: slots must be read again
	// perNode: masters that unsubscribed a channel by themselves, until
	// every channel is subscribed again. They are asked first for the new
	// slot map: they know their slot is elsewhere (a master demoted by a
	// failover would otherwise still be named by a node that has not heard
	// of it yet, and it accepts SSUBSCRIBE of its new master's slots, as a
	// replica).
	kickers map[string]bool
	down    error // why some channel is not subscribed; nil when all are
	lastErr error // the supervisor's last failure, for Add's error
	lostAny bool  // a connection or a channel was lost since the last count
}

// chanEntry is one channel of a subscription. Its fields are guarded by
// chanSub.mu.
type chanEntry struct {
	name   string
	slot   int
	worker int
	conn   *chanConn // where it is subscribed, or being subscribed; nil: nowhere
	// confirmed: the server confirmed the subscription on conn.
	confirmed bool
	// lost: it was confirmed, then its connection or its slot was lost;
	// its resubscription counts in Resubscribed.
	lost bool
	// failed: the server refused its first subscription (one subscribed
	// before is retried instead); Add again retries.
	failed error
	ready  chan struct{} // closed once confirmed or failed (or removed)

	calling bool          // the handler is running for it
	idle    chan struct{} // closed when that call returns, for Remove
}

// chanConn is one dedicated connection of a subscription.
type chanConn struct {
	key  string // master address, or ""
	dc   rueidis.DedicatedClient
	lost bool // guarded by chanSub.mu
}

// unsubRequest is the server side of one Remove.
type unsubRequest struct {
	byConn map[*chanConn][]*chanEntry
	done   chan error // one value once sent (or moot)
}

// delivery is a message on its way to a worker.
type delivery struct {
	e *chanEntry
	m backend.Message
}

var workerSeed = maphash.MakeSeed()

func (s *chanSub) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Pattern returns "": the subscription has exact channels only.
func (s *chanSub) Pattern() string { return "" }

// Resubscribed counts the times channels were subscribed again after
// their connection was lost or their slot moved to another master.
func (s *chanSub) Resubscribed() uint64 { return s.resubs.Load() }

// Channels counts the channels added and not removed.
func (s *chanSub) Channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.chans)
}

// Alive returns nil while every channel added is subscribed (or being
// subscribed for the first time), else why not.
func (s *chanSub) Alive() error {
	if s.life.Err() != nil {
		return errors.New("backend/rueidis: subscription closed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return fmt.Errorf("backend/rueidis: subscription down: %w", s.down)
	}
	return nil
}

// Close closes the subscription's connections (which unsubscribes them)
// and waits for the handler's last call. Do not call it from the handler.
func (s *chanSub) Close() error {
	s.stop()
	<-s.done
	return nil
}

// Add subscribes to channels and returns once the server confirmed each.
func (s *chanSub) Add(ctx context.Context, channels ...string) error {
	if err := s.usable(channels); err != nil {
		return err
	}
	s.mu.Lock()
	entries := make([]*chanEntry, 0, len(channels))
	for _, name := range channels {
		e := s.chans[name]
		switch {
		case e == nil:
			h := maphash.String(workerSeed, name)
			e = &chanEntry{name: name, slot: backend.KeySlot(name), worker: int(h % channelWorkers), ready: make(chan struct{})}
			s.chans[name] = e
			s.pending[e] = struct{}{}
		case e.failed != nil:
			e.failed = nil
			e.ready = make(chan struct{})
			s.pending[e] = struct{}{}
		}
		entries = append(entries, e)
	}
	s.mu.Unlock()
	s.notify()
	for _, e := range entries {
		s.mu.Lock()
		if s.chans[e.name] != e || e.confirmed { // removed meanwhile, or done
			s.mu.Unlock()
			continue
		}
		if e.failed != nil {
			err := e.failed
			s.mu.Unlock()
			return fmt.Errorf("backend/rueidis: subscribe %q: %w", e.name, err)
		}
		ready := e.ready
		s.mu.Unlock()
		select {
		case <-ready:
			s.mu.Lock()
			failed := s.chans[e.name] == e && e.failed != nil
			err := e.failed
			s.mu.Unlock()
			if failed {
				return fmt.Errorf("backend/rueidis: subscribe %q: %w", e.name, err)
			}
		case <-s.life.Done():
			return backend.ErrClosed
		case <-ctx.Done():
			return s.ctxErr(ctx)
		}
	}
	return nil
}

// Remove unsubscribes from channels: no handler call for them starts
// after it returns, and it waits for a call in progress. So do not Remove
// a channel from its own handler.
func (s *chanSub) Remove(ctx context.Context, channels ...string) error {
	if err := s.usable(channels); err != nil {
		return err
	}
	req := &unsubRequest{byConn: map[*chanConn][]*chanEntry{}, done: make(chan error, 1)}
	var calls []chan struct{}
	s.mu.Lock()
	for _, name := range channels {
		e := s.chans[name]
		if e == nil {
			continue
		}
		delete(s.chans, name)
		delete(s.pending, e)
		if e.failed == nil && !e.confirmed {
			close(e.ready) // an Add waiting for it returns
		}
		if e.conn != nil && !e.conn.lost {
			req.byConn[e.conn] = append(req.byConn[e.conn], e)
		}
		if e.calling {
			if e.idle == nil {
				e.idle = make(chan struct{})
			}
			calls = append(calls, e.idle)
		}
	}
	if len(req.byConn) > 0 {
		s.unsubs = append(s.unsubs, req)
	}
	s.mu.Unlock()
	for _, idle := range calls {
		select {
		case <-idle:
		case <-s.life.Done():
			return backend.ErrClosed
		case <-ctx.Done():
			return s.ctxErr(ctx)
		}
	}
	if len(req.byConn) == 0 {
		return nil
	}
	s.notify()
	select {
	case err := <-req.done:
		return err
	case <-s.life.Done():
		return backend.ErrClosed
	case <-ctx.Done():
		return s.ctxErr(ctx)
	}
}

// usable checks the state and the arguments of Add and Remove.
func (s *chanSub) usable(channels []string) error {
	if s.life.Err() != nil || s.c.closed.Load() {
		return backend.ErrClosed
	}
	if slices.Contains(channels, "") {
		return errors.New("backend/rueidis: a channel name must not be empty")
	}
	return nil
}

// ctxErr is the error of an Add or Remove whose ctx ended: with the
// supervisor's last failure, which is usually why it took so long.
func (s *chanSub) ctxErr(ctx context.Context) error {
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	err := s.c.wrapErr(ctx, ctx.Err())
	if last != nil {
		return fmt.Errorf("%w (last subscribe error: %v)", err, last)
	}
	return err
}

// work calls the handler for the channels hashed to this worker.
func (s *chanSub) work(w chan delivery) {
	for {
		select {
		case <-s.life.Done():
			return
		case d := <-w:
			s.mu.Lock()
			if s.chans[d.e.name] != d.e || s.life.Err() != nil { // removed, or closing
				s.mu.Unlock()
				continue
			}
			d.e.calling = true
			s.mu.Unlock()
			s.h(d.m)
			s.mu.Lock()
			d.e.calling = false
			if d.e.idle != nil {
				close(d.e.idle)
				d.e.idle = nil
			}
			s.mu.Unlock()
		}
	}
}

// connect opens a dedicated connection, to the master at key (perNode) or
// to the server, installs the hooks and checks that it answers pub/sub
// commands.
func (s *chanSub) connect(ctx context.Context, key string) (*chanConn, error) {
	var (
		dc  rueidis.DedicatedClient
		err error
	)
	if key == "" {
		dc, _, err = s.c.dedicate(ctx)
	} else {
		var node rueidis.Client
		if node, err = s.node(ctx, key); err == nil {
			dc, _, err = s.c.dedicateFrom(ctx, node)
		}
	}
	if err != nil {
		return nil, err
	}
	cc := &chanConn{key: key, dc: dc}
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		// Both run on the connection's reader goroutine: no commands here.
		OnMessage:      func(m rueidis.PubSubMessage) { s.onMessage(cc, m) },
		OnSubscription: func(ps rueidis.PubSubSubscription) { s.onSubscription(cc, ps) },
	})
	// An UNSUBSCRIBE of nothing is answered on the pub/sub connection
	// itself (with RESP2 rueidis runs pub/sub on a connection of its own).
	// SUNSUBSCRIBE tells a server without sharded pub/sub (Redis < 7, the
	// embedded server) at once.
	probe := dc.B().Unsubscribe().Build()
	if s.sharded {
		probe = dc.B().Sunsubscribe().Build()
	}
	if err := dc.Do(ctx, probe).Error(); err != nil {
		dc.Close()
		var rerr *rueidis.RedisError
		if s.sharded && errors.As(err, &rerr) && strings.Contains(strings.ToLower(rerr.Error()), "unknown command") {
			return nil, fmt.Errorf("backend/rueidis: the server has no sharded pub/sub (SSUBSCRIBE needs Redis 7 or later): %w", err)
		}
		return nil, s.c.wrapErr(ctx, err)
	}
	s.wg.Go(func() {
		select {
		case err := <-lost:
			s.connLost(cc, err)
		case <-s.life.Done():
		}
	})
	return cc, nil
}

// node returns rueidis's client for the master at addr. A master rueidis
// does not know yet (promoted by a failover) is learnt by sending it a
// command for a key of one of its slots: the MOVED answer that follows
// makes rueidis read the cluster's topology again.
func (s *chanSub) node(ctx context.Context, addr string) (rueidis.Client, error) {
	if n, ok := s.c.rc.Nodes()[addr]; ok {
		return n, nil
	}
	s.mu.Lock()
	var key string
	for e := range s.pending {
		if s.ownerLocked(e.slot) == addr {
			key = e.name
			break
		}
	}
	s.mu.Unlock()
	if key != "" {
		_ = s.c.rc.Do(ctx, s.c.rc.B().Exists().Key(key).Build()).Error()
		if n, ok := s.c.rc.Nodes()[addr]; ok {
			return n, nil
		}
	}
	return nil, fmt.Errorf("backend/rueidis: master %s is not in the client's topology yet", addr)
}

// onMessage queues m for the worker of its channel, if the channel is
// still wanted on this connection.
func (s *chanSub) onMessage(cc *chanConn, m rueidis.PubSubMessage) {
	s.mu.Lock()
	e := s.chans[m.Channel]
	ok := e != nil && e.conn == cc
	s.mu.Unlock()
	if !ok {
		return
	}
	select {
	case s.workers[e.worker] <- delivery{e, backend.Message{Channel: m.Channel, Payload: m.Message}}:
	case <-s.life.Done():
	}
}

// onSubscription sees the server's (un)subscribe confirmations, in the
// order of the connection. An unsubscribe of a channel that is still
// wanted and confirmed here was not asked for: Remove takes the channel
// out of chans first, and a channel removed then added again is not
// confirmed before its new subscribe, which the server answers after the
// old unsubscribe. So it is the server dropping a sharded channel whose
// slot moved: subscribe it again, wherever its slot now lives.
func (s *chanSub) onSubscription(cc *chanConn, ps rueidis.PubSubSubscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.chans[ps.Channel]
	if e == nil || e.conn != cc {
		return
	}
	switch ps.Kind {
	case "subscribe", "ssubscribe":
		if !e.confirmed {
			e.confirmed = true
			close(e.ready)
		}
	case "unsubscribe", "sunsubscribe":
		if !e.confirmed {
			return
		}
		e.confirmed, e.lost, e.conn = false, true, nil
		e.ready = make(chan struct{})
		s.pending[e] = struct{}{}
		s.stale = true
		s.kickers[cc.key] = true
		s.lostAny = true
		if s.down == nil {
			s.down = fmt.Errorf("the server unsubscribed %q (its slot moved)", e.name)
		}
		s.notify()
	}
}

// connLost forgets a connection that failed: its channels wait for the
// supervisor to subscribe them again.
func (s *chanSub) connLost(cc *chanConn, err error) {
	cc.dc.Close()
	if s.life.Err() != nil {
		return
	}
	if err == nil {
		err = errors.New("connection closed")
	}
	s.mu.Lock()
	cc.lost = true
	if s.conns[cc.key] == cc {
		delete(s.conns, cc.key)
	}
	lostChannels := false
	for _, e := range s.chans {
		if e.conn != cc {
			continue
		}
		e.conn = nil
		if e.confirmed {
			e.confirmed, e.lost = false, true
			e.ready = make(chan struct{})
			lostChannels = true
		}
		s.pending[e] = struct{}{}
	}
	report := lostChannels || !s.perNode
	if report {
		s.lostAny = true
		s.down = err
	}
	if s.perNode {
		s.stale = true // a master that went away has handed its slots on
	}
	s.mu.Unlock()
	if report {
		s.c.log.Warn("backend/rueidis: channel subscription lost its connection; resubscribing", "node", nodeName(cc.key), "err", err)
	}
	s.notify()
}

// ownerLocked returns the master serving slot, "" when unknown.
func (s *chanSub) ownerLocked(slot int) string {
	if addr, ok := s.moved[slot]; ok {
		return addr
	}
	return ownerOf(s.slots, slot)
}

// supervise sends the subscribe and unsubscribe commands of the
// subscription until it is closed, retrying with backoff what failed.
func (s *chanSub) supervise() {
	defer s.c.untrack(s)
	defer close(s.done)
	defer s.wg.Wait()
	defer func() {
		s.mu.Lock()
		conns := make([]*chanConn, 0, len(s.conns))
		for _, cc := range s.conns {
			conns = append(conns, cc)
		}
		s.conns = map[string]*chanConn{}
		s.mu.Unlock()
		for _, cc := range conns {
			cc.dc.Close()
		}
	}()
	delay := resubscribeMin
	var retry <-chan time.Time
	for {
		select {
		case <-s.life.Done():
			return
		case <-s.wake:
		case <-retry:
		}
		retry = nil
		if err := s.round(); err != nil {
			if s.life.Err() != nil {
				return
			}
			s.c.log.Debug("backend/rueidis: channel subscription: retrying", "err", err, "in", delay)
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			retry = time.After(delay)
			delay = min(2*delay, resubscribeMax)
		} else {
			delay = resubscribeMin
			s.mu.Lock()
			s.lastErr = nil
			s.mu.Unlock()
		}
	}
}

// round sends what is pending: the unsubscribes of Removes, then the
// subscribes of new channels and of channels whose connection or slot was
// lost. It returns an error when something failed and is left to retry;
// channels added during the round are not one: their Add woke the
// supervisor for another round.
func (s *chanSub) round() error {
	ctx, cancel := context.WithTimeout(s.life, resubscribeTimeout)
	defer cancel()
	var errs []error
	if err := s.refreshSlots(ctx); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.openConns(ctx)...)
	batches, unplaced := s.claim()
	if unplaced > 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("backend/rueidis: %d channels have no master to subscribe on yet", unplaced))
	}
	errs = append(errs, s.sendAll(ctx, batches)...)

	// Count a recovery once nothing lost is left.
	s.mu.Lock()
	defer s.mu.Unlock()
	recovering := !s.perNode && s.conns[""] == nil
	for e := range s.pending {
		if recovering {
			break
		}
		recovering = e.lost
	}
	if !recovering {
		clear(s.kickers) // every channel they dropped is subscribed again
		if s.lostAny {
			s.lostAny = false
			s.down = nil
			s.resubs.Add(1)
			s.c.log.Info("backend/rueidis: channel subscription restored")
		}
	}
	if s.perNode && len(errs) > 0 {
		// A master that cannot be reached may have been replaced: read
		// the slot map again before the retry.
		s.stale = true
	}
	return errors.Join(errs...)
}

// refreshSlots reads the cluster's slot map again when it is stale and
// channels wait for it, and closes the connections to nodes that no longer
// serve any slot (a master demoted by a failover): they hold nothing of
// ours any more, and keeping them would keep one per former master.
func (s *chanSub) refreshSlots(ctx context.Context) error {
	s.mu.Lock()
	refresh := s.perNode && (s.stale || s.slots == nil) && len(s.pending) > 0
	prefer := maps.Clone(s.kickers)
	s.mu.Unlock()
	if !refresh {
		return nil
	}
	ranges, err := s.c.clusterSlots(ctx, s.c.rc.Nodes(), prefer)
	if err != nil {
		return err
	}
	owners := map[string]bool{}
	for _, r := range ranges {
		owners[r.addr] = true
	}
	var retired []*chanConn
	s.mu.Lock()
	s.slots, s.stale = ranges, false
	clear(s.moved)
	for key, cc := range s.conns {
		if !owners[key] {
			delete(s.conns, key)
			cc.lost = true // closing it drops its subscriptions
			retired = append(retired, cc)
		}
	}
	s.mu.Unlock()
	for _, cc := range retired {
		cc.dc.Close() // its watcher hands back whatever it still held
	}
	return nil
}

// openConns opens the connections the pending channels need (and the one
// connection of a subscription that is not per node, even without
// channels, so that Alive tells a server that went away).
func (s *chanSub) openConns(ctx context.Context) []error {
	s.mu.Lock()
	need := map[string]bool{}
	if !s.perNode {
		need[""] = true
	} else {
		for e := range s.pending {
			if addr := s.ownerLocked(e.slot); addr != "" {
				need[addr] = true
			}
		}
	}
	for key := range need {
		if s.conns[key] != nil {
			delete(need, key)
		}
	}
	s.mu.Unlock()
	var errs []error
	for key := range need {
		cc, err := s.connect(ctx, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		s.conns[key] = cc
		s.mu.Unlock()
	}
	return errs
}

// batch is the work of a round on one connection.
type batch struct {
	unsubs []*chanEntry
	reqs   []*unsubRequest // the Removes of unsubs
	subs   []*chanEntry
}

// claim takes the round's work: the pending unsubscribes, and each pending
// channel whose connection is open, tied to it before its command is sent
// so that its confirmation and messages are taken. A Remove whose
// connections are all gone (and its subscriptions with them) is done.
// unplaced counts the channels whose slot no master serves.
func (s *chanSub) claim() (batches map[*chanConn]*batch, unplaced int) {
	batches = map[*chanConn]*batch{}
	get := func(cc *chanConn) *batch {
		b := batches[cc]
		if b == nil {
			b = &batch{}
			batches[cc] = b
		}
		return b
	}
	var moot []*unsubRequest
	s.mu.Lock()
	for _, r := range s.unsubs {
		sent := false
		for cc, es := range r.byConn {
			if !cc.lost {
				b := get(cc)
				b.unsubs = append(b.unsubs, es...)
				b.reqs = append(b.reqs, r)
				sent = true
			}
		}
		if !sent {
			moot = append(moot, r)
		}
	}
	s.unsubs = nil
	for e := range s.pending {
		key := ""
		if s.perNode {
			if key = s.ownerLocked(e.slot); key == "" {
				unplaced++
				continue
			}
		}
		cc := s.conns[key]
		if cc == nil {
			// Its connection failed (the round reports that), or it was
			// added during the round.
			continue
		}
		delete(s.pending, e)
		e.conn = cc
		b := get(cc)
		b.subs = append(b.subs, e)
	}
	s.mu.Unlock()
	for _, r := range moot {
		r.done <- nil
	}
	return batches, unplaced
}

// sendAll sends the batches, every connection at once, and answers their
// Removes.
func (s *chanSub) sendAll(ctx context.Context, batches map[*chanConn]*batch) []error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		reqErr = map[*unsubRequest]error{}
	)
	for cc, b := range batches {
		wg.Go(func() {
			uerr, serr := s.send(ctx, cc, b.unsubs, b.subs)
			mu.Lock()
			defer mu.Unlock()
			for _, r := range b.reqs {
				if uerr != nil && reqErr[r] == nil {
					reqErr[r] = uerr
				}
			}
			for _, err := range []error{uerr, serr} {
				if err != nil {
					errs = append(errs, err)
				}
			}
		})
	}
	wg.Wait()
	answered := map[*unsubRequest]bool{}
	for _, b := range batches {
		for _, r := range b.reqs {
			if !answered[r] {
				answered[r] = true
				r.done <- reqErr[r]
			}
		}
	}
	return errs
}

// send pipelines, on one connection, the unsubscribes and then the
// subscribes of a round, in commands of at most channelBatch channels of
// one slot (sharded on a cluster: the server refuses a command spanning
// slots). A channel whose subscribe failed goes back to pending, or is
// marked failed when the server refuses it for good and it was never
// subscribed (its Add reports the refusal).
func (s *chanSub) send(ctx context.Context, cc *chanConn, unsubs, subs []*chanEntry) (uerr, serr error) {
	var cmds []rueidis.Completed
	var groups [][]*chanEntry // the entries of each subscribe command
	b := cc.dc.B()
	for _, g := range s.group(unsubs) {
		names := namesOf(g)
		if s.sharded {
			cmds = append(cmds, b.Sunsubscribe().Channel(names...).Build())
		} else {
			cmds = append(cmds, b.Unsubscribe().Channel(names...).Build())
		}
	}
	nUnsub := len(cmds)
	for _, g := range s.group(subs) {
		names := namesOf(g)
		if s.sharded {
			cmds = append(cmds, b.Ssubscribe().Channel(names...).Build())
		} else {
			cmds = append(cmds, b.Subscribe().Channel(names...).Build())
		}
		groups = append(groups, g)
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	results := cc.dc.DoMulti(ctx, cmds...)
	var broken bool
	for _, r := range results[:nUnsub] {
		if err := r.Error(); err != nil {
			uerr = fmt.Errorf("backend/rueidis: unsubscribe on %s: %w", nodeName(cc.key), err)
			broken = broken || r.NonRedisError() != nil
		}
	}
	var errs []error
	s.mu.Lock()
	for i, r := range results[nUnsub:] {
		err := r.Error()
		if err == nil {
			for _, e := range groups[i] {
				if s.chans[e.name] == e && e.conn == cc {
					e.lost = false
				}
			}
			continue
		}
		var rerr *rueidis.RedisError
		isRedis := errors.As(err, &rerr)
		permanent := isRedis && !retryable(rerr)
		if !isRedis {
			broken = true
		}
		if isRedis {
			if addr, ok := rerr.IsMoved(); ok && len(groups[i]) > 0 {
				s.moved[groups[i][0].slot] = addr
				s.stale = true
			}
		}
		for _, e := range groups[i] {
			if s.chans[e.name] != e || e.conn != cc || e.confirmed {
				continue
			}
			e.conn = nil
			switch {
			case e.lost:
				// Subscribed before: its Add returned long ago and nobody
				// will Add it again, so however final the refusal looks
				// (an ACL, a password), retry it until the server takes
				// it, and stay down meanwhile, saying why. Marked failed,
				// it would leave pending, and the round would count the
				// subscription restored.
				s.pending[e] = struct{}{}
				if isRedis {
					s.down = fmt.Errorf("resubscribing %q: %w", e.name, err)
				}
			case permanent:
				e.failed = err
				close(e.ready)
			default:
				s.pending[e] = struct{}{}
			}
		}
		errs = append(errs, fmt.Errorf("backend/rueidis: subscribe on %s: %w", nodeName(cc.key), err))
	}
	s.mu.Unlock()
	if broken {
		cc.dc.Close() // its watcher sends everything of it back to pending
	}
	if len(errs) > 0 {
		serr = errors.Join(errs...)
	}
	return uerr, serr
}

// group splits entries into commands: by slot when sharded, at most
// channelBatch each.
func (s *chanSub) group(entries []*chanEntry) [][]*chanEntry {
	if len(entries) == 0 {
		return nil
	}
	var out [][]*chanEntry
	if !s.sharded {
		for c := range slices.Chunk(entries, channelBatch) {
			out = append(out, c)
		}
		return out
	}
	bySlot := map[int][]*chanEntry{}
	for _, e := range entries {
		bySlot[e.slot] = append(bySlot[e.slot], e)
	}
	for _, es := range bySlot {
		for c := range slices.Chunk(es, channelBatch) {
			out = append(out, c)
		}
	}
	return out
}

func namesOf(es []*chanEntry) []string {
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.name
	}
	return names
}

func nodeName(key string) string {
	if key == "" {
		return "the server"
	}
	return key
}

// retryable tells a refusal that goes away (the slot is elsewhere or
// moving, the cluster or the server is not ready) from one that does not
// (no such command, no permission).
func retryable(err *rueidis.RedisError) bool {
	if _, ok := err.IsRedirect(); ok {
		return true
	}
	return err.IsTryAgain() || err.IsClusterDown() || err.IsLoading() || strings.HasPrefix(err.Error(), "MASTERDOWN")
}
