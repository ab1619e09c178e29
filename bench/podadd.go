package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"podnet/lab"
	"podnet/nodeapi"
)

// PodAddResult is the time to attach pods to one node.
type PodAddResult struct {
	Pods          int     `json:"pods"`
	TotalSeconds  float64 `json:"totalSeconds"`
	PodsPerSecond float64 `json:"podsPerSecond"`
	// Per pod.
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
}

func (r PodAddResult) String() string {
	return fmt.Sprintf("%d pods in %.2fs (%.1f pods/s): per pod p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		r.Pods, r.TotalSeconds, r.PodsPerSecond, r.P50Ms, r.P99Ms, r.MaxMs)
}

// PodAdd times `pod add --new` of n pods, one after another, on a one-node
// lab: namespace creation, IPAM allocation on the lab's etcd, TAP set-up,
// WorkloadEndpoint write, as the daemon's API sees them. It deletes the
// pods again afterwards.
func PodAdd(ctx context.Context, binary string, n int, progress io.Writer) (PodAddResult, error) {
	l, err := lab.Up(ctx, lab.Config{Name: "pnbenchadd", Nodes: 1, Pods: lab.NoPods, Binary: binary})
	if err != nil {
		return PodAddResult{}, err
	}
	defer l.Down()
	c := nodeapi.NewClient(l.Status().Nodes[0].Socket)
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	var added []string
	defer func() {
		for _, p := range added {
			c.DeletePod(p)
		}
	}()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("bench%d", i)
		t0 := time.Now()
		if _, err := c.AddPod(nodeapi.AddPodRequest{Name: name, New: true}); err != nil {
			return PodAddResult{}, fmt.Errorf("pod %d: %w", i, err)
		}
		lat = append(lat, time.Since(t0))
		added = append(added, name)
		if progress != nil && (i+1)%50 == 0 {
			fmt.Fprintf(progress, "%d pods added\n", i+1)
		}
	}
	total := time.Since(start)
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	q := func(p float64) float64 { return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))]) }
	return PodAddResult{Pods: n, TotalSeconds: total.Seconds(), PodsPerSecond: float64(n) / total.Seconds(),
		P50Ms: q(0.5), P99Ms: q(0.99), MaxMs: ms(lat[len(lat)-1])}, nil
}
