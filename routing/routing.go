// Package routing is podnet's routing policy: pure functions from the
// cluster's resources (Nodes, BGPPeers, BGPConfiguration, IPPools) and
// what BGP learned to what a node should do: whom to peer with, how to
// reach each learned prefix (IP-in-IP, VXLAN or the node's kernel), which
// pools may use NAT outgoing, and the route table the switch forwards by.
// It does no I/O (but for reading BGP passwords from files); package
// node reads the datastore, calls these functions and applies the result.
package routing

import (
	"net/netip"

	"podnet/api"
)

// SplitNodes separates the Node named me from the others.
func SplitNodes(nodes []*api.Node, me string) (self *api.Node, others []*api.Node) {
	for _, nd := range nodes {
		if nd.Name == me {
			self = nd
		} else {
			others = append(others, nd)
		}
	}
	return self, others
}

// NodeAddr is a node's underlay address and subnet (spec.bgp.ipv4Address);
// false when it has none.
func NodeAddr(nd *api.Node) (netip.Prefix, bool) {
	if nd == nil || nd.Spec.BGP == nil || nd.Spec.BGP.IPv4Address == "" {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(nd.Spec.BGP.IPv4Address)
	return p, err == nil && p.Addr().Is4()
}

// IsRouteReflector reports whether nd has a route reflector cluster ID.
func IsRouteReflector(nd *api.Node) bool {
	return nd != nil && nd.Spec.BGP != nil && nd.Spec.BGP.RouteReflectorClusterID != ""
}

// RouteReflectorClusterID is nd's cluster ID; zero when it is no reflector
// (or the ID is not an IPv4 address).
func RouteReflectorClusterID(nd *api.Node) netip.Addr {
	if !IsRouteReflector(nd) {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(nd.Spec.BGP.RouteReflectorClusterID)
	return a
}

// NodeASN is nd's AS number: its own spec.bgp.asNumber, else global (the
// BGPConfiguration's).
func NodeASN(nd *api.Node, global uint32) uint32 {
	if nd != nil && nd.Spec.BGP != nil && nd.Spec.BGP.ASNumber != nil {
		return uint32(*nd.Spec.BGP.ASNumber)
	}
	return global
}

// GlobalASN is the cluster's default AS number; global must have its
// defaults set (api.BGPConfiguration.SetDefaults).
func GlobalASN(global *api.BGPConfiguration) uint32 {
	return uint32(*global.Spec.ASNumber)
}
