package socketio

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// failureLog logs failures of the server or Redis at most once per kind
// (message and event) per interval: the first of a kind at once, the
// rest as one line with their count when the interval ends. During an
// outage every event fails; one line each would bury everything else.
type failureLog struct {
	log   *slog.Logger
	every time.Duration

	mu    sync.Mutex
	kinds map[failureKey]*failureCount
}

type failureKey struct{ msg, event string }

type failureCount struct {
	n       int    // suppressed since the line logged
	lastErr string // the latest suppressed error
}

func newFailureLog(log *slog.Logger, every time.Duration) *failureLog {
	return &failureLog{log: log, every: every, kinds: map[failureKey]*failureCount{}}
}

func (f *failureLog) note(msg, event string, err error) {
	k := failureKey{msg, event}
	f.mu.Lock()
	if c, ok := f.kinds[k]; ok {
		c.n++
		c.lastErr = err.Error()
		f.mu.Unlock()
		return
	}
	f.kinds[k] = &failureCount{}
	f.mu.Unlock()
	f.log.Error("socketio: "+msg, "event", event, "err", err.Error(),
		"note", "further failures of this kind are counted and logged once per "+f.every.String())
}

// flush logs the counts of the interval that ended and starts a new one.
func (f *failureLog) flush() {
	f.mu.Lock()
	kinds := f.kinds
	f.kinds = map[failureKey]*failureCount{}
	f.mu.Unlock()
	for k, c := range kinds {
		if c.n > 0 {
			f.log.Error("socketio: "+k.msg+" (repeated)", "event", k.event, "count", c.n,
				"interval", f.every.String(), "lastErr", c.lastErr)
		}
	}
}

// run flushes every interval until ctx ends.
func (f *failureLog) run(ctx context.Context) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			f.flush()
			return
		case <-t.C:
			f.flush()
		}
	}
}
