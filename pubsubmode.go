package presence

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/realtime-message/presence/backend"
)

// resolvePubSub turns Config.PubSub into the mode this node uses. auto
// asks the server only on a cluster, and fails rather than guesses when
// it cannot tell: two nodes that guessed differently would not hear each
// other's room events.
func resolvePubSub(client backend.Client, mode string, log *slog.Logger) (string, error) {
	_, channels := client.(backend.ChannelSubscriber)
	switch mode {
	case PubSubPattern:
		return mode, nil
	case PubSubChannels, PubSubSharded:
		if !channels {
			return "", invalid("config: PubSub %q needs a backend that subscribes to channels (backend.ChannelSubscriber); %T does not", mode, client)
		}
		if mode == PubSubSharded {
			if err := checkShardedServer(client, log); err != nil {
				return "", err
			}
		}
		return mode, nil
	}
	if !channels {
		return PubSubPattern, nil
	}
	mr, ok := client.(backend.MasterRunner)
	if !ok || !mr.Cluster() {
		return PubSubChannels, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok, err := supportsSharded(ctx, client)
	if err != nil {
		return "", fmt.Errorf("presence: PubSub auto: cannot tell whether the cluster supports sharded pub/sub (set PubSub to %q or %q): %w", PubSubSharded, PubSubChannels, err)
	}
	if ok {
		return PubSubSharded, nil
	}
	return PubSubChannels, nil
}

// checkShardedServer refuses a forced sharded mode on a server without
// SPUBLISH (Redis before 7, the embedded server), whose scripts would
// refuse every join. When the server cannot be asked, New goes on: the
// scripts check again before writing anything.
func checkShardedServer(client backend.Client, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := supportsSharded(ctx, client)
	switch {
	case err != nil:
		log.Warn("presence: PubSub sharded: cannot ask the server whether it supports SPUBLISH", "err", err)
	case !ok:
		return invalid("config: PubSub %q needs sharded pub/sub (SPUBLISH, Redis 7 or later), which the server does not support; use %q or %q", PubSubSharded, PubSubChannels, PubSubPattern)
	}
	return nil
}

// supportsSharded reports whether the server knows SPUBLISH (Redis 7+).
func supportsSharded(ctx context.Context, client backend.Pipeliner) (bool, error) {
	var last error
	for {
		r, err := client.Do(ctx, backend.C("COMMAND", nil, "INFO", "SPUBLISH"))
		if err == nil {
			// One element per command asked: the command's description,
			// or nil for a command the server does not know.
			if err = r[0].Error(); err == nil {
				return len(r[0].Elems) == 1 && !r[0].Elems[0].IsNil(), nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return false, last
		case <-time.After(200 * time.Millisecond):
		}
	}
}
