package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/realtime-message/presence/backend"
)

// failingClient answers every Do with the error or replies it holds.
type failingClient struct {
	backend.Client
	err     error
	replies []backend.Reply
}

func (f *failingClient) Do(context.Context, ...backend.Cmd) ([]backend.Reply, error) {
	return f.replies, f.err
}

func TestRedisErrorKinds(t *testing.T) {
	counts := map[string]int{}
	count := func(kind string) { counts[kind]++ }
	for _, c := range []struct {
		err     error
		replies []backend.Reply
		want    string // "" for not counted
	}{
		{err: fmt.Errorf("call: %w", context.DeadlineExceeded), want: errTimeout},
		{err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, want: errConnection},
		{err: fmt.Errorf("read: %w", syscall.ECONNRESET), want: errConnection},
		{err: backend.ErrClosed, want: errConnection},
		{err: errors.New("strange"), want: errOther},
		{err: context.Canceled},
		{err: backend.ErrTxAborted},
		{replies: []backend.Reply{{Kind: backend.KindError, Err: errors.New("WRONGTYPE Operation against a key")}}, want: errServer},
		{replies: []backend.Reply{{Kind: backend.KindError, Err: errors.New("NOSCRIPT No matching script")}}},
	} {
		clear(counts)
		o := observeClient(&failingClient{err: c.err, replies: c.replies}, count)
		o.Do(context.Background(), backend.Cmd{Name: "GET"})
		backend.DoFlat(context.Background(), o, backend.Cmd{Name: "GET"})
		want := map[string]int{}
		if c.want != "" {
			want[c.want] = 2 // Do and DoFlat
		}
		if fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("%v %v: counted %v, want %v", c.err, c.replies, counts, want)
		}
	}
}
