package main

import (
	"fmt"
	"time"

	"github.com/realtime-message/presence/bench"
)

// cpuMeter samples the CPU time of the server and redis-server (when their
// pids are given) and of this process.
type cpuMeter struct{ server, redis int }

type cpuSnap struct {
	at                       time.Time
	server, redis, self, sys float64
	serverOK, redisOK, sysOK bool
}

func newCPU(cfg Config) *cpuMeter { return &cpuMeter{server: cfg.ServerPID, redis: cfg.RedisPID} }

func (m *cpuMeter) snap() cpuSnap {
	s := cpuSnap{at: time.Now(), self: bench.SelfCPU()}
	if v, err := bench.SystemBusy(); err == nil {
		s.sys, s.sysOK = v, true
	}
	if m.server > 0 {
		v, err := bench.ProcessCPU(m.server)
		s.server, s.serverOK = v, err == nil
	}
	if m.redis > 0 {
		v, err := bench.ProcessCPU(m.redis)
		s.redis, s.redisOK = v, err == nil
	}
	return s
}

// describe is the interval report's CPU part.
func (m *cpuMeter) describe(a, b cpuSnap, acks int64) string {
	el := b.at.Sub(a.at).Seconds()
	if el <= 0 {
		return ""
	}
	out := ""
	if a.serverOK && b.serverOK {
		d := b.server - a.server
		out += fmt.Sprintf(" | server CPU %.0f%%", 100*d/el)
		if acks > 0 {
			out += fmt.Sprintf(" (%.1f ms/1k acks)", 1e6*d/float64(acks))
		}
	}
	if a.redisOK && b.redisOK {
		out += fmt.Sprintf(" | redis CPU %.0f%%", 100*(b.redis-a.redis)/el)
	}
	out += fmt.Sprintf(" | loadtest CPU %.0f%%", 100*(b.self-a.self)/el)
	if o, ok := other(a, b); ok {
		out += fmt.Sprintf(" | others %.0f%%", 100*o/el)
	}
	return out
}

// other is the CPU time the rest of the machine used between a and b:
// everything but the server, redis-server and this process.
func other(a, b cpuSnap) (float64, bool) {
	if !a.sysOK || !b.sysOK {
		return 0, false
	}
	o := (b.sys - a.sys) - (b.self - a.self)
	if a.serverOK && b.serverOK {
		o -= b.server - a.server
	}
	if a.redisOK && b.redisOK {
		o -= b.redis - a.redis
	}
	return max(o, 0), true
}

// fill sets the summary's CPU figures over the window a..b.
func (m *cpuMeter) fill(s *Summary, a, b cpuSnap, acks int64) {
	el := b.at.Sub(a.at).Seconds()
	if el <= 0 {
		return
	}
	if a.serverOK && b.serverOK {
		d := b.server - a.server
		s.ServerCPUPct = 100 * d / el
		if acks > 0 {
			s.ServerCPUMsPer1kAck = 1e6 * d / float64(acks)
		}
	}
	if a.redisOK && b.redisOK {
		s.RedisCPUPct = 100 * (b.redis - a.redis) / el
	}
	s.LoadtestCPUPct = 100 * (b.self - a.self) / el
	if o, ok := other(a, b); ok {
		s.OtherCPUPct = 100 * o / el
	}
}
