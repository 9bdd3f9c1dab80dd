package conformance

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luasrc"
)

// Broken notify reapers. The reaper is not a strategy, so, like the
// broken stores, each is a client that changes what the notify reaper
// sees or runs; unlike them it keeps the client's per-master abilities
// (backend.NodeSubscriber, backend.MasterRunner), without which the
// reaper rightly falls back to sweeping.
const (
	// brokenNotifyDeaf subscribes on every master but drops every
	// expired-key event: the reaper says it runs on notifications, and
	// only its backstop sweep, minutes away, would ever reap.
	brokenNotifyDeaf = "broken-notify-deaf"
	// brokenNotifyNoSub cannot subscribe per master on a server that
	// publishes notifications: a fallback to sweeping there is a silent
	// loss of the mode configured.
	brokenNotifyNoSub = "broken-notify-nosub"
	// brokenNotifyEarly trusts the event: it reaps the room of an expired
	// conn at once, skipping the lookback (the conn's last heartbeat read
	// as 0, the script's cutoff at now).
	brokenNotifyEarly = "broken-notify-early"
	// brokenNotifyReapsLive waits for the lookback but then reaps the
	// room without its script's checks (cutoff at now, no check that a
	// conn's hash is gone): the conns of that room that still heartbeat go
	// with the expired one.
	brokenNotifyReapsLive = "broken-notify-reaps-live"
)

// perMaster is a client whose Do may be changed, with the per-master
// abilities of the client it wraps.
type perMaster struct {
	backend.Client
	raw backend.Client
	// handler, when set, replaces the handler of PSubscribeEachMaster.
	handler func(backend.Handler) backend.Handler
	noSub   bool
}

func (p perMaster) PSubscribeEachMaster(ctx context.Context, pattern string, h backend.Handler) (backend.Subscription, error) {
	if p.noSub {
		return nil, errors.New(brokenNotifyNoSub + ": cannot subscribe per master")
	}
	if p.handler != nil {
		h = p.handler(h)
	}
	return p.raw.(backend.NodeSubscriber).PSubscribeEachMaster(ctx, pattern, h)
}

func (p perMaster) Cluster() bool { return p.raw.(backend.MasterRunner).Cluster() }

func (p perMaster) EachMaster(ctx context.Context, cmds []backend.Cmd, fn func(string, []backend.Reply, error)) error {
	return p.raw.(backend.MasterRunner).EachMaster(ctx, cmds, fn)
}

// lastSeenZero answers every ZSCORE, which only the notify reaper sends
// (a conn's last heartbeat), with 0.
type lastSeenZero struct{ backend.Client }

func (z lastSeenZero) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	out := make([]backend.Cmd, len(cmds))
	for i, c := range cmds {
		out[i] = c
		if c.Name == "ZSCORE" {
			out[i] = backend.Cmd{Name: "ECHO", Args: []string{"0"}}
		}
	}
	return z.Client.Do(ctx, out...)
}

var brokenReapers = map[string]func(backend.Client) backend.Client{
	brokenNotifyDeaf: func(c backend.Client) backend.Client {
		return perMaster{Client: c, raw: c, handler: func(backend.Handler) backend.Handler {
			return func(backend.Message) {}
		}}
	},
	brokenNotifyNoSub: func(c backend.Client) backend.Client {
		return perMaster{Client: c, raw: c, noSub: true}
	},
	brokenNotifyEarly: func(c backend.Client) backend.Client {
		return perMaster{Client: reapRewriter(lastSeenZero{c}, luasrc.Reap.Source), raw: c}
	},
	brokenNotifyReapsLive: func(c backend.Client) backend.Client {
		const check = "if redis.call('EXISTS', ARGV[5] .. conn) == 0 then"
		if !strings.Contains(luasrc.Reap.Source, check) {
			panic("reap.lua no longer checks a conn's hash with " + check)
		}
		return perMaster{Client: reapRewriter(c, strings.Replace(luasrc.Reap.Source, check, "if true then", 1)), raw: c}
	},
}

// reapRewriter runs src instead of reap.lua, with the cutoff (ARGV[3])
// at now (ARGV[2]).
func reapRewriter(c backend.Client, src string) backend.Client {
	return scriptRewriter{c, luasrc.Reap, func(cmd backend.Cmd) (backend.Cmd, []backend.Cmd) {
		args := append([]string(nil), cmd.Args...)
		args[2] = args[1]
		return backend.Cmd{Name: "EVAL", Pre: []string{src, cmd.Pre[1]}, Keys: cmd.Keys, Args: args}, nil
	}}
}

// TestBrokenNotifyReapersAreCaught is the reaper property proving its
// power: on a server that publishes keyspace notifications, the notify
// reaper of the service passes it (through the same wrapper, changing
// nothing), and each broken one fails it, within selfTestTries runs.
func TestBrokenNotifyReapersAreCaught(t *testing.T) {
	// The embedded server publishes no notifications.
	target := rueidisTarget(t, redistest.Standalone(t), 0)
	prop := property{PropReaper, checkReaper}
	t.Run("correct", func(t *testing.T) {
		wrapped := wrapTarget(target, func(c backend.Client) backend.Client { return perMaster{Client: c, raw: c} })
		if rec := runProperty(t, wrapped, "heartbeat", prop, "lua"); rec.Failed() {
			t.Fatalf("the service's own notify reaper failed the reaper property: %s", strings.Join(rec.errs, "; "))
		}
	})
	for _, name := range []string{brokenNotifyDeaf, brokenNotifyNoSub, brokenNotifyEarly, brokenNotifyReapsLive} {
		t.Run(name, func(t *testing.T) {
			broken := wrapTarget(target, brokenReapers[name])
			for try := 1; try <= selfTestTries; try++ {
				if rec := runProperty(t, broken, "heartbeat", prop, "lua"); rec.Failed() {
					t.Logf("caught in run %d: %s", try, firstLine(rec.errs[0]))
					return
				}
			}
			t.Errorf("the %s property did not report %s, which is broken, in %d runs", PropReaper, name, selfTestTries)
		})
	}
}
