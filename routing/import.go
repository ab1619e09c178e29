package routing

import (
	"net/netip"
	"slices"

	"podnet/api"
	"podnet/router"
	"podnet/router/bgp"
)

// DefaultMaxPrefixes is how many learned prefixes one peer may place in
// a node's table; the rest of its paths are refused. A cluster's own
// blocks and borrowed /32s stay far below it.
const DefaultMaxPrefixes = 10000

// Import is what the import policy checks learned paths against.
type Import struct {
	Pools []*api.IPPool
	// OwnBlocks are this node's IPAM blocks; PodAddrs its pods' addresses.
	OwnBlocks []netip.Prefix
	PodAddrs  []netip.Addr
	// Lent are the addresses IPAM gave from a block to another node than
	// the block's owner (borrowed addresses), other nodes', each with the
	// underlay address of the node that holds it: that node advertises
	// the address as a /32.
	Lent map[netip.Addr]netip.Addr
	// Owners are the other nodes' blocks (IPAM affinities), each with the
	// underlay address of its node (invalid if the node has none): a
	// node announces its own blocks, not another's. nil: not known (a
	// view from the cache), nothing is checked against them.
	Owners map[netip.Prefix]netip.Addr
	// Subnet is this node's underlay address and prefix length.
	Subnet netip.Prefix
	// NodeAddrs are the other nodes' underlay addresses.
	NodeAddrs []netip.Addr
	// Explicit are the peers whose own routes are taken on trust
	// (ExplicitPeers: routers a BGPPeer configures, route reflector
	// nodes): only they may announce prefixes outside the pools, or
	// other nodes' blocks via a router that is no node. What a
	// reflector reflects from a client (a path with an Originator) is
	// judged as the client's.
	Explicit map[netip.Addr]bool
	// MaxPrefixes is the most prefixes accepted from one peer (0:
	// DefaultMaxPrefixes).
	MaxPrefixes int
}

// Rejected is a learned path the import policy refused, and why.
type Rejected struct {
	Path   bgp.Path
	Reason string
}

// Reasons a path is refused (Rejected.Reason).
const (
	RejectNotIPv4       = "not IPv4"
	RejectDefault       = "default route"
	RejectOwnBlock      = "overlaps this node's block"
	RejectLentElsewhere = "address lent to another node"
	RejectOthersBlock   = "overlaps another node's block"
	RejectLocalPod      = "is a local pod"
	RejectCoversPool    = "covers an IP pool"
	RejectOutsidePools  = "outside the IP pools from a mesh peer or to a node"
	RejectUnknownNode   = "encapsulated next hop is no known node"
	RejectSelfNextHop   = "next hop is this node"
	RejectTooManyPrefix = "peer exceeds its maximum prefixes"
)

// Filter applies the import policy to learned paths. A path is
// accepted when:
//
//   - its prefix is IPv4 and not 0.0.0.0/0 (NAT outgoing and the
//     node's own default route are never displaced);
//   - it neither covers nor lies inside one of this node's blocks (a
//     peer cannot take the node's own traffic), unless it is the /32 of
//     an address IPAM lent from such a block to another node, with that
//     node as next hop (Calico's borrowed addresses);
//   - it is not the address of one of this node's pods (a prefix that
//     covers one, another node's block the pod borrowed from, is fine:
//     the pod's own /32 is more specific);
//   - inside a pool, and leading to a node or learned from a node of the
//     mesh, it overlaps no block affine to another node than its next
//     hop, unless it is the /32 of an address lent to that node: a node
//     cannot take another node's pods' traffic, and a node that passes on
//     another node's block with itself as next hop (eBGP between nodes)
//     is refused as well. Blocks this node has not read yet are no
//     objection (a block just claimed is announced before every node has
//     read it); an address lent since it last read IPAM is refused until
//     it reads again. An Explicit peer's path whose next hop is no node
//     (a ToR passing on other racks' blocks) is not checked: that router
//     vouches for it. Without Owners (a view from the cache) nothing is
//     checked;
//   - it lies inside an IP pool, or else comes from an Explicit peer,
//     covers no pool and leads to no node: a ToR may give the pods
//     routes to the outside, nodes only give pool routes (a node in a
//     BGPPeer's session, a route reflector, included: it is not
//     Explicit, and the next hop check covers what it passes on). This
//     is the only opt-in; Calico has no per-peer import setting to
//     mirror;
//   - when its pool encapsulates it, the next hop is a known node (a
//     tunnel to any other address would send pod traffic off the
//     cluster);
//   - its peer (for a reflected path, the client it came from: its
//     ORIGINATOR_ID) has not already placed max prefixes (paths are
//     taken in their order, which the speaker sorts by prefix).
func (im Import) Filter(paths []bgp.Path) (accepted []bgp.Path, rejected []Rejected) {
	limit := im.MaxPrefixes
	if limit <= 0 {
		limit = DefaultMaxPrefixes
	}
	nodes := map[netip.Addr]bool{}
	for _, a := range im.NodeAddrs {
		nodes[a] = true
	}
	owned := sortedBlocks(im.Owners)
	perSource := map[netip.Addr]int{}
	for _, p := range paths {
		// A route reflector passes on every client's paths in one
		// session: each client has a budget of its own, so that one
		// flooding client does not use up everyone's.
		source := p.Peer
		if p.Originator.IsValid() {
			source = p.Originator
		}
		reason := im.check(p, nodes, owned)
		if reason == "" && perSource[source] >= limit {
			reason = RejectTooManyPrefix
		}
		if reason != "" {
			rejected = append(rejected, Rejected{Path: p, Reason: reason})
			continue
		}
		perSource[source]++
		accepted = append(accepted, p)
	}
	return accepted, rejected
}

// check is why p is refused; "" when it is not. owned are im.Owners'
// blocks, sorted.
func (im Import) check(p bgp.Path, nodes map[netip.Addr]bool, owned []netip.Prefix) string {
	pfx := p.Prefix.Masked()
	switch {
	case !pfx.Addr().Is4():
		return RejectNotIPv4
	case pfx.Bits() == 0:
		return RejectDefault
	case im.Subnet.IsValid() && p.NextHop == im.Subnet.Addr():
		return RejectSelfNextHop
	}
	for _, b := range im.OwnBlocks {
		if !b.Overlaps(pfx) {
			continue
		}
		// An address another node borrowed from this block: its /32
		// from that node is more specific than the block's blackhole.
		by, lent := im.Lent[pfx.Addr()]
		if !lent || pfx.Bits() != 32 {
			return RejectOwnBlock
		}
		if p.NextHop != by {
			return RejectLentElsewhere
		}
	}
	// A prefix that covers a pod of this node (one it borrowed from
	// another node's block) is fine: the pod's /32 is more specific.
	// The pod's own address is not.
	if pfx.Bits() == 32 && slices.Contains(im.PodAddrs, pfx.Addr()) {
		return RejectLocalPod
	}
	// A path a route reflector reflected (it added ORIGINATOR_ID) is
	// what one of its clients said, not what the reflector vouches for:
	// it is judged as if that client had sent it.
	explicit := im.Explicit[p.Peer] && !p.Originator.IsValid()
	pool := PoolOf(im.Pools, pfx)
	if pool == nil {
		// Nodes announce pool routes only; a route outside the pools that
		// leads to a node is no ToR's, whoever passed it on.
		if !explicit || nodes[p.NextHop] {
			return RejectOutsidePools
		}
		for _, pl := range im.Pools {
			if c, err := pl.Prefix(); err == nil && c.Overlaps(pfx) {
				return RejectCoversPool
			}
		}
		return ""
	}
	if nodes[p.NextHop] || !explicit {
		if r := im.othersBlock(pfx, p.NextHop, owned); r != "" {
			return r
		}
	}
	// Whether the pool's mode would tunnel to this next hop, VTEP known
	// or not: a VXLAN pool's route without one would leave by the kernel.
	if Encapsulation(pool, p.NextHop, im.Subnet, true) != router.EncapNone && !nodes[p.NextHop] {
		return RejectUnknownNode
	}
	return ""
}

// othersBlock is why in-pool prefix pfx with next hop via is refused for
// another node's block, "" if it is not. Two prefixes overlap only when
// one holds the other, so the blocks to look at are those holding pfx
// (found by masking it) and those inside it (a run of owned, which is
// sorted).
func (im Import) othersBlock(pfx netip.Prefix, via netip.Addr, owned []netip.Prefix) string {
	if im.Owners == nil {
		return ""
	}
	if pfx.Bits() == 32 {
		if by, lent := im.Lent[pfx.Addr()]; lent {
			if by != via {
				return RejectLentElsewhere
			}
			return ""
		}
	}
	for bits := pfx.Bits(); bits > 0; bits-- {
		b := netip.PrefixFrom(pfx.Addr(), bits).Masked()
		if owner, ok := im.Owners[b]; ok && owner != via {
			return RejectOthersBlock
		}
	}
	i, _ := slices.BinarySearchFunc(owned, pfx.Addr(), func(b netip.Prefix, a netip.Addr) int { return b.Addr().Compare(a) })
	for ; i < len(owned) && pfx.Contains(owned[i].Addr()); i++ {
		if im.Owners[owned[i]] != via {
			return RejectOthersBlock
		}
	}
	return ""
}

// sortedBlocks returns owners' blocks sorted by address (then length).
func sortedBlocks(owners map[netip.Prefix]netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(owners))
	for b := range owners {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Compare(b) })
	return out
}
