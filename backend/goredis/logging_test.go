package goredis

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is a bytes.Buffer safe for the sink's timer goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		out = append(out, m)
	}
	return out
}

// TestLogRouter: a go-redis line about a call goes to the logger of the
// Client that made it, an unattributed one to every live Client's logger,
// and a kind of line repeated many times makes one line at once and one
// count per interval.
func TestLogRouter(t *testing.T) {
	var a, b syncBuf
	la := slog.New(slog.NewJSONHandler(&a, nil))
	lb := slog.New(slog.NewJSONHandler(&b, nil))
	sa := newLogSink(la, 200*time.Millisecond)
	sb := newLogSink(lb, 200*time.Millisecond)
	r := &logRouter{sinks: map[*slog.Logger]*logSink{la: sa, lb: sb}}
	ca := context.WithValue(context.Background(), sinkKey{}, sa)

	for i := range 100 {
		r.Printf(ca, "redis: connection pool: failed to dial after %d attempts: %v", 5, i)
	}
	r.Printf(context.Background(), "redis: pings to all nodes are failing")
	deadline := time.Now().Add(5 * time.Second)
	for len(a.lines()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	la1, lb1 := a.lines(), b.lines()
	if len(la1) != 3 {
		t.Fatalf("logger A got %d lines, want the first dial failure, the unattributed line and one count: %v", len(la1), la1)
	}
	if len(lb1) != 1 || !strings.Contains(lb1[0]["msg"].(string), "pings to all nodes") {
		t.Fatalf("logger B got %v, want only the unattributed line", lb1)
	}
	var count float64
	for _, l := range la1 {
		if l["level"] != "WARN" {
			t.Errorf("level %v", l["level"])
		}
		if c, ok := l["count"].(float64); ok {
			count = c
		}
	}
	if count != 99 {
		t.Fatalf("count %v, want 99: %v", count, la1)
	}
	// A quiet interval forgets the kind: the next line is logged at once.
	time.Sleep(500 * time.Millisecond)
	r.Printf(ca, "redis: connection pool: failed to dial after %d attempts: %v", 5, "again")
	if n := len(a.lines()); n != 4 {
		t.Fatalf("after a quiet interval: %d lines, want 4", n)
	}
	sa.close()
	sb.close()
}
