package presence

import (
	"context"
	"fmt"
	"time"

	"github.com/realtime-message/presence/backend"
)

// resolvePubSub turns Config.PubSub into the mode this node uses. auto
// asks the server only on a cluster, and fails rather than guesses when
// it cannot tell: two nodes that guessed differently would not hear each
// other's room events.
func resolvePubSub(client backend.Client, mode string) (string, error) {
	_, channels := client.(backend.ChannelSubscriber)
	switch mode {
	case PubSubPattern:
		return mode, nil
	case PubSubChannels, PubSubSharded:
		if !channels {
			return "", invalid("config: PubSub %q needs a backend that subscribes to channels (backend.ChannelSubscriber); %T does not", mode, client)
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
