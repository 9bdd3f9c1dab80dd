package conformance

import (
	"context"
	"math/rand/v2"

	"github.com/realtime-message/presence/backend"
)

// errInjected is the failure faulty injects: a timeout, as a lost request
// or a lost reply looks to a client.
type errInjected struct{ sent bool }

func (e errInjected) Error() string {
	if e.sent {
		return "conformance: injected fault: the reply was lost (the commands ran)"
	}
	return "conformance: injected fault: the request was lost (nothing ran)"
}
func (errInjected) Timeout() bool   { return true }
func (errInjected) Temporary() bool { return true }

// faulty makes a fraction of the calls of the linearizability checks fail
// as a network would: half of them before anything is sent, half after
// the commands ran with the reply lost. Both look the same to the caller,
// so the checker must treat such a call as "may or may not have
// happened", and a strategy must not turn it into something else (a
// retry that applies a mutation twice, say).
type faulty struct {
	backend.Client
	rate float64
}

func (f faulty) fault() (bool, bool) {
	if f.rate <= 0 || rand.Float64() >= f.rate {
		return false, false
	}
	return true, rand.IntN(2) == 0
}

func (f faulty) Do(ctx context.Context, cmds ...backend.Cmd) ([]backend.Reply, error) {
	fail, sent := f.fault()
	if !fail {
		return f.Client.Do(ctx, cmds...)
	}
	if sent {
		f.Client.Do(ctx, cmds...)
	}
	return nil, errInjected{sent}
}

func (f faulty) Watch(ctx context.Context, keys []string, fn backend.TxFunc) ([]backend.Reply, error) {
	fail, sent := f.fault()
	if !fail {
		return f.Client.Watch(ctx, keys, fn)
	}
	if sent {
		f.Client.Watch(ctx, keys, fn)
	}
	return nil, errInjected{sent}
}
