package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"podnet/datastore"
)

func assign(t *testing.T, m *IPAM, node, handle string, pools ...Pool) netip.Addr {
	t.Helper()
	ip, err := m.AutoAssign(context.Background(), AssignArgs{Node: node, HandleID: handle, Pools: pools})
	if err != nil {
		t.Fatalf("auto-assign %s for %s: %v", handle, node, err)
	}
	return ip
}

func TestAutoAssignClaimsAndFills(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.10.0.0/16", 26)
	first := assign(t, m, "n1", "h0", p)
	blk := netip.PrefixFrom(first, 26).Masked()
	if first != blk.Addr() {
		t.Fatalf("first address: got %v, want the block's first, %v", first, blk.Addr())
	}
	// The rest of the block, in order, before a second block.
	for i := 1; i < 64; i++ {
		ip := assign(t, m, "n1", fmt.Sprintf("h%d", i), p)
		if want := blk.Addr(); ip != uintAddr(addrUint(want)+uint32(i)) {
			t.Fatalf("address %d: got %v, want %v", i, ip, uintAddr(addrUint(want)+uint32(i)))
		}
	}
	next := assign(t, m, "n1", "h64", p)
	if blk.Contains(next) {
		t.Fatalf("65th address %v still in the full block %v", next, blk)
	}
	blocks, err := m.NodeBlocks(ctx, "n1")
	if err != nil || len(blocks) != 2 {
		t.Fatalf("node blocks: got %v %v, want 2", blocks, err)
	}
	// The affinity and the block are stored as Calico stores them.
	kv, err := m.affinities.Get(ctx, affinityName("n1", blk))
	if err != nil || string(kv.Value) != `{"state":"confirmed","deleted":false}` {
		t.Fatalf("affinity: got %s %v", kv.Value, err)
	}
	kv, err = m.handles.Get(ctx, "h3")
	if err != nil || string(kv.Value) != fmt.Sprintf(`{"block":{%q:1},"deleted":false}`, blk) {
		t.Fatalf("handle: got %s %v", kv.Value, err)
	}
	a, ok, err := m.Lookup(ctx, first)
	if err != nil || !ok {
		t.Fatalf("lookup %v: %v %v", first, ok, err)
	}
	// Seq is the block's sequence number at the assignment, whatever
	// that was; it must be there.
	if a.Seq == 0 {
		t.Fatalf("lookup: no sequence number in %+v", a)
	}
	want := Allocation{IP: first, Block: blk, BlockOwner: "n1", HandleID: "h0", Attrs: map[string]string{"node": "n1"}, Seq: a.Seq}
	if fmt.Sprint(a) != fmt.Sprint(want) {
		t.Fatalf("lookup: got %+v, want %+v", a, want)
	}
}

func TestClaimStartDependsOnNode(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	p := pool("p", "10.0.0.0/16", 26)
	seen := map[netip.Prefix]string{}
	for i := range 8 {
		node := fmt.Sprintf("n%d", i)
		blk := netip.PrefixFrom(assign(t, m, node, "h"+node, p), 26).Masked()
		if other, ok := seen[blk]; ok {
			t.Fatalf("%s and %s got the same block %v", node, other, blk)
		}
		seen[blk] = node
	}
	// The start is deterministic: a node that gives its block back and
	// asks again lands on the same block.
	ctx := context.Background()
	ip := assign(t, m, "x", "hx", p)
	if err := m.ReleaseByHandle(ctx, "hx"); err != nil {
		t.Fatal(err)
	}
	if err := m.ReleaseNodeBlocks(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if again := assign(t, m, "x", "hx", p); again != ip {
		t.Fatalf("after re-claim: got %v, want %v", again, ip)
	}
}

// TestExhaustionAndBorrowing uses a /28 pool of /30 blocks: 4 blocks of
// 4 addresses.
func TestExhaustionAndBorrowing(t *testing.T) {
	ctx := context.Background()
	p := pool("tiny", "10.9.0.0/28", 30)

	t.Run("fill", func(t *testing.T) {
		m, _ := startTest(t)
		seen := map[netip.Addr]bool{}
		for i := range 16 {
			ip := assign(t, m, "a", fmt.Sprint("h", i), p)
			if seen[ip] || !p.CIDR.Contains(ip) {
				t.Fatalf("address %d: %v duplicate or outside %v", i, ip, p.CIDR)
			}
			seen[ip] = true
		}
		_, err := m.AutoAssign(ctx, AssignArgs{Node: "a", HandleID: "h16", Pools: []Pool{p}})
		if !errors.Is(err, ErrPoolsExhausted) {
			t.Fatalf("17th: got %v, want ErrPoolsExhausted", err)
		}
		for _, want := range []string{"no IPs available in pools: [tiny]", "16 of 16 addresses in use"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("17th: got %q, want it to contain %q", err, want)
			}
		}
		// Another node, borrowing allowed, finds nothing either.
		if _, err := m.AutoAssign(ctx, AssignArgs{Node: "b", HandleID: "hb", Pools: []Pool{p}}); !errors.Is(err, ErrPoolsExhausted) {
			t.Fatalf("node b: got %v, want ErrPoolsExhausted", err)
		}
	})

	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("borrow strict=%v", strict), func(t *testing.T) {
			m, _ := startTest(t)
			if err := m.SetConfig(ctx, Config{StrictAffinity: strict, AutoAllocateBlocks: true}); err != nil {
				t.Fatal(err)
			}
			// 13 addresses: node a claims all four blocks, the last with 3 free.
			for i := range 13 {
				assign(t, m, "a", fmt.Sprint("h", i), p)
			}
			if bs, _ := m.NodeBlocks(ctx, "a"); len(bs) != 4 {
				t.Fatalf("node a holds %v, want all 4 blocks", bs)
			}
			ip, err := m.AutoAssign(ctx, AssignArgs{Node: "b", HandleID: "hb", Pools: []Pool{p}, Attrs: map[string]string{"pod": "x"}})
			if strict {
				if !errors.Is(err, ErrStrictAffinity) || !strings.Contains(err.Error(), "no more free affine blocks and strict affinity enabled") {
					t.Fatalf("got %v %v, want ErrStrictAffinity", ip, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, ok, err := m.Lookup(ctx, ip)
			if err != nil || !ok || !a.Borrowed || a.BlockOwner != "a" || a.Attrs["node"] != "b" || a.Attrs["pod"] != "x" {
				t.Fatalf("borrowed %v: got %+v %v %v", ip, a, ok, err)
			}
			if bs, _ := m.NodeBlocks(ctx, "b"); len(bs) != 0 {
				t.Fatalf("node b holds %v after borrowing, want none", bs)
			}
		})
	}
}

func TestMaxBlocksPerHost(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	if err := m.SetConfig(ctx, Config{StrictAffinity: true, AutoAllocateBlocks: true, MaxBlocksPerHost: 2}); err != nil {
		t.Fatal(err)
	}
	p := pool("p", "10.0.0.0/24", 30)
	for i := range 8 {
		assign(t, m, "a", fmt.Sprint("h", i), p)
	}
	_, err := m.AutoAssign(ctx, AssignArgs{Node: "a", HandleID: "h8", Pools: []Pool{p}})
	if !errors.Is(err, ErrBlockLimit) {
		t.Fatalf("9th: got %v, want ErrBlockLimit", err)
	}
}

func TestAutoAllocateBlocksOff(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.0.0.0/24", 30)
	assign(t, m, "a", "h0", p)
	if err := m.SetConfig(ctx, Config{StrictAffinity: true, AutoAllocateBlocks: false}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 4; i++ {
		assign(t, m, "a", fmt.Sprint("h", i), p)
	}
	if _, err := m.AutoAssign(ctx, AssignArgs{Node: "a", HandleID: "h4", Pools: []Pool{p}}); !errors.Is(err, ErrStrictAffinity) {
		t.Fatalf("5th: got %v, want ErrStrictAffinity", err)
	}
}

func TestPoolPreferenceAndDisabled(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	old := pool("old", "10.1.0.0/24", 26)
	cur := pool("new", "10.2.0.0/24", 26)
	ip := assign(t, m, "a", "h-old", old, cur)
	if !old.CIDR.Contains(ip) {
		t.Fatalf("got %v, want it from the first pool %v", ip, old.CIDR)
	}
	// Migration: disable the old pool. New allocations skip it, even for
	// a node that has a block there with free space.
	old.Disabled = true
	ip2 := assign(t, m, "a", "h-new", old, cur)
	if !cur.CIDR.Contains(ip2) {
		t.Fatalf("got %v, want it from %v (old pool disabled)", ip2, cur.CIDR)
	}
	if a, ok, err := m.Lookup(ctx, ip); err != nil || !ok || a.HandleID != "h-old" {
		t.Fatalf("lookup of %v in the disabled pool: got %+v %v %v", ip, a, ok, err)
	}
	tests := []struct {
		name  string
		pools []Pool
		want  string
	}{
		{"only candidate disabled", []Pool{old}, "no enabled IP pools to assign from: IP pool old (10.1.0.0/24) is disabled"},
		{"all disabled", []Pool{old, {Name: "x", CIDR: netip.MustParsePrefix("10.3.0.0/24"), Disabled: true}}, "IP pools [old x] are all disabled"},
		{"none", nil, "no enabled IP pools to assign from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.AutoAssign(ctx, AssignArgs{Node: "a", HandleID: "h", Pools: tt.pools})
			if !errors.Is(err, ErrNoPools) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrNoPools containing %q", err, tt.want)
			}
		})
	}
	if err := m.AssignIP(ctx, AssignIPArgs{IP: mustAddr("10.1.0.200"), Node: "a", HandleID: "h", Pools: []Pool{old, cur}}); !errors.Is(err, ErrPoolDisabled) {
		t.Fatalf("AssignIP in a disabled pool: got %v, want ErrPoolDisabled", err)
	}

	// The API accepts a disabled pool smaller than its block (Calico
	// does); listed first, it must not stop allocation from the others.
	tiny := pool("tiny", "10.4.0.0/28", 26)
	tiny.Disabled = true
	if ip := assign(t, m, "a", "h-tiny", tiny, cur); !cur.CIDR.Contains(ip) {
		t.Fatalf("with a small disabled pool first: got %v, want it from %v", ip, cur.CIDR)
	}
	if err := m.AssignIP(ctx, AssignIPArgs{IP: mustAddr("10.2.0.100"), Node: "a", HandleID: "h-tiny-ip", Pools: []Pool{tiny, cur}}); err != nil {
		t.Fatalf("AssignIP beside a small disabled pool: %v", err)
	}
	if err := m.AssignIP(ctx, AssignIPArgs{IP: mustAddr("10.4.0.3"), Node: "a", HandleID: "h", Pools: []Pool{tiny, cur}}); !errors.Is(err, ErrPoolDisabled) {
		t.Fatalf("AssignIP in the small disabled pool: got %v, want ErrPoolDisabled", err)
	}
}

func TestAssignIP(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	pools := []Pool{pool("a", "10.1.0.0/16", 26), pool("b", "10.2.0.0/16", 28)}
	args := AssignIPArgs{IP: mustAddr("10.2.3.77"), Node: "n1", HandleID: "pod.n1.x", Attrs: map[string]string{"pod": "x"}, Pools: pools}
	if err := m.AssignIP(ctx, args); err != nil {
		t.Fatal(err)
	}
	// The block did not exist: it is claimed for n1 with pool b's size.
	if bs, err := m.NodeBlocks(ctx, "n1"); err != nil || !slices.Equal(bs, []netip.Prefix{netip.MustParsePrefix("10.2.3.64/28")}) {
		t.Fatalf("node blocks: got %v %v, want [10.2.3.64/28]", bs, err)
	}
	a, ok, err := m.Lookup(ctx, args.IP)
	if err != nil || !ok || a.HandleID != "pod.n1.x" || a.Borrowed || a.Attrs["node"] != "n1" {
		t.Fatalf("lookup: got %+v %v %v", a, ok, err)
	}

	dup := args
	dup.HandleID = "pod.n1.y"
	err = m.AssignIP(ctx, dup)
	if !errors.Is(err, ErrAlreadyAssigned) || err.Error() != "10.2.3.77 is already assigned (handle pod.n1.x)" {
		t.Fatalf("duplicate: got %v, want ErrAlreadyAssigned naming pod.n1.x", err)
	}
	if _, err := m.handles.Get(ctx, "pod.n1.y"); err == nil {
		t.Fatal("refused duplicate left its handle behind")
	}

	out := args
	out.IP = mustAddr("10.3.0.1")
	if err := m.AssignIP(ctx, out); !errors.Is(err, ErrNotInPool) || err.Error() != "10.3.0.1 is not in any IP pool" {
		t.Fatalf("outside: got %v, want ErrNotInPool", err)
	}

	// Another node asking for an address in n1's block borrows it.
	other := args
	other.IP, other.Node, other.HandleID = mustAddr("10.2.3.78"), "n2", "pod.n2.z"
	if err := m.AssignIP(ctx, other); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := m.Lookup(ctx, other.IP); !a.Borrowed || a.BlockOwner != "n1" || a.Attrs["node"] != "n2" {
		t.Fatalf("borrowed: got %+v", a)
	}
	// AutoAssign for n1 continues in its block past the taken addresses.
	if ip := assign(t, m, "n1", "h", pools[1]); ip != mustAddr("10.2.3.64") {
		t.Fatalf("auto-assign after AssignIP: got %v, want 10.2.3.64", ip)
	}
}

func TestHandleSharedAcrossBlocks(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.0.0.0/24", 30)
	for range 6 {
		assign(t, m, "a", "shared", p)
	}
	kv, err := m.handles.Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	var h handle
	json.Unmarshal(kv.Value, &h)
	total := 0
	for _, n := range h.Block {
		total += n
	}
	if len(h.Block) != 2 || total != 6 {
		t.Fatalf("handle: got %s, want 6 addresses in 2 blocks", kv.Value)
	}
	hs, err := m.Handles(ctx)
	if err != nil || len(hs) != 1 || hs[0].ID != "shared" {
		t.Fatalf("handles: got %+v %v", hs, err)
	}
}

// A block write whose answer is lost (a member dying mid-call) may or
// may not have been applied. Applied: the allocation stands and the
// caller gets the address. Not applied: the handle is uncounted and
// nothing is held. Unknown (the block cannot be read either): an error,
// and the handle still holds whatever the write did, so a release by
// handle settles it. In every case ipam check finds nothing leaked.
func TestAssignLostWrite(t *testing.T) {
	p := pool("p", "10.30.0.0/16", 26)
	errLost := errors.New("rpc error: code = Unavailable desc = error reading from server: EOF")
	for _, tt := range []struct {
		name    string
		apply   bool // etcd applied the write
		readErr bool // and the block cannot be read after it
	}{
		{"applied-answer-lost", true, false},
		{"not-applied", false, false},
		{"applied-then-unreadable", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := startTest(t)
			assign(t, m, "n1", "warm", p) // the block exists; the next write is an update
			real := m.updateBlock
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m.updateBlock = func(_ context.Context, name string, value []byte, rev int64) (int64, error) {
				m.updateBlock = real // once
				if tt.apply {
					if _, err := real(context.Background(), name, value, rev); err != nil {
						return 0, err
					}
				}
				if tt.readErr {
					cancel() // the caller's next read fails
				}
				return 0, errLost
			}
			ip, err := m.AutoAssign(ctx, AssignArgs{Node: "n1", HandleID: "pod-x", Pools: []Pool{p}})
			switch {
			case tt.apply && !tt.readErr:
				if err != nil {
					t.Fatalf("AutoAssign: %v, want the address the applied write allocated", err)
				}
				if a, ok, _ := m.Lookup(context.Background(), ip); !ok || a.HandleID != "pod-x" {
					t.Fatalf("%v: lookup %+v (found %v), want held by pod-x", ip, a, ok)
				}
			case !tt.apply:
				if !errors.Is(err, errLost) {
					t.Fatalf("AutoAssign: %v, want the lost write's error", err)
				}
				if _, err := m.handles.Get(context.Background(), "pod-x"); !errors.Is(err, datastore.ErrNotFound) {
					t.Fatalf("handle pod-x after a write that was not applied: %v, want it gone", err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), "outcome unknown") {
					t.Fatalf("AutoAssign: %v, want an error saying the outcome is unknown", err)
				}
			}
			// What the caller does after a failed add: release by handle.
			if err != nil {
				if err := m.ReleaseByHandle(context.Background(), "pod-x"); err != nil && !errors.Is(err, ErrNotAssigned) {
					t.Fatalf("release by handle: %v", err)
				}
			}
			if err := m.ReleaseByHandle(context.Background(), "warm"); err != nil {
				t.Fatal(err)
			}
			allocs, err := m.Allocations(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if tt.apply && !tt.readErr {
				want = 1 // pod-x's address, which the caller now uses
			}
			if len(allocs) != want {
				t.Fatalf("allocations left: %+v, want %d", allocs, want)
			}
		})
	}
}

// TestPendingClaimFinished: a claim that died after creating the block
// but before confirming its affinity (a crash, a lost answer) is finished
// by the node's next allocation, which uses that block: left pending, the
// block would be neither used nor advertised, nor claimable by another.
func TestPendingClaimFinished(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	p := pool("p", "10.20.0.0/24", 28)
	blk := netip.MustParsePrefix("10.20.0.48/28")
	if _, err := m.affinities.Create(ctx, affinityName("n1", blk), encodeAffinity(statePending)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.blocks.Create(ctx, blk.String(), newBlock(blk, "n1", time.Now()).encode()); err != nil {
		t.Fatal(err)
	}
	if ip := assign(t, m, "n1", "h1", p); !blk.Contains(ip) {
		t.Fatalf("got %v, want an address of the block the dead claim left, %v", ip, blk)
	}
	if bs, err := m.NodeBlocks(ctx, "n1"); err != nil || !slices.Equal(bs, []netip.Prefix{blk}) {
		t.Fatalf("node blocks: got %v %v, want [%v] confirmed", bs, err, blk)
	}
	// A pending affinity for a block another node holds goes away.
	other := netip.MustParsePrefix("10.20.0.64/28")
	if _, err := m.blocks.Create(ctx, other.String(), newBlock(other, "n2", time.Now()).encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.affinities.Create(ctx, affinityName("n3", other), encodeAffinity(statePending)); err != nil {
		t.Fatal(err)
	}
	if ip := assign(t, m, "n3", "h3", p); other.Contains(ip) {
		t.Fatalf("n3 got %v from n2's block", ip)
	}
	if _, err := m.affinities.Get(ctx, affinityName("n3", other)); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("n3's pending affinity for n2's block: got %v, want it deleted", err)
	}
}
