package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	_ "github.com/realtime-message/presence/backend/builtin" // presence.NewClient selects adapters by name
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/internal/siotest"
)

type healthz struct {
	code     int
	Status   string `json:"status"`
	Error    string `json:"error"`
	Degraded string `json:"degraded"`
	Checks   []struct {
		Name     string `json:"name"`
		OK       bool   `json:"ok"`
		Error    string `json:"error"`
		Degraded string `json:"degraded"`
	} `json:"checks"`
}

func getHealthz(t *testing.T, p *proc) healthz {
	t.Helper()
	code, body := get(t, p.url+"/healthz")
	var h healthz
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("/healthz body %q: %v", body, err)
	}
	h.code = code
	return h
}

// failing returns the names of the failed checks.
func (h healthz) failing() []string {
	var out []string
	for _, c := range h.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

func (h healthz) names() []string {
	var out []string
	for _, c := range h.Checks {
		out = append(out, c.Name)
	}
	return out
}

// waitHealthz polls /healthz until cond holds, failing the test after d.
func waitHealthz(t *testing.T, p *proc, d time.Duration, what string, cond func(healthz) bool) healthz {
	t.Helper()
	deadline := time.Now().Add(d)
	var h healthz
	for time.Now().Before(deadline) {
		if h = getHealthz(t, p); cond(h) {
			return h
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("/healthz: %s not seen within %v; last: %d %+v", what, d, h.code, h)
	return h
}

// redisDo sends one command to one node.
func redisDo(t *testing.T, addr string, args ...any) any {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Do(ctx, args...).Result()
	if err != nil {
		t.Fatalf("%v on %s: %v", args, addr, err)
	}
	return v
}

// killRedis SIGKILLs the redis-server at addr (started by redistest for
// this test): its pid comes from INFO.
func killRedis(t *testing.T, addr string) {
	t.Helper()
	info := redisDo(t, addr, "INFO", "server").(string)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no process_id in INFO of %s", addr)
}

// TestHealthz: on a standalone server /healthz PINGs it; on a cluster it
// PINGs every master and reads cluster_state; and it lists the event
// subscriptions of the node.
func TestHealthz(t *testing.T) {
	for _, srv := range redistest.Targets(t) {
		if srv.Embedded {
			continue // TestDefaultServer covers it
		}
		for _, b := range []string{"rueidis", "goredis"} {
			t.Run(srv.Name+"/"+b, func(t *testing.T) {
				t.Parallel()
				p := startServer(t, "REDIS_URL="+redisURL(srv), "PRESENCE_BACKEND="+b, "PRESENCE_KEY_PREFIX="+redistest.Prefix(t))
				h := getHealthz(t, p)
				if h.code != 200 || h.Status != "ok" || len(h.failing()) > 0 {
					t.Fatalf("/healthz: %d %+v", h.code, h)
				}
				var want []string
				for _, a := range srv.Addrs {
					want = append(want, "redis "+a)
					if srv.Cluster {
						want = append(want, "cluster_state "+a)
					}
				}
				got := h.names()
				for _, w := range want {
					if !slices.Contains(got, w) {
						t.Errorf("no check %q in %v", w, got)
					}
				}
				subs := 0
				for _, n := range got {
					if strings.HasPrefix(n, "subscription ") {
						subs++
					}
				}
				if subs == 0 {
					t.Errorf("no subscription check in %v", got)
				}
			})
		}
	}
}

// TestHealthzClusterDown: a master that loses the coverage of a slot
// reports cluster_state:fail (its clients get CLUSTERDOWN) while every
// node still answers PING, and a killed master does not answer: /healthz
// names each.
func TestHealthzClusterDown(t *testing.T) {
	srv := redistest.NewCluster(t)
	var procs []*proc
	for _, b := range []string{"rueidis", "goredis"} {
		procs = append(procs, startServer(t, "REDIS_URL="+redisURL(srv), "PRESENCE_BACKEND="+b))
	}
	for _, p := range procs {
		if h := getHealthz(t, p); h.code != 200 {
			t.Fatalf("before the faults: %d %+v", h.code, h)
		}
	}

	// Node 2 forgets its first slot: the cluster no longer covers it.
	first := 0
	for i := range 16384 {
		if srv.NodeForSlot(i) == 2 {
			first = i
			break
		}
	}
	redisDo(t, srv.Addrs[2], "CLUSTER", "DELSLOTS", strconv.Itoa(first))
	for _, p := range procs {
		h := waitHealthz(t, p, 15*time.Second, "cluster_state of node 2 failing", func(h healthz) bool {
			return h.code == 503 && slices.Contains(h.failing(), "cluster_state "+srv.Addrs[2])
		})
		if slices.Contains(h.failing(), "redis "+srv.Addrs[2]) {
			t.Errorf("node 2 answers PING, yet: %+v", h)
		}
	}

	killRedis(t, srv.Addrs[1])
	for _, p := range procs {
		waitHealthz(t, p, 15*time.Second, "master 1 unreachable", func(h healthz) bool {
			return h.code == 503 && slices.Contains(h.failing(), "redis "+srv.Addrs[1])
		})
	}
}

// TestHealthzSubscriptionLost: when the server drops the subscriptions'
// connections (CLIENT KILL TYPE pubsub) and refuses them again for a
// while, /healthz reports the subscriptions down, though Redis answers
// PING; once they are back, 200 again. In pattern mode the patterns are
// refused; in channels mode the rooms' channels, of a socket in a room.
func TestHealthzSubscriptionLost(t *testing.T) {
	for _, mode := range []string{"pattern", "channels"} {
		t.Run(mode, func(t *testing.T) { testHealthzSubscriptionLost(t, mode) })
	}
}

func testHealthzSubscriptionLost(t *testing.T, mode string) {
	srv := redistest.NewStandalone(t)
	if mode == "channels" {
		for _, b := range []string{"rueidis", "goredis"} {
			c, err := presence.NewClient(context.Background(), presence.Config{Backend: b, Addrs: srv.Addrs})
			if err != nil {
				t.Fatal(err)
			}
			_, ok := c.(backend.ChannelSubscriber)
			c.Close()
			if !ok {
				t.Skipf("%s does not implement backend.ChannelSubscriber", b)
			}
		}
	}
	var procs []*proc
	for _, b := range []string{"rueidis", "goredis"} {
		procs = append(procs, startServer(t, "REDIS_URL="+redisURL(srv), "PRESENCE_BACKEND="+b, "PRESENCE_PUBSUB="+mode))
	}
	for _, p := range procs {
		if h := getHealthz(t, p); h.code != 200 {
			t.Fatalf("before the fault: %d %+v", h.code, h)
		}
		if mode == "channels" {
			c := dial(t, p.url, siotest.Options{})
			mustOK(t, c, "presence:join", map[string]any{"roomId": "r", "userId": "u"})
		}
	}
	// Without this the subscriptions come back within milliseconds.
	cmd := map[string]string{"pattern": "psubscribe", "channels": "subscribe"}[mode]
	redisDo(t, srv.Addr(), "ACL", "SETUSER", "default", "-"+cmd)
	restored := false
	t.Cleanup(func() {
		if !restored {
			redisDo(t, srv.Addr(), "ACL", "SETUSER", "default", "+"+cmd)
		}
	})
	redisDo(t, srv.Addr(), "CLIENT", "KILL", "TYPE", "pubsub")
	for _, p := range procs {
		h := waitHealthz(t, p, 15*time.Second, "subscriptions down", func(h healthz) bool {
			if h.code != 503 {
				return false
			}
			for _, n := range h.failing() {
				if !strings.HasPrefix(n, "subscription ") {
					return false
				}
			}
			return true
		})
		if slices.Contains(h.failing(), "redis "+srv.Addr()) {
			t.Fatalf("Redis answers PING, yet: %+v", h)
		}
	}
	redisDo(t, srv.Addr(), "ACL", "SETUSER", "default", "+"+cmd)
	restored = true
	for _, p := range procs {
		waitHealthz(t, p, 20*time.Second, "200 after resubscribing", func(h healthz) bool { return h.code == 200 })
	}
	for _, p := range procs {
		_, body := get(t, p.url+"/metrics")
		if !regexp.MustCompile(`(?m)^presence_redis_pubsub_reconnects_total [1-9]`).MatchString(body) {
			t.Errorf("after the subscriptions came back: %s", grepLines(body, "pubsub_reconnects"))
		}
	}
}

// TestJSONLogsThroughOutage: with LOG_FORMAT=json, while Redis is down and
// a client keeps heartbeating, every stderr line is JSON at or above
// LOG_LEVEL, and repeated failures are aggregated rather than logged one
// per event or per dial. Both adapters: rueidis's subscription warnings and
// go-redis's own dial failures used to go to stderr in plain text.
func TestJSONLogsThroughOutage(t *testing.T) {
	for _, b := range []string{"rueidis", "goredis"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			srv := redistest.NewStandalone(t)
			p := startServer(t, "REDIS_URL="+redisURL(srv), "PRESENCE_BACKEND="+b,
				"LOG_FORMAT=json", "LOG_LEVEL=info", "PRESENCE_CALL_TIMEOUT_MS=300")
			c := dial(t, p.url, siotest.Options{})
			mustOK(t, c, "presence:join", map[string]any{"roomId": "r", "userId": "u"})
			before := len(p.logLines())

			killRedis(t, srv.Addr())
			const rate, outage = 10, 3 * time.Second
			var wg sync.WaitGroup
			tick := time.NewTicker(time.Second / rate)
			for range int(outage / (time.Second / rate)) {
				<-tick.C
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					c.CallMap(ctx, "presence:heartbeat") // fails: Redis is gone
				})
			}
			tick.Stop()
			wg.Wait()
			if h := getHealthz(t, p); h.code != 503 || !slices.Contains(h.failing(), "redis "+srv.Addr()) {
				t.Errorf("/healthz with Redis down: %d %+v", h.code, h)
			}
			p.stop(syscall.SIGTERM)

			lines := p.logLines()
			for _, line := range lines {
				var rec struct {
					Level string `json:"level"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Errorf("not JSON: %q", line)
					continue
				}
				if !slices.Contains([]string{"INFO", "WARN", "ERROR"}, rec.Level) {
					t.Errorf("below LOG_LEVEL=info: %q", line)
				}
			}
			during := len(lines) - before
			t.Logf("%d lines from the kill to the exit", during)
			if during >= 30 {
				t.Errorf("%d lines for %v of outage at %d heartbeats/s, want < 30:\n%s", during, outage, rate, strings.Join(lines[before:], "\n"))
			}
		})
	}
}

// TestHealthzNotifyReaperDegraded: a notify reaper that sweeps instead,
// on a server whose notify-keyspace-events lacks expired events, leaves
// the node serving (200) but "degraded", naming the setting; told to
// configure the server, it runs on notifications and the node is "ok".
func TestHealthzNotifyReaperDegraded(t *testing.T) {
	srv := redistest.NewStandalone(t) // its own server: notify-keyspace-events is ""
	env := []string{"REDIS_URL=" + redisURL(srv), "PRESENCE_KEY_PREFIX=" + redistest.Prefix(t), "PRESENCE_REAPER=notify"}
	reaper := func(h healthz) (string, bool) {
		for _, c := range h.Checks {
			if c.Name == "reaper" {
				return c.Degraded, c.OK
			}
		}
		return "", false
	}
	p := startServer(t, env...)
	h := waitHealthz(t, p, 20*time.Second, "the reaper check degraded", func(h healthz) bool {
		d, _ := reaper(h)
		return strings.Contains(d, "fell back")
	})
	if d, ok := reaper(h); h.code != 200 || h.Status != "degraded" || !ok || !strings.Contains(d, "notify-keyspace-events") || !strings.Contains(h.Degraded, "reaper: ") {
		t.Fatalf("/healthz: %d %+v: want 200, degraded, the reaper check passing and naming notify-keyspace-events", h.code, h)
	}
	p.stop(syscall.SIGTERM)

	p = startServer(t, append(env, "PRESENCE_REAPER_CONFIGURE_NOTIFY=1")...)
	h = waitHealthz(t, p, 20*time.Second, "the reaper check passing, not degraded", func(h healthz) bool {
		d, ok := reaper(h)
		return ok && d == ""
	})
	if h.code != 200 || h.Status != "ok" || h.Degraded != "" {
		t.Fatalf("/healthz: %d %+v: want 200 ok", h.code, h)
	}
}
