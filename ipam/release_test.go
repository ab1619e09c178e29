package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"podnet/datastore"
)

func TestReleaseIPs(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.0.0.0/24", 29)
	var ips []netip.Addr
	for i := range 10 {
		ips = append(ips, assign(t, m, "a", fmt.Sprint("h", i%3), p))
	}
	free := mustAddr("10.0.0.250")
	outside := mustAddr("192.0.2.1")
	rel, err := m.ReleaseIPs(ctx, ips[1], free, ips[8], outside, ips[9])
	if want := []netip.Addr{ips[1], ips[8], ips[9]}; !slices.Equal(rel, want) {
		t.Fatalf("released: got %v, want %v", rel, want)
	}
	if !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("got %v, want ErrNotAssigned", err)
	}
	for _, want := range []string{"IP address 10.0.0.250 is not assigned", "IP address 192.0.2.1 is not assigned"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to contain %q", err, want)
		}
	}
	if _, ok, _ := m.Lookup(ctx, ips[1]); ok {
		t.Fatalf("%v still allocated after release", ips[1])
	}
	// Handles: h0 had ips 0,3,6,9; h1 had 1,4,7; h2 had 2,5,8.
	hs, err := m.Handles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, h := range hs {
		for _, n := range h.Blocks {
			got[h.ID] += n
		}
	}
	if want := map[string]int{"h0": 3, "h1": 2, "h2": 2}; !maps.Equal(got, want) {
		t.Fatalf("handle counts: got %v, want %v", got, want)
	}
	// The lowest free address comes back first.
	if ip := assign(t, m, "a", "h9", p); ip != ips[1] {
		t.Fatalf("after release: got %v, want %v", ip, ips[1])
	}
	// Releasing again reports it.
	if _, err := m.ReleaseIPs(ctx, ips[8]); !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("second release: got %v, want ErrNotAssigned", err)
	}
}

// TestReleaseAllocations frees an allocation only while it is the one the
// caller saw: the same address freed and assigned again under the same
// handle (a pod of the same name) is a new allocation and stays.
func TestReleaseAllocations(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.0.0.0/24", 29)
	ip := assign(t, m, "a", "pod.a.web", p)
	other := assign(t, m, "a", "pod.a.db", p)
	seen, ok, err := m.Lookup(ctx, ip)
	if err != nil || !ok {
		t.Fatalf("lookup %v: %v %v", ip, ok, err)
	}
	if err := m.ReleaseByHandle(ctx, "pod.a.web"); err != nil {
		t.Fatal(err)
	}
	if again := assign(t, m, "a", "pod.a.web", p); again != ip {
		t.Fatalf("reassigned %v, want %v back", again, ip)
	}
	db, _, _ := m.Lookup(ctx, other)
	rel, err := m.ReleaseAllocations(ctx, []Allocation{seen, db})
	if !slices.Equal(rel, []netip.Addr{other}) || !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), ip.String()) {
		t.Fatalf("release of a stale and a current allocation: released %v, %v; want %v and ErrChanged naming %v", rel, err, other, ip)
	}
	now, ok, err := m.Lookup(ctx, ip)
	if err != nil || !ok || now.HandleID != "pod.a.web" {
		t.Fatalf("the new allocation of %v: got %+v %v %v, want it kept", ip, now, ok, err)
	}
	if now.Seq == seen.Seq {
		t.Fatalf("sequence number %d unchanged by the new allocation", now.Seq)
	}
	if rel, err := m.ReleaseAllocations(ctx, []Allocation{now}); err != nil || !slices.Equal(rel, []netip.Addr{ip}) {
		t.Fatalf("release of the current allocation: %v %v", rel, err)
	}
	// One freed already is reported, not freed twice.
	if _, err := m.ReleaseAllocations(ctx, []Allocation{now}); !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("second release: got %v, want ErrNotAssigned", err)
	}
}

func TestReleaseByHandle(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.0.0.0/24", 30)
	for i := range 10 {
		assign(t, m, "a", fmt.Sprint("h", i%2), p) // h0 spans 3 blocks
	}
	if err := m.ReleaseByHandle(ctx, "h0"); err != nil {
		t.Fatal(err)
	}
	allocs, err := m.Allocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 5 {
		t.Fatalf("got %d allocations, want 5", len(allocs))
	}
	for _, a := range allocs {
		if a.HandleID != "h1" {
			t.Fatalf("%v still has handle %s", a.IP, a.HandleID)
		}
	}
	if _, err := m.handles.Get(ctx, "h0"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("handle h0 after release: got %v, want it deleted", err)
	}
	if err := m.ReleaseByHandle(ctx, "h0"); !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("second release: got %v, want ErrNotAssigned", err)
	}
	// Affine blocks stay, even empty.
	if bs, _ := m.NodeBlocks(ctx, "a"); len(bs) != 3 {
		t.Fatalf("node blocks: got %v, want 3", bs)
	}
}

// TestReleaseDeletesUnaffineEmptyBlock: a node lets its blocks go while
// another node still borrows an address in one of them; the block stays
// until that address is released, then it is deleted.
func TestReleaseDeletesUnaffineEmptyBlock(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.0.0.0/29", 30) // two blocks
	for i := range 8 {
		assign(t, m, "a", fmt.Sprint("a", i), p)
	}
	// Free one address in each block, let b borrow one of them.
	if _, err := m.ReleaseIPs(ctx, mustAddr("10.0.0.1"), mustAddr("10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	ipB := assign(t, m, "b", "b0", p)
	// a goes away: release everything of a, then its blocks.
	for i := range 8 {
		if err := m.ReleaseByHandle(ctx, fmt.Sprint("a", i)); err != nil && !errors.Is(err, ErrNotAssigned) {
			t.Fatal(err)
		}
	}
	if err := m.ReleaseNodeBlocks(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	blk := netip.PrefixFrom(ipB, 30).Masked()
	us, err := m.Usage(ctx, []Pool{p})
	if err != nil {
		t.Fatal(err)
	}
	want := []BlockUsage{{CIDR: blk, Pool: "p", Node: "a", Total: 4, InUse: 1}}
	if !slices.Equal(us[0].Blocks, want) {
		t.Fatalf("blocks after ReleaseNodeBlocks: got %+v, want %+v (only b's borrowed-into block left)", us[0].Blocks, want)
	}
	// a is removed for good: the block loses its affinity, keeps b's
	// address, and goes when that is released.
	if err := m.RemoveNode(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if a, ok, err := m.Lookup(ctx, ipB); err != nil || !ok || a.BlockOwner != "" || !a.Borrowed {
		t.Fatalf("%v after RemoveNode(a): got %+v %v %v, want it kept in an unaffine block", ipB, a, ok, err)
	}
	if bs, _ := m.NodeBlocks(ctx, "a"); len(bs) != 0 {
		t.Fatalf("a's blocks after RemoveNode: got %v", bs)
	}
	if _, err := m.ReleaseIPs(ctx, ipB); err != nil {
		t.Fatal(err)
	}
	if _, err := m.blocks.Get(ctx, blk.String()); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("block %v after its last release: got %v, want deleted", blk, err)
	}
}

func TestPoolAllocationsAndReleasePoolAffinities(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p1 := pool("p1", "10.1.0.0/24", 28)
	p2 := pool("p2", "10.2.0.0/24", 28)
	for i := range 20 {
		assign(t, m, "a", fmt.Sprint("a", i), p1)
	}
	for i := range 5 {
		assign(t, m, "b", fmt.Sprint("b", i), p1)
		assign(t, m, "b", fmt.Sprint("b2.", i), p2)
	}
	n, byNode, err := m.PoolAllocations(ctx, p1.CIDR)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"a": 20, "b": 5}; n != 25 || !maps.Equal(byNode, want) {
		t.Fatalf("p1: got %d %v, want 25 %v", n, byNode, want)
	}
	// Empty p1's blocks but the first of a's, then release the pool's
	// affinities: only that block is left.
	for i := 1; i < 20; i++ {
		m.ReleaseByHandle(ctx, fmt.Sprint("a", i))
	}
	for i := range 5 {
		m.ReleaseByHandle(ctx, fmt.Sprint("b", i))
	}
	if err := m.ReleasePoolAffinities(ctx, p1.CIDR); err != nil {
		t.Fatal(err)
	}
	us, err := m.Usage(ctx, []Pool{p1, p2})
	if err != nil {
		t.Fatal(err)
	}
	if len(us[0].Blocks) != 1 || us[0].Blocks[0].Node != "a" || us[0].InUse != 1 {
		t.Fatalf("p1 after ReleasePoolAffinities: got %+v, want a's one block with 1 in use", us[0])
	}
	if len(us[1].Blocks) != 1 || us[1].InUse != 5 {
		t.Fatalf("p2 touched: got %+v", us[1])
	}
	if bs, _ := m.NodeBlocks(ctx, "b"); len(bs) != 1 || !p2.CIDR.Contains(bs[0].Addr()) {
		t.Fatalf("b's blocks: got %v, want its p2 block only", bs)
	}
}

func TestUsageOrphanBlocks(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p1 := pool("p1", "10.1.0.0/24", 26)
	gone := pool("gone", "10.9.0.0/24", 26)
	for i := range 3 {
		assign(t, m, "a", fmt.Sprint("a", i), p1)
	}
	assign(t, m, "a", "g", gone)
	// "gone" was deleted with force: Usage is asked about p1 only.
	us, err := m.Usage(ctx, []Pool{p1})
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 2 {
		t.Fatalf("got %d usage rows, want p1 and the orphans", len(us))
	}
	if us[0].Name != "p1" || us[0].Total != 256 || us[0].InUse != 3 || len(us[0].Blocks) != 1 {
		t.Fatalf("p1: got %+v", us[0])
	}
	o := us[1]
	if o.Name != "" || o.CIDR.IsValid() || o.Total != 64 || o.InUse != 1 || len(o.Blocks) != 1 || o.Blocks[0].Pool != "" {
		t.Fatalf("orphans: got %+v", o)
	}
}
