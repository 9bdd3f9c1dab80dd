package presence

import (
	"fmt"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
	"github.com/realtime-message/presence/strategy"
)

// ErrNotReplicated is returned by a metadata mutation under
// Config.WaitReplicas when fewer replicas than required acknowledged the
// write in time. The write ran on the master and is visible there: it is
// not undone, and survives unless that master fails before a replica
// receives it. Read the channel before retrying (a retried set bumps
// majorRevision again; a retried update with revisions may conflict with
// itself).
var ErrNotReplicated = backend.ErrNotReplicated

// DefaultWaitReplicasTimeout is Config.WaitReplicasTimeout's default.
const DefaultWaitReplicasTimeout = 500 * time.Millisecond

// metadataEnv returns the metadata strategy's environment: with
// Config.WaitReplicas, a Client whose writes wait for replicas on their
// own connection (backend.ReplicaWaiter), so no strategy needs to know
// about WAIT; presence writes keep the plain client (a lost heartbeat or
// join is healed by the socket layer, and waiting would slow every
// heartbeat).
func metadataEnv(env strategy.Env, cfg Config) (strategy.Env, error) {
	if cfg.WaitReplicas < 0 {
		return env, invalid("config: WaitReplicas %d: want 0 (off) or more", cfg.WaitReplicas)
	}
	if cfg.WaitReplicasTimeout < 0 {
		return env, invalid("config: WaitReplicasTimeout %v: want above 0", cfg.WaitReplicasTimeout)
	}
	if cfg.WaitReplicas == 0 {
		return env, nil
	}
	w := backend.ReplicaWait{Replicas: cfg.WaitReplicas, Timeout: cfg.WaitReplicasTimeout, Wrote: metaWrote}
	if w.Timeout == 0 {
		w.Timeout = DefaultWaitReplicasTimeout
	}
	rw, ok := env.Client.(backend.ReplicaWaiter)
	if !ok {
		return env, invalid("config: WaitReplicas needs a backend that can send WAIT after its writes (backend.ReplicaWaiter); %T cannot", env.Client)
	}
	c, err := rw.WaitingReplicas(w)
	if err != nil {
		return env, fmt.Errorf("presence: WaitReplicas: %w", err)
	}
	env.Client = c
	env.Scripts = backend.NewScripts(c)
	return env, nil
}

// metaWrote tells whether a command of the metadata strategies wrote:
// meta_mutate.lua answers a refusal (conflict, lock, unknown item) with
// {0, code, ...} and writes nothing then, so the refusal stands rather
// than a "not replicated" for a write that never was.
func metaWrote(cmd backend.Cmd, r backend.Reply) bool {
	if (cmd.Name == "EVALSHA" || cmd.Name == "EVAL") && len(cmd.Pre) > 0 && (cmd.Pre[0] == luasrc.MetaMutate.SHA1 || cmd.Pre[0] == luasrc.MetaMutate.Source) {
		if a, err := r.AsArray(); err == nil && len(a) > 0 {
			ok, _ := a[0].AsInt()
			return ok == 1
		}
	}
	return true
}
