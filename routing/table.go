package routing

import (
	"net/netip"

	"podnet/router"
)

// LocalPod is a pod attached to this node's switch.
type LocalPod struct {
	Name string
	IP   netip.Addr
	Port int // the switch port
}

// Table is what a node's route table is made of.
type Table struct {
	// Pods are the attached local pods.
	Pods []LocalPod
	// HostAddrs are the node's own addresses (but loopback).
	HostAddrs []netip.Addr
	// NodeAddrs are the other nodes' underlay addresses.
	NodeAddrs []netip.Addr
	// OwnBlocks are this node's IPAM blocks.
	OwnBlocks []netip.Prefix
	// Remote are the learned routes (RemoteRoutes).
	Remote []router.Route
	// HostDev is the host port's name (podnet0).
	HostDev string
}

// defaultRoute is where NAT outgoing takes everything else.
var defaultRoute = netip.PrefixFrom(netip.IPv4Unspecified(), 0)

// Routes lists the table's routes, one per prefix. When sources overlap
// on a prefix the first wins: local pods, the node's own addresses, other
// nodes, this node's blocks, then what BGP learned.
//
//   - A local pod is delivered to its port; the node's addresses to the
//     host port.
//   - Other nodes are reached through this node's kernel, on the underlay.
//   - Addresses in this node's blocks that no local pod holds go nowhere
//     (blackhole) rather than following a less specific route.
//   - Everything else leaves the cluster through NAT outgoing; the switch
//     lets only pods of natOutgoing pools use it (ICMP admin-prohibited
//     for the others) and never NATs a destination inside a pool.
func (t Table) Routes() []router.Route {
	var routes []router.Route
	for _, p := range t.Pods {
		routes = append(routes, router.Route{
			Prefix: netip.PrefixFrom(p.IP, 32), Kind: router.KindLocalPod,
			Port: p.Port, Dev: p.Name, Source: "local",
		})
	}
	for _, a := range t.HostAddrs {
		routes = append(routes, router.Route{Prefix: netip.PrefixFrom(a, 32), Kind: router.KindHost, Dev: t.HostDev, Source: router.SourceHost})
	}
	for _, a := range t.NodeAddrs {
		routes = append(routes, router.Route{Prefix: netip.PrefixFrom(a, 32), Kind: router.KindHost, Dev: t.HostDev, Source: "node"})
	}
	for _, b := range t.OwnBlocks {
		routes = append(routes, router.Route{Prefix: b, Kind: router.KindBlackhole, Source: "ipam block"})
	}
	routes = append(routes, t.Remote...)
	routes = append(routes, router.Route{Prefix: defaultRoute, Kind: router.KindNAT, Dev: DevNAT, Source: "nat-outgoing"})
	seen := map[netip.Prefix]bool{}
	uniq := routes[:0]
	for _, r := range routes {
		if !seen[r.Prefix] {
			seen[r.Prefix] = true
			uniq = append(uniq, r)
		}
	}
	return uniq
}
