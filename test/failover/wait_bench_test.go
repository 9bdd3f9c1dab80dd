package failover

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/internal/redistest"
)

// BenchmarkMetadataWrite measures a metadata set on a 3+3 cluster with
// WaitReplicas off and on: throughput with 16 writers per GOMAXPROCS
// (writes/s), and the latency of one writer (the /serial ns/op); channels
// spread over the three masters:
//
//	REQUIRE_REDIS=1 go test -run '^$' -bench MetadataWrite -benchtime 3s ./test/failover/
func BenchmarkMetadataWrite(b *testing.B) {
	cluster := redistest.NewReplicated(b, 0)
	for _, be := range backends {
		for _, wait := range []int{0, 1} {
			b.Run(fmt.Sprintf("%s/wait=%d", be, wait), func(b *testing.B) {
				svc := openService(b, cluster.Addrs, presence.Config{Backend: be, WaitReplicas: wait, WaitReplicasTimeout: time.Second})
				var seq atomic.Int64
				var failed atomic.Int64
				b.SetParallelism(16)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						n := seq.Add(1)
						ch := presence.Channel{Type: "doc", Name: "b-" + strconv.FormatInt(n%1000, 10)}
						if _, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "v", Value: strconv.FormatInt(n, 10)}}, presence.MetadataOptions{}); err != nil {
							failed.Add(1)
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
				if f := failed.Load(); f > 0 {
					b.Fatalf("%d of %d writes failed", f, b.N)
				}
			})
			// One writer: ns/op is the latency of a write.
			b.Run(fmt.Sprintf("%s/wait=%d/serial", be, wait), func(b *testing.B) {
				svc := openService(b, cluster.Addrs, presence.Config{Backend: be, WaitReplicas: wait, WaitReplicasTimeout: time.Second})
				ctx := context.Background()
				for i := range b.N {
					ch := presence.Channel{Type: "doc", Name: "s-" + strconv.Itoa(i%1000)}
					if _, err := svc.SetMetadata(ctx, ch, []presence.Item{{Key: "v", Value: strconv.Itoa(i)}}, presence.MetadataOptions{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
