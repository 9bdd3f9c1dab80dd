package conformance

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/realtime-message/presence/core"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
	"github.com/realtime-message/presence/strategy"
)

// More deliberately broken strategies and stores (see broken_test.go),
// one per class of bug that issue 11 found the suite blind to.
const (
	// brokenEpochString fences with epochs compared as decimal strings,
	// as a Lua script comparing ARGV with HGET unconverted would: "9" is
	// above "10".
	brokenEpochString = "broken-epoch-string"
	// brokenRetryConflict retries a mutation refused for a genuine
	// conflict, which can only fail again: same outcome, same history,
	// but not "fails at once".
	brokenRetryConflict = "broken-retry-conflict"
	// brokenWatchNoLock is the watch strategy whose WATCH covers the
	// metadata hash only, not the lock keys it reads.
	brokenWatchNoLock = "broken-watch-no-lock"
)

// Broken stores: the lua heartbeat strategy on a client that changes
// what the service's own scripts do. Join and leave are not strategies,
// so this is how the self-test breaks them.
const (
	// brokenJoinNoTTL: a join that leaves the conn hash without a TTL.
	brokenJoinNoTTL = "broken-join-no-ttl"
	// brokenPruneBound: a leave that prunes the gone index at a quarter
	// of the lookback, which is right while every node shares one clock
	// and lets a rejoin on a node behind the others reuse an epoch.
	brokenPruneBound = "broken-prune-bound"
	// brokenUsersNoRemove: a user index that is written on join and never
	// shrinks, as when the second step of leave and reap is forgotten.
	brokenUsersNoRemove = "broken-users-no-remove"
	// brokenUsersAnnounceEach: online announced for every conn added to a
	// user's index rather than its first, as when the decision is made
	// from the caller's view instead of in the user's slot.
	brokenUsersAnnounceEach = "broken-users-announce-each"
)

func init() {
	strategy.Heartbeats.Register(brokenEpochString, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Heartbeat, error) {
		return watchFence{env, func(e, stored int64) bool {
			return strconv.FormatInt(e, 10) < strconv.FormatInt(stored, 10)
		}}, nil
	})
	strategy.Metadatas.Register(brokenRetryConflict, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		return retryConflict{strategy.NewLuaMetadata(env)}, nil
	})
	strategy.Metadatas.Register(brokenWatchNoLock, nil, func(env strategy.Env, _ *strategy.Params) (strategy.Metadata, error) {
		env.Client = metaOnlyWatch{env.Client}
		return strategy.NewWatchMetadata(env, 5), nil
	})
}

type retryConflict struct{ *strategy.LuaMetadata }

func (r retryConflict) Mutate(ctx context.Context, req strategy.MetaRequest) (core.MetaRecord, error) {
	for attempt := 0; ; attempt++ {
		rec, err := r.LuaMetadata.Mutate(ctx, req)
		if !errors.Is(err, core.ErrConflict) || attempt == 2 {
			return rec, err
		}
	}
}

// metaOnlyWatch drops every key but the first, the metadata hash, from
// a WATCH.
type metaOnlyWatch struct{ backend.Client }

func (w metaOnlyWatch) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	return w.Client.Watch(ctx, keys[:1], fn)
}

// scriptRewriter lets a broken store change the calls of one of the
// service's scripts: edit returns the command to send instead and
// commands to send right after it.
type scriptRewriter struct {
	backend.Client
	script *luasrc.Script
	edit   func(backend.Cmd) (backend.Cmd, []backend.Cmd)
}

func (s scriptRewriter) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	var extra []backend.Cmd
	out := make([]backend.Cmd, len(cmds))
	for i, c := range cmds {
		out[i] = c
		if (c.Name == "EVALSHA" || c.Name == "EVAL") && len(c.Pre) > 0 && (c.Pre[0] == s.script.SHA1 || c.Pre[0] == s.script.Source) {
			var more []backend.Cmd
			out[i], more = s.edit(c)
			extra = append(extra, more...)
		}
	}
	r, err := s.Client.Do(ctx, out...)
	if err == nil && len(extra) > 0 {
		_, err = s.Client.Do(ctx, extra...)
	}
	return r, err
}

// brokenStores wrap a client of the target; each runs with the lua
// heartbeat strategy.
var brokenStores = map[string]func(backend.Client) backend.Client{
	brokenJoinNoTTL: func(c backend.Client) backend.Client {
		return scriptRewriter{c, luasrc.Join, func(cmd backend.Cmd) (backend.Cmd, []backend.Cmd) {
			// The conn hash is the key with the conn's part in it (it is
			// not the last key since join.lua takes the room's counter).
			for _, k := range cmd.Keys {
				if strings.Contains(k, "}:conn:") {
					return cmd, []backend.Cmd{backend.K("PERSIST", k)}
				}
			}
			panic("broken-join-no-ttl: join.lua call without a conn hash key")
		}}
	},
	brokenUsersNoRemove: func(c backend.Client) backend.Client {
		return scriptRewriter{c, luasrc.UserRemove, func(cmd backend.Cmd) (backend.Cmd, []backend.Cmd) {
			return backend.Cmd{Name: "EVAL", Pre: []string{"return {0, 0}", "1"}, Keys: cmd.Keys[:1]}, nil
		}}
	},
	brokenUsersAnnounceEach: func(c backend.Client) backend.Client {
		const decision = "local first = (not cur) and n == 1"
		if !strings.Contains(luasrc.UserAdd.Source, decision) {
			panic("user_add.lua no longer decides with " + decision)
		}
		src := strings.Replace(luasrc.UserAdd.Source, decision, "local first = not cur", 1)
		return scriptRewriter{c, luasrc.UserAdd, func(cmd backend.Cmd) (backend.Cmd, []backend.Cmd) {
			return backend.Cmd{Name: "EVAL", Pre: []string{src, "1"}, Keys: cmd.Keys, Args: cmd.Args}, nil
		}}
	},
	brokenPruneBound: func(c backend.Client) backend.Client {
		return scriptRewriter{c, luasrc.Leave, func(cmd backend.Cmd) (backend.Cmd, []backend.Cmd) {
			// ARGV[5] is the lookback in ms.
			args := append([]string(nil), cmd.Args...)
			if ms, err := strconv.ParseInt(args[4], 10, 64); err == nil {
				args[4] = strconv.FormatInt(ms/4, 10)
			}
			cmd.Args = args
			return cmd, nil
		}}
	},
}
