package ipam

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p1 := pool("p1", "10.1.0.0/24", 28)
	gone := pool("gone", "10.9.0.0/24", 28)
	live := assign(t, m, "a", "pod.a.live", p1)
	dead := assign(t, m, "a", "pod.a.dead", p1)
	orphan := assign(t, m, "a", "pod.a.orphan", gone)
	// A handle counted by an allocation that died before its block write.
	blk := netip.PrefixFrom(live, 28).Masked()
	if err := m.changeHandle(ctx, "pod.a.crashed", blk, 1); err != nil {
		t.Fatal(err)
	}
	r, err := m.Check(ctx, []Pool{p1}, func(a Allocation) bool { return a.HandleID != "pod.a.dead" })
	if err != nil {
		t.Fatal(err)
	}
	if r.Blocks != 2 || r.Allocations != 3 {
		t.Fatalf("got %d blocks %d allocations, want 2 3", r.Blocks, r.Allocations)
	}
	if len(r.Leaked) != 1 || r.Leaked[0].IP != dead {
		t.Fatalf("leaked: got %+v, want %v", r.Leaked, dead)
	}
	if len(r.NotInPool) != 1 || r.NotInPool[0].IP != orphan {
		t.Fatalf("not in pool: got %+v, want %v", r.NotInPool, orphan)
	}
	want := []HandleProblem{{ID: "pod.a.crashed", Block: blk, Counted: 1, Found: 0}}
	if !slices.Equal(r.Handles, want) {
		t.Fatalf("handles: got %+v, want %+v", r.Handles, want)
	}
	if r.Problems() != 3 || !strings.Contains(r.String(), "Check complete; found 3 problems.") {
		t.Fatalf("report:\n%s", r)
	}
	// ReleaseByHandle clears the crashed handle's count.
	if err := m.ReleaseByHandle(ctx, "pod.a.crashed"); err != nil {
		t.Fatal(err)
	}
	if r, _ := m.Check(ctx, []Pool{p1, gone}, nil); r.Problems() != 0 {
		t.Fatalf("after cleanup:\n%s", r)
	}
}

func TestChanges(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := m.Changes(ctx)
	recv := func(what string) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: channel closed", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no signal", what)
		}
	}
	recv("start")
	assign(t, m, "a", "h", pool("p", "10.0.0.0/24", 26))
	recv("after assign")
	cancel()
	for range ch {
	}
}
