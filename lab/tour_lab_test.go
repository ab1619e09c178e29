package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestTourOtherLabs: the tour on labs other than make lab's.
//   - Three nodes, one pod each: the tour adds the pod it lacks on the
//     first node (none is removed) and goes on; it used to scale the
//     deployment over and over, forever.
//   - Plain routing: across nodes the reply has TTL 60 (the nodes'
//     kernels route too) and the fabric shows the pods' own packets.
func TestTourOtherLabs(t *testing.T) {
	labtest.RequireRoot(t)
	t.Run("three nodes", func(t *testing.T) {
		l := labtest.Up(t, lab.Config{Nodes: 3, Pods: 3})
		before := len(l.Status().Pods)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var out strings.Builder
		if err := l.Tour(ctx, lab.TourConfig{Step: 2, Out: &out}); err != nil {
			t.Fatalf("tour step 2: %v\n%s", err, out.String())
		}
		onFirst := 0
		for _, p := range l.Status().Pods {
			if p.Node == "worker1" {
				onFirst++
			}
		}
		if after := len(l.Status().Pods); after != before+1 || onFirst != 2 {
			t.Errorf("pods: %d before, %d after, %d on worker1; want one added there", before, after, onFirst)
		}
		if !strings.Contains(out.String(), "pod add") || strings.Contains(out.String(), "lab scale") {
			t.Errorf("the tour's commands:\n%s", out.String())
		}
	})
	t.Run("plain routing", func(t *testing.T) {
		l := labtest.Up(t, lab.Config{Nodes: 2, Encap: lab.EncapNone})
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var out strings.Builder
		if err := l.Tour(ctx, lab.TourConfig{Step: 3, Out: &out}); err != nil {
			t.Fatalf("tour step 3: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "ttl=60") {
			t.Errorf("no ttl=60 in the tour's ping across nodes:\n%s", out.String())
		}
	})
}
