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
	Pods  int           `json:"pods"`
	Total time.Duration `json:"total"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

func (r PodAddResult) String() string {
	return fmt.Sprintf("%d pods in %s (%.1f pods/s): per pod p50 %s, p99 %s, max %s",
		r.Pods, r.Total.Round(time.Millisecond), float64(r.Pods)/r.Total.Seconds(),
		r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
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
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return PodAddResult{Pods: n, Total: total, P50: q(0.5), P99: q(0.99), Max: lat[len(lat)-1]}, nil
}
