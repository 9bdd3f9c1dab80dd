package goredis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// go-redis prints through one process-wide logger (redis.SetLogger), to
// stderr as plain text by default: under LOG_FORMAT=json that breaks the
// stream, ignores the level, and during an outage it prints a line per
// failed dial. The first New with Options.Logger installs logRouter as that
// logger, once per process (an application calling redis.SetLogger after
// it replaces it).
//
// Which client a line is about: go-redis passes the context of the call
// that caused it when it has one (a failed dial inside a command), and
// every call of a Client carries its sink in the context, so such lines go
// to that Client's logger only. Lines logged with a bare context
// (background pool maintenance, topology reloads) cannot be attributed;
// they go to every live Client's logger, once per distinct *slog.Logger,
// so several services with different loggers each see them rather than one
// of them at random. With no live Client they go to slog.Default().
var router = &logRouter{sinks: map[*slog.Logger]*logSink{}}

var installRouter sync.Once

// repeatInterval is how often a repeated go-redis line is summarised.
// Var for tests.
var repeatInterval = 10 * time.Second

type sinkKey struct{}

type logRouter struct {
	mu    sync.Mutex
	sinks map[*slog.Logger]*logSink
}

// acquire returns the sink of log, shared by every Client with that logger.
func (r *logRouter) acquire(log *slog.Logger) *logSink {
	installRouter.Do(func() { redis.SetLogger(r) })
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sinks[log]
	if s == nil {
		s = newLogSink(log, repeatInterval)
		r.sinks[log] = s
	}
	s.refs++
	return s
}

// release drops a Client's reference; the last one reports what is still
// counted, so a count is not lost at shutdown.
func (r *logRouter) release(s *logSink) {
	r.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(r.sinks, s.log)
	}
	r.mu.Unlock()
	if last {
		s.close()
	}
}

// Printf implements go-redis's logging interface.
func (r *logRouter) Printf(ctx context.Context, format string, v ...any) {
	if ctx != nil {
		if s, ok := ctx.Value(sinkKey{}).(*logSink); ok {
			s.note(format, v)
			return
		}
	}
	r.mu.Lock()
	sinks := make([]*logSink, 0, len(r.sinks))
	for _, s := range r.sinks {
		sinks = append(sinks, s)
	}
	r.mu.Unlock()
	if len(sinks) == 0 {
		slog.Default().Warn(goRedisMsg(format, v), "source", "go-redis")
		return
	}
	for _, s := range sinks {
		s.note(format, v)
	}
}

func goRedisMsg(format string, v []any) string {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	// go-redis prefixes most lines with "redis: "; say which library it is.
	return "go-redis: " + strings.TrimPrefix(msg, "redis: ")
}

// logSink writes go-redis lines to one logger at warn level (go-redis
// prints only when something failed or changed under it), at most one
// line per kind (the format string, which is what a repeated failure
// shares) per interval: the first at once, then a count when the interval
// ends if more came.
type logSink struct {
	log   *slog.Logger
	every time.Duration
	refs  int // guarded by router.mu

	mu     sync.Mutex
	closed bool
	kinds  map[string]*repeats
}

type repeats struct {
	n     int
	last  string
	timer *time.Timer
}

func newLogSink(log *slog.Logger, every time.Duration) *logSink {
	return &logSink{log: log, every: every, kinds: map[string]*repeats{}}
}

func (s *logSink) note(format string, v []any) {
	if !s.log.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	msg := goRedisMsg(format, v)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if k, ok := s.kinds[format]; ok {
		k.n++
		k.last = msg
		s.mu.Unlock()
		return
	}
	s.kinds[format] = &repeats{timer: time.AfterFunc(s.every, func() { s.flush(format) })}
	s.mu.Unlock()
	s.log.Warn(msg, "source", "go-redis",
		"note", "repeats of this line are counted and logged once per "+s.every.String())
}

// flush ends the interval of one kind: its count, if any, is logged and a
// new interval starts; a quiet interval forgets the kind, so its next line
// is logged at once again.
func (s *logSink) flush(format string) {
	s.mu.Lock()
	k, ok := s.kinds[format]
	if !ok || s.closed {
		s.mu.Unlock()
		return
	}
	n, last := k.n, k.last
	if n == 0 {
		delete(s.kinds, format)
	} else {
		k.n = 0
		k.timer = time.AfterFunc(s.every, func() { s.flush(format) })
	}
	s.mu.Unlock()
	if n > 0 {
		s.log.Warn("go-redis: a line repeated", "source", "go-redis", "count", n,
			"interval", s.every.String(), "last", last)
	}
}

func (s *logSink) close() {
	s.mu.Lock()
	s.closed = true
	kinds := s.kinds
	s.kinds = nil
	s.mu.Unlock()
	for _, k := range kinds {
		k.timer.Stop()
		if k.n > 0 {
			s.log.Warn("go-redis: a line repeated", "source", "go-redis", "count", k.n,
				"interval", s.every.String(), "last", k.last)
		}
	}
}

// tag makes go-redis lines logged during a call of c go to c's logger.
func (c *Client) tag(ctx context.Context) context.Context {
	if c.sink == nil {
		return ctx
	}
	return context.WithValue(ctx, sinkKey{}, c.sink)
}
