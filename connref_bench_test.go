//go:build unix

package presence_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend/rueidis"
	"github.com/realtime-message/presence/internal/redistest"
)

// BenchmarkHeartbeatRef compares Heartbeat with HeartbeatConn on one
// conn, one call at a time. Wall time is mostly the round trip; cpu-ns/op
// is this process's CPU (rueidis's goroutines included, redis-server not),
// what the library's own work costs.
func BenchmarkHeartbeatRef(b *testing.B) {
	srv := redistest.Standalone(b)
	ctx := ctxT(b)
	c, err := rueidis.New(ctx, rueidis.Options{Addrs: srv.Addrs})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s := newService(b, c, presence.Config{})
	j, err := s.Join(ctx, "r", "c", "u", nil)
	if err != nil {
		b.Fatal(err)
	}
	p := presence.HeartbeatParams{Epoch: &j.Epoch}
	b.Run("Heartbeat", func(b *testing.B) {
		b.ReportAllocs()
		cpu := selfCPU()
		for b.Loop() {
			if _, err := s.Heartbeat(ctx, "r", "c", p); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(selfCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("HeartbeatConn", func(b *testing.B) {
		ref, err := s.ConnRef("r", "c")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := selfCPU()
		for b.Loop() {
			if _, err := s.HeartbeatConn(ctx, ref, p); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(selfCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
