package ipam

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"podnet/api"
	"podnet/selector"
)

// zonePools are three pools as Calico's topology example sets them up:
// one per zone, and a LoadBalancer-only pool first in preference order.
func zonePools(t *testing.T) []Pool {
	t.Helper()
	lb := api.NewIPPool("lb")
	lb.Spec.CIDR, lb.Spec.AllowedUses = "10.9.0.0/24", []string{api.UseLoadBalancer}
	west := api.NewIPPool("west")
	west.Spec.CIDR, west.Spec.NodeSelector = "10.1.0.0/24", "zone == 'west'"
	east := api.NewIPPool("east")
	east.Spec.CIDR, east.Spec.NodeSelector = "10.2.0.0/24", `zone in {"east", "north"}`
	pools, err := PoolsFromResources([]api.Resource{lb, west, east})
	if err != nil {
		t.Fatal(err)
	}
	return pools
}

func inPool(ip netip.Addr, pools []Pool) string {
	for _, p := range pools {
		if p.CIDR.Contains(ip) {
			return p.Name
		}
	}
	return "none"
}

// TestAutoAssignNodeSelector: a node gets addresses only from the pools
// whose nodeSelector selects it; with none, the error says why, pool by
// pool.
func TestAutoAssignNodeSelector(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	pools := zonePools(t)
	tests := []struct {
		node   string
		labels map[string]string
		want   string // pool name, or an error substring
	}{
		{"w1", map[string]string{"zone": "west"}, "west"},
		{"e1", map[string]string{"zone": "east", "rack": "r1"}, "east"},
		{"n1", map[string]string{"zone": "north"}, "east"},
		{"s1", map[string]string{"zone": "south"}, "no enabled IP pools to assign from: none serves Workload addresses on node s1 (labels: zone=south): " +
			"lb (10.9.0.0/24) allows [LoadBalancer], not Workload; " +
			`west (10.1.0.0/24) has nodeSelector zone == "west", which does not select the node; ` +
			`east (10.2.0.0/24) has nodeSelector zone in {"east", "north"}, which does not select the node`},
		{"bare", nil, "none serves Workload addresses on node bare (labels: none)"},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			ip, err := m.AutoAssign(ctx, AssignArgs{Node: tt.node, HandleID: "pod." + tt.node, Pools: pools, NodeLabels: tt.labels})
			if strings.Contains(tt.want, " ") {
				if !errors.Is(err, ErrNoPools) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("got %v, %v; want ErrNoPools with %q", ip, err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := inPool(ip, pools); got != tt.want {
				t.Fatalf("got %v from pool %s, want pool %s", ip, got, tt.want)
			}
		})
	}

	// The case: every other pool disabled, the node labelled for
	// the one left.
	only := []Pool{pools[1], pools[2]}
	only[1].Disabled = true
	ip, err := m.AutoAssign(ctx, AssignArgs{Node: "w2", HandleID: "pod.w2", Pools: only, NodeLabels: map[string]string{"zone": "west"}})
	if err != nil || !pools[1].CIDR.Contains(ip) {
		t.Fatalf("got %v, %v; want an address of west", ip, err)
	}

	// Naming a pool (pod add --pool) bypasses its selector, as in Calico,
	// but not its allowed uses.
	ip, err = m.AutoAssign(ctx, AssignArgs{Node: "s1", HandleID: "pod.s1", Pools: pools[1:2], NodeLabels: map[string]string{"zone": "south"}, Requested: true})
	if err != nil || !pools[1].CIDR.Contains(ip) {
		t.Fatalf("requested pool: got %v, %v; want an address of west", ip, err)
	}
	_, err = m.AutoAssign(ctx, AssignArgs{Node: "s1", HandleID: "pod.s1b", Pools: pools[:1], Requested: true})
	if !errors.Is(err, ErrNoPools) || !strings.Contains(err.Error(), "lb (10.9.0.0/24) allows [LoadBalancer], not Workload") {
		t.Fatalf("requested LoadBalancer pool: got %v", err)
	}
}

// TestAutoAssignSelectorChange: once a pool stops selecting a node, the
// node no longer takes addresses from it, not even from a block it
// already holds there, and does not borrow from it either.
func TestAutoAssignSelectorChange(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	a := Pool{Name: "a", CIDR: netip.MustParsePrefix("10.1.0.0/26"), BlockSize: 26}
	b := Pool{Name: "b", CIDR: netip.MustParsePrefix("10.2.0.0/26"), BlockSize: 26}
	west := map[string]string{"zone": "west"}
	ip := assign(t, m, "w1", "h1", a, b)
	if !a.CIDR.Contains(ip) {
		t.Fatalf("got %v, want it from a", ip)
	}
	a.NodeSelector = selector.MustParse("zone == 'east'")
	ip, err := m.AutoAssign(ctx, AssignArgs{Node: "w1", HandleID: "h2", Pools: []Pool{a, b}, NodeLabels: west})
	if err != nil || !b.CIDR.Contains(ip) {
		t.Fatalf("got %v, %v; want it from b (a no longer selects the node, though its block there has room)", ip, err)
	}
	// w2 finds b's only block taken by w1 and borrows: from b, never
	// from a, which has room but does not select it.
	ip, err = m.AutoAssign(ctx, AssignArgs{Node: "w2", HandleID: "h3", Pools: []Pool{a, b}, NodeLabels: west})
	if err != nil || !b.CIDR.Contains(ip) {
		t.Fatalf("borrow: got %v, %v; want it from b", ip, err)
	}
}

// TestAutoAssignUses: pods only get addresses from pools that allow
// Workload; tunnel addresses only from pools that allow Tunnel; manual
// pools only when named.
func TestAutoAssignUses(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	tunnel := Pool{Name: "tunnel", CIDR: netip.MustParsePrefix("10.5.0.0/24"), AllowedUses: []Use{UseTunnel}}
	lb := Pool{Name: "lb", CIDR: netip.MustParsePrefix("10.6.0.0/24"), AllowedUses: []Use{UseLoadBalancer}}
	manual := Pool{Name: "manual", CIDR: netip.MustParsePrefix("10.7.0.0/24"), Manual: true}
	pods := Pool{Name: "pods", CIDR: netip.MustParsePrefix("10.8.0.0/24"), AllowedUses: []Use{UseWorkload}}
	all := []Pool{tunnel, lb, manual, pods}

	ip, err := m.AutoAssign(ctx, AssignArgs{Node: "n", HandleID: "pod", Pools: all})
	if err != nil || !pods.CIDR.Contains(ip) {
		t.Fatalf("pod: got %v, %v; want it from pods", ip, err)
	}
	ip, err = m.AutoAssign(ctx, AssignArgs{Node: "n", HandleID: "ipip-tunnel-addr-n", Pools: all, Use: UseTunnel})
	if err != nil || !tunnel.CIDR.Contains(ip) {
		t.Fatalf("tunnel: got %v, %v; want it from tunnel", ip, err)
	}
	ip, err = m.AutoAssign(ctx, AssignArgs{Node: "n", HandleID: "pod2", Pools: []Pool{manual}, Requested: true})
	if err != nil || !manual.CIDR.Contains(ip) {
		t.Fatalf("named manual pool: got %v, %v", ip, err)
	}
	_, err = m.AutoAssign(ctx, AssignArgs{Node: "n", HandleID: "pod3", Pools: []Pool{tunnel, lb, manual}})
	want := "none serves Workload addresses on node n (labels: none): tunnel (10.5.0.0/24) allows [Tunnel], not Workload; " +
		"lb (10.6.0.0/24) allows [LoadBalancer], not Workload; manual (10.7.0.0/24) is for manual assignment only (assignmentMode Manual; name it to use it)"
	if !errors.Is(err, ErrNoPools) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
	// A given address (pod add --ip) obeys allowedUses too.
	err = m.AssignIP(ctx, AssignIPArgs{IP: netip.MustParseAddr("10.6.0.9"), Node: "n", HandleID: "pod4", Pools: all, Use: UseWorkload})
	if !errors.Is(err, ErrPoolUse) || !strings.Contains(err.Error(), "lb (10.6.0.0/24) allows [LoadBalancer], not Workload") {
		t.Fatalf("AssignIP in a LoadBalancer pool: got %v, want ErrPoolUse naming the pool", err)
	}
	// Nothing was written for the refused requests.
	for _, h := range []string{"pod3", "pod4"} {
		if _, err := m.handles.Get(ctx, h); err == nil {
			t.Fatalf("handle %s exists after a refused assignment", h)
		}
	}
	// A pod's own address, lost by IPAM, comes back from its pool though
	// the pool has been disabled since.
	disabled := pods
	disabled.Disabled = true
	again := []Pool{tunnel, lb, manual, disabled}
	lost := netip.MustParseAddr("10.8.0.77")
	if err := m.AssignIP(ctx, AssignIPArgs{IP: lost, Node: "n", HandleID: "pod5", Pools: again, Use: UseWorkload}); !errors.Is(err, ErrPoolDisabled) {
		t.Fatalf("new address in a disabled pool: got %v, want ErrPoolDisabled", err)
	}
	if err := m.AssignIP(ctx, AssignIPArgs{IP: lost, Node: "n", HandleID: "pod5", Pools: again, Use: UseWorkload, Restore: true}); err != nil {
		t.Fatalf("restoring a pod's address in a disabled pool: %v", err)
	}
}

// TestFromIPPool: an IPPool resource as IPAM sees it, defaults applied.
func TestFromIPPool(t *testing.T) {
	rs, err := api.Decode(strings.NewReader(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack1}
spec: {cidr: 10.20.0.0/16, blockSize: 28, nodeSelector: "rack == 'r1' || !has(rack)", allowedUses: [Tunnel], assignmentMode: Manual, disabled: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: plain}
spec: {cidr: 10.30.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: six}
spec: {cidr: "fd00::/48"}
`))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := PoolsFromResources(rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 {
		t.Fatalf("got %d pools, want 2 (IPv6 left out)", len(pools))
	}
	r := pools[0]
	if r.Name != "rack1" || r.CIDR.String() != "10.20.0.0/16" || r.BlockSize != 28 || !r.Disabled || !r.Manual ||
		len(r.AllowedUses) != 1 || r.AllowedUses[0] != UseTunnel || r.NodeSelector.String() != `rack == "r1" || !has(rack)` {
		t.Fatalf("rack1: got %+v", r)
	}
	if !r.selects(map[string]string{"rack": "r1"}) || !r.selects(nil) || r.selects(map[string]string{"rack": "r2"}) {
		t.Fatal("rack1 selector evaluated wrongly")
	}
	p := pools[1]
	if p.BlockSize != 26 || p.Manual || p.Disabled || !p.allows(UseWorkload) || !p.allows(UseTunnel) || p.allows(UseLoadBalancer) || !p.selects(nil) {
		t.Fatalf("plain: got %+v", p)
	}
	bad := api.NewIPPool("bad")
	bad.Spec.CIDR, bad.Spec.NodeSelector = "10.40.0.0/16", "zone = 'x'"
	if _, err := FromIPPool(bad); err == nil || !strings.Contains(err.Error(), "IP pool bad: nodeSelector: invalid selector at position 6") {
		t.Fatalf("bad selector: got %v", err)
	}
}
