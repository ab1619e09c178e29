package ipam

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"podnet/datastore"
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
	orphanBlk := netip.PrefixFrom(orphan, 28).Masked()
	if wantO := []OrphanBlock{{Block: orphanBlk, Node: "a", InUse: 1}}; !slices.Equal(r.OrphanBlocks, wantO) {
		t.Fatalf("orphan blocks: got %+v, want %+v", r.OrphanBlocks, wantO)
	}
	want := []HandleProblem{{ID: "pod.a.crashed", Block: blk, Counted: 1, Found: 0}}
	if !slices.Equal(r.Handles, want) {
		t.Fatalf("handles: got %+v, want %+v", r.Handles, want)
	}
	if r.Problems() != 4 || !strings.Contains(r.String(), "Check complete; found 4 problems.") ||
		!strings.Contains(r.String(), "block "+orphanBlk.String()+" (affine to node a, 1 addresses in use) is in no IP pool") {
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

// TestReleaseEmptyBlock: the block of a pool deleted with --force is
// reported by Check while it is outside every pool, cannot be released
// while it holds an address, and is released (affinity and block gone)
// once it is empty.
func TestReleaseEmptyBlock(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p1 := pool("p1", "10.1.0.0/24", 28)
	gone := pool("gone", "10.9.0.0/24", 28)
	assign(t, m, "a", "pod.a.keep", p1)
	ip := assign(t, m, "a", "pod.a.old", gone)
	blk := netip.PrefixFrom(ip, 28).Masked()
	before, err := m.affinities.Get(ctx, affinityName("a", blk))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := m.ReleaseEmptyBlock(ctx, "a", blk); err != nil || ok {
		t.Fatalf("release of a block in use: got %v %v, want false nil", ok, err)
	}
	// Without a write: the node calls this on every reconcile while the
	// block's pods live, and each write to an affinity wakes the
	// watchers, that node's reconcile among them.
	if after, err := m.affinities.Get(ctx, affinityName("a", blk)); err != nil || after.Revision != before.Revision {
		t.Fatalf("affinity of a block in use rewritten: revision %d → %d (%v)", before.Revision, after.Revision, err)
	}
	if bs, _ := m.NodeBlocks(ctx, "a"); !slices.Contains(bs, blk) {
		t.Fatalf("block in use lost its affinity: %v", bs)
	}
	if err := m.ReleaseByHandle(ctx, "pod.a.old"); err != nil {
		t.Fatal(err)
	}
	r, _ := m.Check(ctx, []Pool{p1}, nil)
	if want := []OrphanBlock{{Block: blk, Node: "a"}}; !slices.Equal(r.OrphanBlocks, want) || r.Problems() != 1 {
		t.Fatalf("check of the empty orphan block: got %+v (%d problems), want %+v", r.OrphanBlocks, r.Problems(), want)
	}
	if ok, err := m.ReleaseEmptyBlock(ctx, "a", blk); err != nil || !ok {
		t.Fatalf("release of the empty block: got %v %v, want true nil", ok, err)
	}
	if bs, _ := m.NodeBlocks(ctx, "a"); slices.Contains(bs, blk) || len(bs) != 1 {
		t.Fatalf("blocks of a after release: got %v, want p1's only", bs)
	}
	if r, _ := m.Check(ctx, []Pool{p1}, nil); r.Problems() != 0 || r.Blocks != 1 {
		t.Fatalf("after release:\n%s", r)
	}
}

// TestDeleteAffinityIn: the last step of a release deletes the affinity
// only while it is still pendingDeletion, so a claim that confirmed it
// again meanwhile keeps it.
func TestDeleteAffinityIn(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	blk := netip.MustParsePrefix("10.30.0.0/26")
	name := affinityName("a", blk)
	if _, err := m.affinities.Create(ctx, name, encodeAffinity(stateConfirmed)); err != nil {
		t.Fatal(err)
	}
	if err := m.deleteAffinityIn(ctx, name, statePendingDeletion); err != nil {
		t.Fatal(err)
	}
	if _, err := m.affinities.Get(ctx, name); err != nil {
		t.Fatalf("a confirmed affinity was deleted: %v", err)
	}
	if err := m.setAffinityState(ctx, name, statePendingDeletion); err != nil {
		t.Fatal(err)
	}
	if err := m.deleteAffinityIn(ctx, name, statePendingDeletion); err != nil {
		t.Fatal(err)
	}
	if _, err := m.affinities.Get(ctx, name); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("a pendingDeletion affinity: got %v, want it deleted", err)
	}
}
