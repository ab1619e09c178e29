package routing

import (
	"net/netip"
	"slices"
	"testing"

	"podnet/api"
	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
	"podnet/router/bgp"
)

func TestEncapsulation(t *testing.T) {
	subnet := prefix("10.0.0.1/24")
	same, other := addr("10.0.0.2"), addr("10.0.1.2")
	const (
		never = api.EncapNever
		alw   = api.EncapAlways
		cross = api.EncapCrossSubnet
	)
	tests := []struct {
		name        string
		ipip, vxlan api.EncapMode
		nextHop     netip.Addr
		vtepKnown   bool
		want        router.Encap
	}{
		{"never", never, never, other, true, router.EncapNone},
		{"empty modes read as never", "", "", other, true, router.EncapNone},
		{"ipip always, same subnet", alw, never, same, true, router.EncapIPIP},
		{"ipip cross-subnet, same subnet", cross, never, same, true, router.EncapNone},
		{"ipip cross-subnet, other subnet", cross, never, other, true, router.EncapIPIP},
		{"vxlan always", never, alw, same, true, router.EncapVXLAN},
		{"vxlan always, VTEP unknown", never, alw, same, false, router.EncapNone},
		{"vxlan cross-subnet, same subnet", never, cross, same, true, router.EncapNone},
		{"vxlan cross-subnet, other subnet", never, cross, other, true, router.EncapVXLAN},
		// Validation forbids both on one pool; if both are set VXLAN wins
		// and IP-in-IP is the fallback without a VTEP.
		{"both, VTEP known", alw, alw, same, true, router.EncapVXLAN},
		{"both, VTEP unknown", alw, alw, same, false, router.EncapIPIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pool("p", "192.168.0.0/16", tt.ipip, tt.vxlan, false)
			if got := Encapsulation(p, tt.nextHop, subnet, tt.vtepKnown); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	if got := Encapsulation(nil, other, subnet, true); got != router.EncapNone {
		t.Fatalf("no pool: got %v, want none", got)
	}
}

func TestRemoteRoutes(t *testing.T) {
	pools := []*api.IPPool{
		pool("ipip", "192.168.0.0/16", api.EncapAlways, api.EncapNever, false),
		pool("vx", "192.168.128.0/17", api.EncapNever, api.EncapCrossSubnet, false), // more specific: wins
		pool("plain", "172.16.0.0/16", api.EncapNever, api.EncapNever, false),
	}
	subnet := prefix("10.0.0.1/24")
	mac := packet.MAC{0x66, 1, 2, 3, 4, 5}
	vteps := map[netip.Addr]packet.MAC{addr("10.0.1.2"): mac}
	peer := addr("10.0.0.2")
	path := func(p, nh string) bgp.Path { return bgp.Path{Prefix: prefix(p), NextHop: addr(nh), Peer: peer} }
	paths := []bgp.Path{
		path("192.168.1.0/26", "10.0.0.2"),   // ipip pool: always
		path("192.168.1.0/26", "10.0.0.3"),   // same prefix again: first wins
		path("192.168.200.0/26", "10.0.1.2"), // vxlan pool, other subnet, VTEP known
		path("192.168.201.0/26", "10.0.0.2"), // vxlan pool, same subnet: kernel
		path("172.16.5.0/24", "10.0.1.9"),    // pool without encapsulation
		path("203.0.113.0/24", "10.0.0.254"), // outside the pools (a ToR's)
		path("192.168.9.0/26", "10.0.0.2"),   // this node's block
		path("192.168.10.0/26", "10.0.0.1"),  // next hop is this node
		{Prefix: prefix("2001:db8::/64"), NextHop: addr("10.0.0.2"), Peer: peer},
		path("192.168.1.7/26", "10.0.0.2"), // unmasked: masked, then a duplicate
	}
	got := RemoteRoutes(paths, pools, subnet, []netip.Prefix{prefix("192.168.9.0/26")}, vteps, "podnet0")
	src := "bgp " + peer.String()
	want := []router.Route{
		{Prefix: prefix("192.168.1.0/26"), Kind: router.KindRemote, Encap: router.EncapIPIP, Dev: DevIPIP, NextHop: addr("10.0.0.2"), Source: src},
		{Prefix: prefix("192.168.200.0/26"), Kind: router.KindRemote, Encap: router.EncapVXLAN, Dev: DevVXLAN, NextHop: addr("10.0.1.2"), NextHopMAC: mac, Source: src},
		{Prefix: prefix("192.168.201.0/26"), Kind: router.KindHost, Encap: router.EncapNone, Dev: "podnet0", NextHop: addr("10.0.0.2"), Source: src},
		{Prefix: prefix("172.16.5.0/24"), Kind: router.KindHost, Encap: router.EncapNone, Dev: "podnet0", NextHop: addr("10.0.1.9"), Source: src},
		{Prefix: prefix("203.0.113.0/24"), Kind: router.KindHost, Encap: router.EncapNone, Dev: "podnet0", NextHop: addr("10.0.0.254"), Source: src},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
}

func TestPoolOf(t *testing.T) {
	pools := []*api.IPPool{
		pool("wide", "10.0.0.0/8", "", "", false),
		pool("narrow", "10.1.0.0/16", "", "", false),
		pool("bad", "not a cidr", "", "", false),
	}
	tests := []struct {
		pfx  string
		want string
	}{
		{"10.1.2.0/26", "narrow"},
		{"10.2.0.0/26", "wide"},
		{"10.0.0.0/7", ""}, // wider than every pool
		{"10.1.0.0/15", "wide"},
		{"192.168.0.0/24", ""},
	}
	for _, tt := range tests {
		got := ""
		if p := PoolOf(pools, prefix(tt.pfx)); p != nil {
			got = p.Name
		}
		if got != tt.want {
			t.Errorf("PoolOf(%s): got %q, want %q", tt.pfx, got, tt.want)
		}
	}
}

func TestVTEPMACs(t *testing.T) {
	set := node("w1", "10.0.0.1/24")
	set.Spec.VXLANTunnelMACAddr = "66:00:00:00:00:01"
	derived := node("w2", "10.0.0.2/24")
	bad := node("w3", "10.0.0.3/24")
	bad.Spec.VXLANTunnelMACAddr = "not a mac"
	got := VTEPMACs([]*api.Node{set, derived, bad, node("w4", "")})
	want := map[netip.Addr]packet.MAC{
		addr("10.0.0.1"): {0x66, 0, 0, 0, 0, 1},
		addr("10.0.0.2"): encap.VTEPMAC("w2"),
		addr("10.0.0.3"): encap.VTEPMAC("w3"),
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for a, m := range want {
		if got[a] != m {
			t.Errorf("%s: got %v, want %v", a, got[a], m)
		}
	}
}

func TestEncapOverhead(t *testing.T) {
	tests := []struct {
		name  string
		pools []*api.IPPool
		want  int
	}{
		{"no pools", nil, 0},
		{"never", []*api.IPPool{pool("a", "10.0.0.0/16", api.EncapNever, "", false)}, 0},
		{"ipip", []*api.IPPool{pool("a", "10.0.0.0/16", api.EncapCrossSubnet, "", false)}, encap.IPIPOverhead},
		{"vxlan", []*api.IPPool{pool("a", "10.0.0.0/16", "", api.EncapAlways, false)}, encap.VXLANOverhead},
		{"the most of any pool", []*api.IPPool{
			pool("a", "10.0.0.0/16", api.EncapAlways, "", false),
			pool("b", "10.1.0.0/16", "", api.EncapCrossSubnet, false),
		}, encap.VXLANOverhead},
	}
	for _, tt := range tests {
		if got := EncapOverhead(tt.pools); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestEncapsInUse(t *testing.T) {
	disabledVXLAN := pool("b", "10.1.0.0/16", "", api.EncapCrossSubnet, false)
	disabledVXLAN.Spec.Disabled = true // its pods still route over VXLAN
	tests := []struct {
		name        string
		pools       []*api.IPPool
		ipip, vxlan bool
	}{
		{"no pools", nil, false, false},
		{"never", []*api.IPPool{pool("a", "10.0.0.0/16", api.EncapNever, api.EncapNever, false)}, false, false},
		{"ipip cross-subnet", []*api.IPPool{pool("a", "10.0.0.0/16", api.EncapCrossSubnet, "", false)}, true, false},
		{"ipip and a disabled vxlan pool", []*api.IPPool{pool("a", "10.0.0.0/16", api.EncapAlways, "", false), disabledVXLAN}, true, true},
	}
	for _, tt := range tests {
		if ipip, vxlan := EncapsInUse(tt.pools); ipip != tt.ipip || vxlan != tt.vxlan {
			t.Errorf("%s: got ipip %v vxlan %v, want %v %v", tt.name, ipip, vxlan, tt.ipip, tt.vxlan)
		}
	}
}

func TestNATPools(t *testing.T) {
	pools := []*api.IPPool{
		pool("nat", "192.168.0.0/16", "", "", true),
		pool("nonat", "10.10.0.0/16", "", "", false),
		pool("bad", "nope", "", "", true),
	}
	pools[1].Spec.Disabled = true // disabled pools are still inside the cluster
	cluster, allowed := NATPools(pools)
	if want := []netip.Prefix{prefix("192.168.0.0/16"), prefix("10.10.0.0/16")}; !slices.Equal(cluster, want) {
		t.Errorf("cluster: got %v, want %v", cluster, want)
	}
	if want := []netip.Prefix{prefix("192.168.0.0/16")}; !slices.Equal(allowed, want) {
		t.Errorf("allowed: got %v, want %v", allowed, want)
	}
}

func TestPodMTU(t *testing.T) {
	for _, tc := range []struct{ mtu, overhead, want int }{
		{1500, encap.IPIPOverhead, 1480},
		{1500, encap.VXLANOverhead, 1450},
		{9000, encap.VXLANOverhead, 8950},
		// Never below IPv4's minimum: the underlay's is kept.
		{626, encap.VXLANOverhead, 626},
		{627, encap.VXLANOverhead, 577},
	} {
		if got := PodMTU(tc.mtu, tc.overhead); got != tc.want {
			t.Errorf("PodMTU(%d, %d) = %d, want %d", tc.mtu, tc.overhead, got, tc.want)
		}
	}
}
