package failover

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var backends = []string{"rueidis", "goredis"}

func openService(t testing.TB, addrs []string, cfg presence.Config) *presence.Service {
	t.Helper()
	cfg.Addrs = addrs
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = redistest.Prefix(t)
	}
	if cfg.ReaperInterval == 0 {
		cfg.ReaperInterval = -1 // no reaper unless the test asks for one
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := presence.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// WaitReplicas acks a metadata write once its replica has it, and refuses
// the ack with ErrNotReplicated when the replica cannot confirm it: for
// both backends and both metadata strategies, on a cluster and on a
// standalone server without replicas. The write itself ran either way.
func TestWaitReplicas(t *testing.T) {
	r := redistest.NewReplicated(t, 0)
	standalone := redistest.NewStandalone(t)
	for _, be := range backends {
		for _, strat := range []string{"lua", "watch"} {
			t.Run(be+"/"+strat, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cfg := presence.Config{Backend: be, Metadata: strat, WaitReplicas: 1, WaitReplicasTimeout: 300 * time.Millisecond}
				svc := openService(t, r.Addrs, cfg)
				ch := presence.Channel{Type: "doc", Name: "c-" + redistest.Prefix(t)}
				// A loaded machine may delay the replica's acknowledgement
				// past the timeout now and then: a positive outcome is
				// polled for, a negative one is asserted once.
				eventually(t, "set with the replica up", func() error {
					_, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "v1"}}, presence.MetadataOptions{})
					return err
				})

				// A stopped replica cannot acknowledge: the next write must
				// be refused. WAIT on any connection but the write's would
				// count the replica's old acknowledgement and pass.
				shard := r.ShardOf(svc.Keys().Meta(ch.Type, ch.Name))
				replica := (r.Masters(t)[shard] + redistest.Shards) % (2 * redistest.Shards)
				stopped := r.NodePid(replica)
				if err := syscall.Kill(stopped, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				_, err := svc.UpdateMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "v2"}}, presence.MetadataOptions{})
				if err := syscall.Kill(stopped, syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				if !errors.Is(err, presence.ErrNotReplicated) {
					t.Fatalf("update with the replica stopped: %v, want ErrNotReplicated", err)
				}
				// It ran on the master nevertheless, as the error says.
				got, err := svc.GetMetadata(ctx, ch)
				if err != nil || got.Metadata["k"].Value != "v2" {
					t.Fatalf("after the unreplicated update: %+v %v, want k=v2", got, err)
				}
				// Once the replica is back, writes are acked again.
				eventually(t, "set after the replica resumed", func() error {
					_, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "v3"}}, presence.MetadataOptions{})
					return err
				})

				// No replica at all: every write is refused, and still runs.
				alone := openService(t, standalone.Addrs, cfg)
				_, err = alone.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: "x"}}, presence.MetadataOptions{})
				var nr interface{ Error() string }
				if !errors.Is(err, presence.ErrNotReplicated) || !errors.As(err, &nr) {
					t.Fatalf("set on a server without replicas: %v, want ErrNotReplicated", err)
				}
				if got, err := alone.GetMetadata(ctx, ch); err != nil || got.Metadata["k"].Value != "x" {
					t.Fatalf("standalone after the unreplicated set: %+v %v", got, err)
				}
				// Refusals that wrote nothing keep their own error when the
				// server refused (an invalid update is refused before Redis).
				if _, err := alone.UpdateMetadata(ctx, ch, []presence.Item{{Key: "nope", Value: "x"}}, presence.MetadataOptions{}); !errors.Is(err, presence.ErrInvalidArgument) {
					t.Fatalf("update of an unknown item: %v, want ErrInvalidArgument", err)
				}
			})
		}
	}
}

// eventually polls fn until it succeeds, failing the test after 20s.
func eventually(t testing.TB, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 20s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A negative WaitReplicas is refused by New.
func TestWaitReplicasConfig(t *testing.T) {
	s := redistest.Embedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := presence.Open(ctx, presence.Config{Addrs: s.Addrs, WaitReplicas: -1})
	if !errors.Is(err, presence.ErrInvalidArgument) {
		t.Fatalf("WaitReplicas -1: %v, want ErrInvalidArgument", err)
	}
}
