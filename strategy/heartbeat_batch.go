package strategy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
)

func init() {
	Heartbeats.Register("batch", []string{"window", "max", "timeout"}, func(env Env, p *Params) (Heartbeat, error) {
		window, err := p.Duration("window", 50*time.Millisecond)
		if err != nil {
			return nil, err
		}
		max, err := p.Int("max", 100, 1, 100000)
		if err != nil {
			return nil, err
		}
		timeout, err := p.Duration("timeout", 5*time.Second)
		if err != nil {
			return nil, err
		}
		return NewBatcher(env, window, max, timeout), nil
	})
}

// Batcher coalesces heartbeats arriving within a window (or until max are
// waiting) and sends them as one pipeline of heartbeat.lua calls: one round
// trip per batch, with the same fencing and events as the lua strategy,
// because every heartbeat is still its own atomic script. Every caller gets
// its own answer, including two heartbeats of one conn in one batch, which
// run in arrival order.
type Batcher struct {
	env     Env
	evals   *evalBuilder
	window  time.Duration
	max     int
	timeout time.Duration // bounds one batch's round trip

	mu     sync.Mutex
	buf    []*pending
	timer  *time.Timer
	closed bool

	size     atomic.Int64
	inflight sync.WaitGroup
}

var (
	_ Heartbeat   = (*Batcher)(nil)
	_ BufferSizer = (*Batcher)(nil)
)

type pending struct {
	ctx  context.Context
	req  HeartbeatRequest
	done chan batchResult // buffered: the flusher never blocks on a caller
}

type batchResult struct {
	res HeartbeatResult
	err error
}

// NewBatcher returns a batcher; the "batch" spec builds one.
func NewBatcher(env Env, window time.Duration, max int, timeout time.Duration) *Batcher {
	return &Batcher{env: env, evals: newEvalBuilder(env), window: window, max: max, timeout: timeout}
}

// BufferSize is the number of heartbeats waiting for the next flush.
func (b *Batcher) BufferSize() int { return int(b.size.Load()) }

// Heartbeat queues req and waits for its batch. If ctx ends first the
// heartbeat may or may not be applied.
func (b *Batcher) Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResult, error) {
	p := &pending{ctx: ctx, req: req, done: make(chan batchResult, 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return HeartbeatResult{}, core.ErrClosed
	}
	b.buf = append(b.buf, p)
	b.size.Add(1)
	switch {
	case len(b.buf) >= b.max:
		batch := b.take()
		b.inflight.Add(1)
		b.mu.Unlock()
		go b.flush(batch)
	case len(b.buf) == 1:
		b.timer = time.AfterFunc(b.window, b.onTimer)
		b.mu.Unlock()
	default:
		b.mu.Unlock()
	}
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		return HeartbeatResult{}, ctx.Err()
	}
}

// take empties the buffer; b.mu must be held.
func (b *Batcher) take() []*pending {
	batch := b.buf
	b.buf = nil
	b.size.Add(-int64(len(batch)))
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	return batch
}

func (b *Batcher) onTimer() {
	b.mu.Lock()
	if b.closed || len(b.buf) == 0 {
		b.mu.Unlock()
		return
	}
	batch := b.take()
	b.inflight.Add(1)
	b.mu.Unlock()
	b.flush(batch)
}

func (b *Batcher) flush(batch []*pending) {
	defer b.inflight.Done()
	live := batch[:0:0]
	for _, p := range batch {
		if p.ctx.Err() != nil {
			p.done <- batchResult{err: p.ctx.Err()} // not sent: the caller gave up
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	evals := make([]backend.Eval, len(live))
	for i, p := range live {
		evals[i] = b.evals.call(p.req).Eval()
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	replies, err := b.env.Scripts.RunMany(ctx, evals...)
	cancel()
	if h := b.env.Hooks.BatchFlushed; h != nil {
		h(len(live))
	}
	for i, p := range live {
		if err != nil {
			p.done <- batchResult{err: err}
			continue
		}
		res, perr := ParseHeartbeatReply(replies[i])
		p.done <- batchResult{res: res, err: perr}
	}
}

// Flush sends whatever is buffered now and waits for every batch in flight;
// a graceful shutdown calls it before Close.
func (b *Batcher) Flush(ctx context.Context) error {
	b.mu.Lock()
	if len(b.buf) > 0 && !b.closed {
		batch := b.take()
		b.inflight.Add(1)
		go b.flush(batch)
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() { b.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close fails buffered heartbeats with ErrClosed, waits for batches already
// sent, and makes later calls fail with ErrClosed. Idempotent.
func (b *Batcher) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	batch := b.take()
	b.mu.Unlock()
	for _, p := range batch {
		p.done <- batchResult{err: core.ErrClosed}
	}
	b.inflight.Wait()
	return nil
}
