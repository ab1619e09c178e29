package routing

import (
	"net/netip"
	"testing"

	"podnet/api"
	"podnet/router"
	"podnet/router/bgp"
)

func TestImportFilter(t *testing.T) {
	const (
		mesh = "10.0.0.2" // another node, a mesh peer
		tor  = "10.0.0.254"
	)
	im := Import{
		Pools: []*api.IPPool{
			pool("ipip", "192.168.0.0/16", api.EncapAlways, api.EncapNever, true),
			pool("plain", "172.20.0.0/16", api.EncapNever, api.EncapNever, true),
			pool("vx", "172.30.0.0/16", api.EncapNever, api.EncapAlways, true),
		},
		OwnBlocks: []netip.Prefix{prefix("192.168.9.0/26")},
		PodAddrs:  []netip.Addr{addr("192.168.9.1"), addr("192.168.200.7")}, // the second is borrowed
		Subnet:    prefix("10.0.0.1/24"),
		NodeAddrs: []netip.Addr{addr(mesh), addr("10.0.0.3")},
		Explicit:  map[netip.Addr]bool{addr(tor): true},
		// Borrowed by the mesh peer: from this node's block, and from
		// 10.0.0.3's.
		Lent: map[netip.Addr]netip.Addr{addr("192.168.9.5"): addr(mesh), addr("192.168.6.9"): addr(mesh)},
		Owners: map[netip.Prefix]netip.Addr{
			prefix("192.168.5.0/26"): addr(mesh),
			prefix("192.168.6.0/26"): addr("10.0.0.3"),
			prefix("192.168.7.0/26"): {}, // its node has no address
			prefix("172.20.1.0/26"):  addr(mesh),
		},
	}
	tests := []struct {
		prefix, nextHop, peer string
		reason                string
	}{
		{"192.168.5.0/26", mesh, mesh, ""},
		{"192.168.6.0/26", "10.0.0.3", tor, ""}, // reflected: the next hop is a node
		{"172.20.1.0/26", "10.0.0.99", tor, ""}, // unencapsulated pool: any next hop
		{"172.30.1.0/26", mesh, mesh, ""},
		{"203.0.113.0/24", tor, tor, ""}, // outside the pools, from a BGPPeer
		{"0.0.0.0/0", tor, tor, RejectDefault},
		{"0.0.0.0/0", mesh, mesh, RejectDefault},
		{"192.168.9.0/26", mesh, mesh, RejectOwnBlock},
		{"192.168.9.0/24", mesh, mesh, RejectOwnBlock}, // covers the block
		{"192.168.9.8/29", mesh, mesh, RejectOwnBlock}, // inside the block
		{"192.168.9.1/32", tor, tor, RejectOwnBlock},   // a local pod
		{"192.168.9.5/32", mesh, mesh, ""},             // lent to the mesh peer
		{"192.168.9.5/32", mesh, "10.0.0.3", ""},       // ... reflected
		{"192.168.9.5/32", "10.0.0.3", mesh, RejectLentElsewhere},
		{"192.168.9.4/31", mesh, mesh, RejectOwnBlock},   // more than the lent address
		{"192.168.9.6/32", mesh, mesh, RejectOwnBlock},   // lent to nobody
		{"192.168.200.7/32", mesh, mesh, RejectLocalPod}, // a borrowed local pod
		{"192.168.200.0/26", mesh, mesh, ""},             // the block it was borrowed from
		{"203.0.113.0/24", mesh, mesh, RejectOutsidePools},
		{"0.0.0.0/1", "10.0.0.3", tor, RejectOutsidePools}, // outside, to a node: no node announces it
		{"172.16.0.0/12", tor, tor, RejectCoversPool},
		{"172.20.0.0/15", tor, tor, RejectCoversPool},
		{"192.168.5.0/26", "10.0.0.99", tor, RejectUnknownNode}, // IP-in-IP to a stranger
		{"172.30.1.0/26", "10.0.0.99", tor, RejectUnknownNode},  // VXLAN to a stranger
		{"192.168.5.0/26", "10.0.0.1", mesh, RejectSelfNextHop},
		// Another node's block, from a node that is not its owner.
		{"192.168.5.0/26", "10.0.0.3", "10.0.0.3", RejectOthersBlock},
		{"192.168.5.0/26", "10.0.0.3", tor, RejectOthersBlock},        // reflected
		{"192.168.5.8/29", "10.0.0.3", "10.0.0.3", RejectOthersBlock}, // inside it
		{"192.168.4.0/22", mesh, mesh, RejectOthersBlock},             // covers 10.0.0.3's too
		{"192.168.4.0/23", mesh, mesh, ""},                            // covers only its own
		{"192.168.6.9/32", mesh, mesh, ""},                            // lent to it from 10.0.0.3's block
		{"192.168.6.9/32", "10.0.0.3", "10.0.0.3", RejectLentElsewhere},
		{"192.168.6.10/32", mesh, mesh, RejectOthersBlock},
		{"192.168.7.0/26", mesh, mesh, RejectOthersBlock},
		{"192.168.8.0/26", "10.0.0.3", "10.0.0.3", ""},                // a block not read yet
		{"172.20.1.0/26", "10.0.0.99", "10.0.0.3", RejectOthersBlock}, // a node's stranger next hop
	}
	for _, tt := range tests {
		p := bgp.Path{Prefix: prefix(tt.prefix), NextHop: addr(tt.nextHop), Peer: addr(tt.peer)}
		acc, rej := im.Filter([]bgp.Path{p})
		got := ""
		if len(rej) == 1 {
			got = rej[0].Reason
		}
		if got != tt.reason || len(acc)+len(rej) != 1 {
			t.Errorf("%s via %s from %s: refused for %q (accepted %d), want %q", tt.prefix, tt.nextHop, tt.peer, got, len(acc), tt.reason)
		}
	}
	// From a reflector (explicit: tor here): what it vouches for itself
	// (a ToR's routes: another rack's block, the outside) is taken, and
	// what it reflects from a client (ORIGINATOR_ID set) is judged as
	// the client's.
	reflected := []struct {
		prefix, nextHop, originator, reason string
	}{
		{"172.20.1.0/26", "10.0.0.99", "", ""},
		{"172.20.1.0/26", "10.0.0.99", "10.0.0.3", RejectOthersBlock},
		{"203.0.113.0/24", tor, "10.0.0.3", RejectOutsidePools},
		{"0.0.0.0/1", "10.0.0.77", "10.0.0.3", RejectOutsidePools},
		{"192.168.5.0/26", mesh, mesh, ""}, // a client's own block
	}
	for _, tt := range reflected {
		p := bgp.Path{Prefix: prefix(tt.prefix), NextHop: addr(tt.nextHop), Peer: addr(tor)}
		if tt.originator != "" {
			p.Originator = addr(tt.originator)
		}
		acc, rej := im.Filter([]bgp.Path{p})
		got := ""
		if len(rej) == 1 {
			got = rej[0].Reason
		}
		if got != tt.reason || len(acc)+len(rej) != 1 {
			t.Errorf("%s via %s from the reflector, originator %q: refused for %q, want %q", tt.prefix, tt.nextHop, tt.originator, got, tt.reason)
		}
	}
	// Without owners (a view from the cache) blocks are not checked.
	im.Owners = nil
	p := bgp.Path{Prefix: prefix("192.168.5.0/26"), NextHop: addr("10.0.0.3"), Peer: addr("10.0.0.3")}
	if _, rej := im.Filter([]bgp.Path{p}); len(rej) != 0 {
		t.Errorf("without owners: refused %+v", rej)
	}
}

func TestImportMaxPrefixes(t *testing.T) {
	im := Import{
		Pools:       []*api.IPPool{pool("p", "192.168.0.0/16", api.EncapNever, api.EncapNever, true)},
		MaxPrefixes: 3,
	}
	var paths []bgp.Path
	for i := range 5 {
		for _, peer := range []string{"10.0.0.2", "10.0.0.3"} {
			pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)
			paths = append(paths, bgp.Path{Prefix: pfx, NextHop: addr(peer), Peer: addr(peer)})
		}
	}
	acc, rej := im.Filter(paths)
	count := map[netip.Addr]int{}
	for _, p := range acc {
		count[p.Peer]++
	}
	if count[addr("10.0.0.2")] != 3 || count[addr("10.0.0.3")] != 3 || len(rej) != 4 {
		t.Fatalf("accepted per peer %v, %d refused; want 3 each, 4 refused", count, len(rej))
	}
	for _, r := range rej {
		if r.Reason != RejectTooManyPrefix || r.Path.Prefix.Addr().As4()[2] < 3 {
			t.Errorf("refused %v for %q; want the prefixes after the third for %q", r.Path.Prefix, r.Reason, RejectTooManyPrefix)
		}
	}

	// The default limit applies when none is set.
	im.MaxPrefixes = 0
	if acc, _ := im.Filter(paths); len(acc) != len(paths) {
		t.Fatalf("default limit: accepted %d of %d", len(acc), len(paths))
	}

	// Through a route reflector (one peer) each client has a budget of
	// its own: the flooding one loses its excess, the other nothing.
	im.MaxPrefixes = 3
	rr := addr("10.0.0.9")
	paths = paths[:0]
	for i := range 5 {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)
		paths = append(paths, bgp.Path{Prefix: pfx, NextHop: addr("10.0.0.2"), Peer: rr, Originator: addr("10.0.0.2")})
	}
	for i := range 2 {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(100 + i), 0}), 24)
		paths = append(paths, bgp.Path{Prefix: pfx, NextHop: addr("10.0.0.3"), Peer: rr, Originator: addr("10.0.0.3")})
	}
	acc, rej = im.Filter(paths)
	clear(count)
	for _, p := range acc {
		count[p.Originator]++
	}
	if count[addr("10.0.0.2")] != 3 || count[addr("10.0.0.3")] != 2 || len(rej) != 2 {
		t.Fatalf("through a reflector: accepted per client %v, %d refused; want 3 and 2, 2 refused", count, len(rej))
	}
}

// TestImportFallsBackOnNextPath: BGP's best path for a prefix (here an
// explicit peer's, with a tunnel next hop that is no node) is refused;
// the next path for the prefix, the owner's own, becomes the route.
func TestImportFallsBackOnNextPath(t *testing.T) {
	const owner, tor = "10.0.0.2", "10.0.0.254"
	im := Import{
		Pools:     []*api.IPPool{pool("ipip", "192.168.0.0/16", api.EncapAlways, api.EncapNever, true)},
		Subnet:    prefix("10.0.0.1/24"),
		NodeAddrs: []netip.Addr{addr(owner)},
		Explicit:  map[netip.Addr]bool{addr(tor): true},
	}
	paths := []bgp.Path{
		{Prefix: prefix("192.168.5.0/26"), NextHop: addr(tor), Peer: addr(tor), Best: true},
		{Prefix: prefix("192.168.5.0/26"), NextHop: addr(owner), Peer: addr(owner)},
	}
	acc, rej := im.Filter(paths)
	if len(rej) != 1 || rej[0].Path.Peer != addr(tor) || rej[0].Reason != RejectUnknownNode {
		t.Fatalf("refused %+v, want the ToR's path for %q", rej, RejectUnknownNode)
	}
	routes := RemoteRoutes(acc, im.Pools, im.Subnet, nil, nil, "podnet0")
	if len(routes) != 1 || routes[0].NextHop != addr(owner) || routes[0].Encap != router.EncapIPIP {
		t.Fatalf("routes %+v, want 192.168.5.0/26 over IP-in-IP via %s", routes, owner)
	}
}
