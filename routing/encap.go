package routing

import (
	"net/netip"

	"podnet/api"
	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
	"podnet/router/bgp"
)

// Device names that routes show for people (router.Route.Dev).
const (
	DevIPIP  = "ipip"
	DevVXLAN = "vxlan"
	DevNAT   = "nat"
)

// Encapsulation chooses how traffic to a prefix of pool, learned with
// next hop nextHop, leaves a node on subnet (its underlay address and
// prefix length). A pool's mode Always encapsulates; CrossSubnet only when
// nextHop is outside subnet; Never does not. VXLAN needs the next hop's
// VTEP MAC (vtepKnown), else it falls back to IP-in-IP if the pool allows
// that, else to the kernel. EncapNone (and pool nil: a prefix outside the
// pools, e.g. from a ToR) means the node's kernel routes the packet on the
// underlay.
func Encapsulation(pool *api.IPPool, nextHop netip.Addr, subnet netip.Prefix, vtepKnown bool) router.Encap {
	if pool == nil {
		return router.EncapNone
	}
	crossSubnet := !subnet.Contains(nextHop)
	uses := func(m api.EncapMode) bool {
		return m == api.EncapAlways || (m == api.EncapCrossSubnet && crossSubnet)
	}
	switch {
	case uses(pool.Spec.VXLANMode) && vtepKnown:
		return router.EncapVXLAN
	case uses(pool.Spec.IPIPMode):
		return router.EncapIPIP
	}
	return router.EncapNone
}

// RemoteRoutes turns learned paths into routes for the switch: KindRemote
// with the encapsulation Encapsulation picks, or KindHost (through hostDev
// to the node's kernel) when there is none. Paths for own (this node's
// blocks), for non-IPv4 prefixes and with this node as next hop are
// skipped; of several paths for one prefix the first wins.
func RemoteRoutes(paths []bgp.Path, pools []*api.IPPool, subnet netip.Prefix, own []netip.Prefix, vteps map[netip.Addr]packet.MAC, hostDev string) []router.Route {
	var out []router.Route
	seen := map[netip.Prefix]bool{}
	for _, p := range own {
		seen[p] = true
	}
	for _, path := range paths {
		pfx := path.Prefix.Masked()
		if seen[pfx] || !pfx.Addr().Is4() || path.NextHop == subnet.Addr() {
			continue
		}
		seen[pfx] = true
		r := router.Route{Prefix: pfx, NextHop: path.NextHop, Source: "bgp " + path.Peer.String()}
		mac, known := vteps[path.NextHop]
		switch r.Encap = Encapsulation(PoolOf(pools, pfx), path.NextHop, subnet, known); r.Encap {
		case router.EncapVXLAN:
			r.Kind, r.Dev, r.NextHopMAC = router.KindRemote, DevVXLAN, mac
		case router.EncapIPIP:
			r.Kind, r.Dev = router.KindRemote, DevIPIP
		default:
			r.Kind, r.Dev = router.KindHost, hostDev
		}
		out = append(out, r)
	}
	return out
}

// PoolOf returns the most specific pool whose CIDR holds all of pfx; nil
// when none does.
func PoolOf(pools []*api.IPPool, pfx netip.Prefix) *api.IPPool {
	var best *api.IPPool
	bestBits := -1
	for _, p := range pools {
		c, err := p.Prefix()
		if err != nil || !c.Contains(pfx.Addr()) || c.Bits() > pfx.Bits() {
			continue
		}
		if c.Bits() > bestBits {
			best, bestBits = p, c.Bits()
		}
	}
	return best
}

// VTEPMACs maps each node's address to its VXLAN MAC: the Node's
// vxlanTunnelMACAddr, else the one derived from its name.
func VTEPMACs(nodes []*api.Node) map[netip.Addr]packet.MAC {
	out := map[netip.Addr]packet.MAC{}
	for _, nd := range nodes {
		p, ok := NodeAddr(nd)
		if !ok {
			continue
		}
		mac := encap.VTEPMAC(nd.Name)
		if m, err := packet.ParseMAC(nd.Spec.VXLANTunnelMACAddr); err == nil {
			mac = m
		}
		out[p.Addr()] = mac
	}
	return out
}

// EncapOverhead is the most MTU any pool's encapsulation costs pods:
// encap.VXLANOverhead for VXLAN, encap.IPIPOverhead for IP-in-IP, 0 when
// no pool encapsulates.
func EncapOverhead(pools []*api.IPPool) int {
	o := 0
	for _, p := range pools {
		if p.Spec.VXLANMode.Enabled() {
			o = max(o, encap.VXLANOverhead)
		}
		if p.Spec.IPIPMode.Enabled() {
			o = max(o, encap.IPIPOverhead)
		}
	}
	return o
}

// EncapsInUse reports whether any pool, disabled ones included (their
// pods still route), uses IP-in-IP or VXLAN in any mode: the node needs
// those tunnels open, and no others.
func EncapsInUse(pools []*api.IPPool) (ipip, vxlan bool) {
	for _, p := range pools {
		ipip = ipip || p.Spec.IPIPMode.Enabled()
		vxlan = vxlan || p.Spec.VXLANMode.Enabled()
	}
	return ipip, vxlan
}

// MinPodMTU is IPv4's minimum MTU: encapsulation never takes pods below it.
const MinPodMTU = 576

// PodMTU is the pods' MTU for an underlay (or configured) MTU: less what
// the pools' encapsulation costs (EncapOverhead), unless that would leave
// less than MinPodMTU.
func PodMTU(mtu, overhead int) int {
	if mtu > overhead+MinPodMTU {
		return mtu - overhead
	}
	return mtu
}
