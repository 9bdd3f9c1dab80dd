package presence

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/realtime-message/presence/backend"
)

// HealthCheck is one check of Service.Health.
type HealthCheck struct {
	// Name says what was checked: "redis <addr>" (the node answers PING),
	// "cluster_state <addr>" (CLUSTER INFO on that master says
	// cluster_state:ok), "redis" (PING through a backend that cannot name
	// its nodes), "subscription <pattern>" (an event subscription of the
	// service is connected and subscribed; "subscription channels" for
	// per-channel ones, a Feed's) or "reaper" (with Config.Reaper
	// "notify": the notify reaper runs, subscribed on every master).
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Degraded, on a check that passed, says why the node runs below par
	// though it serves correctly: the notify reaper fell back to sweeping,
	// or lost a master's subscription (dead conns leave as late as the
	// sweep makes them, not at their expiry).
	Degraded string `json:"degraded,omitempty"`
}

// Health checks what a node needs to serve traffic: on a Redis Cluster
// every master answers PING and reports cluster_state:ok (a cluster that
// lost a master or the coverage of a slot refuses commands with
// CLUSTERDOWN while other masters still answer), on a standalone server
// PING; and every event subscription of the service is connected, since
// while one is not, this node's sockets miss the events of other nodes.
// ok is true when every check passed. ctx bounds the Redis round trips.
//
// A notify reaper that cannot run on notifications does not fail the
// node: presence stays correct, dead conns only leave as late as the
// sweep makes them, and failing every node of a deployment whose Redis
// refuses CONFIG would take all of them out of service. Its check passes
// with Degraded set instead.
func (s *Service) Health(ctx context.Context) (checks []HealthCheck, ok bool) {
	if err := s.checkOpen(); err != nil {
		return []HealthCheck{{Name: "service", Error: err.Error()}}, false
	}
	checks = s.redisHealth(ctx)
	checks = append(checks, s.subscriptionHealth()...)
	if s.notify != nil && s.cfg.ReaperInterval > 0 {
		checks = append(checks, reaperHealth(s.ReaperStatus(), s.cfg))
	}
	ok = true
	for _, c := range checks {
		ok = ok && c.OK
	}
	return checks, ok
}

func (s *Service) redisHealth(ctx context.Context) []HealthCheck {
	mr, ok := s.client.(backend.MasterRunner)
	if !ok {
		_, err := s.client.Do(ctx, backend.Cmd{Name: "PING"})
		return []HealthCheck{check("redis", err)}
	}
	cluster := mr.Cluster()
	cmds := []backend.Cmd{{Name: "PING"}}
	if cluster {
		cmds = append(cmds, backend.Cmd{Name: "CLUSTER", Args: []string{"INFO"}})
	}
	var out []HealthCheck
	err := mr.EachMaster(ctx, cmds, func(addr string, replies []backend.Reply, err error) {
		if err == nil && len(replies) != len(cmds) {
			err = fmt.Errorf("%d replies for %d commands", len(replies), len(cmds))
		}
		if err == nil {
			err = replies[0].Error()
		}
		out = append(out, check("redis "+addr, err))
		if !cluster {
			return
		}
		if err == nil {
			err = clusterStateOK(replies[1])
		}
		out = append(out, check("cluster_state "+addr, err))
	})
	if err != nil {
		out = append(out, check("redis masters", err))
	}
	return out
}

// clusterStateOK reads cluster_state from a CLUSTER INFO reply.
func clusterStateOK(r backend.Reply) error {
	info, err := r.AsString()
	if err != nil {
		return err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_state:"); ok {
			if v == "ok" {
				return nil
			}
			return fmt.Errorf("cluster_state:%s", v)
		}
	}
	return errors.New("CLUSTER INFO has no cluster_state")
}

func (s *Service) subscriptionHealth() []HealthCheck {
	s.mu.Lock()
	subs := make([]backend.Subscription, 0, len(s.subs))
	for sub := range s.subs {
		if sub.sub != nil {
			subs = append(subs, sub.sub)
		}
	}
	s.mu.Unlock()
	var out []HealthCheck
	for _, bs := range subs {
		st, ok := bs.(backend.SubscriptionState)
		if !ok {
			continue // nothing to ask: a backend of its own
		}
		name := st.Pattern()
		if name == "" {
			name = "channels" // a Feed's, or Subscribe's in sharded mode
		}
		out = append(out, check("subscription "+name, st.Alive()))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// reaperHealth is the notify reaper's check: it passes, degraded while the
// reaper sweeps instead or a master's events are not received.
func reaperHealth(st ReaperStatus, cfg Config) HealthCheck {
	c := HealthCheck{Name: "reaper", OK: true}
	switch {
	case st.Active == "starting":
		c.Degraded = "notify reaper: subscribing to expired-key events"
	case st.Active != ReaperNotify:
		c.Degraded = fmt.Sprintf("notify reaper fell back to sweeping every %v: %v", cfg.ReaperInterval, st.Reason)
	case st.Subscription != nil:
		c.Degraded = fmt.Sprintf("notify reaper: expired-key events lost (the sweep every %v covers them): %v", cfg.ReaperBackstopInterval, st.Subscription)
	}
	return c
}

func check(name string, err error) HealthCheck {
	if err != nil {
		return HealthCheck{Name: name, Error: err.Error()}
	}
	return HealthCheck{Name: name, OK: true}
}
