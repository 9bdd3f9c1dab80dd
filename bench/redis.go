package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	rr "github.com/redis/rueidis"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.Open selects rueidis or goredis by name
)

// Target is the Redis the scenarios run against: a standalone server given
// by address or by URL.
type Target struct {
	Addrs []string // host:port; the first is the one measured
	URL   string   // redis://… instead of Addrs
	// Direct is the server itself when Addrs reach it through a
	// DelayProxy: the probe reads the server's CPU there, so measuring
	// adds no delay and no traffic to the proxy.
	Direct string
}

// TargetFromEnv parses a REDIS_URL value the way the server does: a
// redis:// URL, or comma-separated host:port addresses.
func TargetFromEnv(v string) Target {
	v = strings.TrimSpace(v)
	if strings.Contains(v, "://") {
		return Target{URL: v}
	}
	var t Target
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			t.Addrs = append(t.Addrs, a)
		}
	}
	return t
}

// String names the target for reports (without credentials).
func (t Target) String() string {
	if t.URL != "" {
		if o, err := redis.ParseURL(t.URL); err == nil {
			return o.Addr
		}
		return "REDIS_URL"
	}
	return strings.Join(t.Addrs, ",")
}

// Config is a presence.Config for backend on this target; the caller adds
// strategies.
func (t Target) Config(backendName string) presence.Config {
	return presence.Config{Backend: backendName, Addrs: t.Addrs, RedisURL: t.URL}
}

// Connect opens a backend.Client of the named adapter.
func (t Target) Connect(ctx context.Context, backendName string) (backend.Client, error) {
	return presence.NewClient(ctx, t.Config(backendName))
}

// rueidisOption is a raw rueidis option for the ceiling, with client-side
// caching off (nothing here reads through the cache).
func (t Target) rueidisOption() (rr.ClientOption, error) {
	var o rr.ClientOption
	if t.URL != "" {
		var err error
		if o, err = rr.ParseURL(t.URL); err != nil {
			return o, err
		}
	}
	o.InitAddress = append(o.InitAddress, t.Addrs...)
	o.DisableCache = true
	return o, nil
}

// Probe reads the server's CPU time and version with INFO on a connection
// of its own, so measuring does not queue behind the load.
type Probe struct {
	rdb *redis.Client
}

// NewProbe connects a probe to t's first address.
func NewProbe(t Target) (*Probe, error) {
	var o *redis.Options
	if t.URL != "" {
		var err error
		if o, err = redis.ParseURL(t.URL); err != nil {
			return nil, err
		}
	} else {
		if len(t.Addrs) == 0 {
			return nil, errors.New("bench: target has no address")
		}
		o = &redis.Options{Addr: t.Addrs[0]}
		if t.Direct != "" {
			o.Addr = t.Direct
		}
	}
	o.PoolSize = 1
	o.Protocol = 2
	return &Probe{rdb: redis.NewClient(o)}, nil
}

// Close closes the probe's connection.
func (p *Probe) Close() error { return p.rdb.Close() }

// CPU returns used_cpu_sys + used_cpu_user of the server, in seconds.
func (p *Probe) CPU(ctx context.Context) (float64, error) {
	m, err := p.info(ctx, "cpu")
	if err != nil {
		return 0, err
	}
	sys, err1 := strconv.ParseFloat(m["used_cpu_sys"], 64)
	user, err2 := strconv.ParseFloat(m["used_cpu_user"], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: INFO cpu: %v", m)
	}
	return sys + user, nil
}

// Version returns redis_version.
func (p *Probe) Version(ctx context.Context) string {
	m, err := p.info(ctx, "server")
	if err != nil {
		return "unknown"
	}
	return m["redis_version"]
}

func (p *Probe) info(ctx context.Context, section string) (map[string]string, error) {
	s, err := p.rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	return parseInfo(s), nil
}

// parseInfo reads the "key:value" lines of INFO or CLUSTER INFO.
func parseInfo(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}
