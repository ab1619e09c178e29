package ipam

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkAutoAssign measures allocation latency and throughput on an
// embedded etcd that fsyncs (the default, as in production), with 1 and
// 8 allocators, each its own IPAM and etcd client for its own node. One
// op is one address; b.N addresses are shared among the allocators.
// Reported: p50-µs and p99-µs per allocation, allocs/s overall.
func BenchmarkAutoAssign(b *testing.B) {
	for _, allocators := range []int{1, 8} {
		b.Run(fmt.Sprintf("allocators=%d", allocators), func(b *testing.B) {
			e := startEtcd(b, true)
			p := pool("p", "10.0.0.0/12", 26)
			ms := make([]*IPAM, allocators)
			for i := range ms {
				ms[i] = New(openStore(b, e))
			}
			ctx := context.Background()
			lat := make([][]time.Duration, allocators)
			errs := make([]error, allocators)
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i, m := range ms {
				n := b.N / allocators
				if i < b.N%allocators {
					n++
				}
				wg.Go(func() {
					node := fmt.Sprintf("n%d", i+1)
					lat[i] = make([]time.Duration, 0, n)
					for j := range n {
						t := time.Now()
						_, err := m.AutoAssign(ctx, AssignArgs{
							Node: node, HandleID: fmt.Sprintf("bench.%s.%d", node, j),
							Attrs: map[string]string{"pod": fmt.Sprint("p", j)}, Pools: []Pool{p},
						})
						if err != nil {
							errs[i] = err
							return
						}
						lat[i] = append(lat[i], time.Since(t))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			for _, err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			pct := func(q float64) float64 {
				return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds())
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "allocs/s")
		})
	}
}
