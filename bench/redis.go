package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	rr "github.com/redis/rueidis"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
)

// Target is the Redis the scenarios run against: a standalone server given
// by address or by URL.
type Target struct {
	Addrs []string // host:port; the first is the one measured
	URL   string   // redis://… instead of Addrs
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
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// Server is a redis-server this process started: private directory, free
// loopback port, no persistence. Stop kills it and removes the directory.
type Server struct {
	Addr string
	Pid  int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartServer starts redis-server from PATH on a free 127.0.0.1 port in a
// new temporary directory, and waits until it answers PING.
func StartServer(ctx context.Context) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("bench: redis-server not on PATH (install Redis 7, or set REDIS_URL): %w", err)
	}
	dir, err := os.MkdirTemp("", "presence-bench-redis-")
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		s, err := startServerOnce(ctx, bin, dir)
		if err == nil {
			return s, nil
		}
		if attempt == 2 || !strings.Contains(err.Error(), "in use") {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func startServerOnce(ctx context.Context, bin, dir string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := strings.Join([]string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		`save ""`,
		"appendonly no",
		"dir " + strconv.Quote(dir),
		`logfile ""`,
		"daemonize no",
	}, "\n") + "\n"
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "redis.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, confPath)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start redis-server: %w", err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Pid: cmd.Process.Pid, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(s.Addr) == nil {
			return s, nil
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("bench: redis-server exited: %s", b)
		case <-ctx.Done():
			s.kill()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return nil, errors.New("bench: redis-server did not answer PING within 10s")
		}
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func (s *Server) kill() {
	s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

// Target is the server as a Target.
func (s *Server) Target() Target { return Target{Addrs: []string{s.Addr}} }

// Stop kills the server, waits for it and removes its directory.
// Idempotent.
func (s *Server) Stop() {
	if s == nil {
		return
	}
	s.kill()
	os.RemoveAll(s.dir)
}
