package bench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"podnet/lab"
	"podnet/nodeapi"
	"podnet/router"
)

// ConvergenceResult is how long a newly claimed block takes to become a
// route on another node.
type ConvergenceResult struct {
	Runs int `json:"runs"`
	// Milliseconds: the median, range and every run.
	Milliseconds Stat `json:"milliseconds"`
}

func (r ConvergenceResult) String() string {
	return fmt.Sprintf("block claimed on worker2 -> route on worker1: median %.1f ms (min %.1f, max %.1f, %d runs)",
		r.Milliseconds.Median, r.Milliseconds.Min, r.Milliseconds.Max, r.Runs)
}

// Convergence adds a pod on worker2 from a fresh pool (so that worker2
// claims a new block) and times until worker1's route table has the
// block; runs times.
func Convergence(ctx context.Context, binary string, runs int, progress io.Writer) (ConvergenceResult, error) {
	l, err := lab.Up(ctx, lab.Config{Name: "pnbenchc", Nodes: 2, Pods: lab.NoPods, Binary: binary})
	if err != nil {
		return ConvergenceResult{}, err
	}
	defer l.Down()
	st := l.Status()
	w1, w2 := nodeapi.NewClient(st.Nodes[0].Socket), nodeapi.NewClient(st.Nodes[1].Socket)
	podnet := func(args ...string) error {
		var out strings.Builder
		if err := l.Exec(ctx, "worker1", nil, &out, &out, append([]string{"podnet"}, args...)...); err != nil {
			return fmt.Errorf("podnet %v: %w: %s", args, err, out.String())
		}
		return nil
	}
	var all []time.Duration
	for i := 0; i < runs; i++ {
		pool, cidr := fmt.Sprintf("conv%d", i), fmt.Sprintf("10.%d.0.0/24", 100+i)
		doc := fmt.Sprintf("apiVersion: podnet.io/v1\nkind: IPPool\nmetadata:\n  name: %s\nspec:\n  cidr: %s\n  ipipMode: Always\n", pool, cidr)
		var out strings.Builder
		if err := l.Exec(ctx, "worker1", strings.NewReader(doc), &out, &out, "podnet", "apply", "-f", "-"); err != nil {
			return ConvergenceResult{}, fmt.Errorf("apply pool: %v: %s", err, out.String())
		}
		pod := fmt.Sprintf("conv%d", i)
		t0 := time.Now()
		info, err := w2.AddPod(nodeapi.AddPodRequest{Name: pod, New: true, Pool: pool})
		if err != nil {
			return ConvergenceResult{}, err
		}
		block, _ := netip.MustParseAddr(info.IP).Prefix(26)
		for {
			routes, err := w1.Routes()
			if err != nil {
				return ConvergenceResult{}, err
			}
			if slices.ContainsFunc(routes, func(r router.Route) bool { return r.Prefix == block }) {
				break
			}
			if time.Since(t0) > 30*time.Second {
				return ConvergenceResult{}, fmt.Errorf("block %s never reached worker1", block)
			}
			time.Sleep(2 * time.Millisecond)
		}
		all = append(all, time.Since(t0))
		if err := w2.DeletePod(pod); err != nil {
			return ConvergenceResult{}, err
		}
		if err := podnet("delete", "ippool", pool); err != nil {
			return ConvergenceResult{}, err
		}
		if progress != nil {
			fmt.Fprintf(progress, "run %d: %s\n", i+1, all[len(all)-1].Round(time.Millisecond))
		}
	}
	ms := make([]float64, len(all))
	for i, d := range all {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	return ConvergenceResult{Runs: runs, Milliseconds: NewStat(ms)}, nil
}
