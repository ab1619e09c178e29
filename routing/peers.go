package routing

import (
	"net/netip"
	"os"
	"slices"
	"strings"

	"podnet/api"
	"podnet/router/bgp"
)

// Session types, as calicoctl node status prints them.
const (
	PeerMesh   = "node-to-node mesh"
	PeerGlobal = "global"
	PeerNode   = "node specific"
)

// DesiredPeers computes the BGP sessions of node me (at myAddr; self is
// its Node, nil before it registered), sorted by address:
//
//   - the node-to-node mesh, unless the BGPConfiguration turns it off:
//     one session to every other node with an address;
//   - every BGPPeer that applies here: all nodes when it names neither
//     node nor nodeSelector, else the node it names or the nodes its
//     nodeSelector matches. It peers with its peerIP, or with every node
//     its peerSelector matches;
//   - the other end of a peerSelector peering (Calico's reversePeering
//     Auto): a node the peerSelector matches peers back with the nodes
//     the BGPPeer applies to. This is how a route reflector learns its
//     clients.
//
// A session between two nodes (of the mesh, of a peerSelector, or a
// peerIP that is another node's address) is dialled by the lower address
// only: two ends dialling at once collide, which costs seconds of
// back-off and, inside gobgp v4.8.0, is resolved with a data race. A
// peerIP session to anything else dials, since the router there may be
// configured to wait.
//
// A route reflector (a node with a cluster ID) treats the non-reflector
// nodes it peers with as its clients. A session with another node dials
// the port that node listens on (settings.ListenPort).
func DesiredPeers(me string, myAddr netip.Addr, self *api.Node, others []*api.Node, peers []*api.BGPPeer, settings BGPSettings) []bgp.Peer {
	byAddr := map[netip.Addr]bgp.Peer{}
	// waits says whether the session with another node at addr is the
	// other end's to dial: the lower address of a pair dials (see above).
	waits := func(addr netip.Addr) bool { return myAddr.Compare(addr) > 0 }
	global := settings.Global
	globalASN := GlobalASN(global)
	myASN := NodeASN(self, globalASN)
	// rrClient says whether a session with node o, whose AS is asn and
	// for which this node uses local AS local (0: its own), makes o this
	// route reflector's client: only a non-reflector in the same AS
	// (reflection is an iBGP matter; gobgp refuses it on eBGP).
	rrClient := func(o *api.Node, asn, local uint32) bool {
		if local == 0 {
			local = myASN
		}
		return IsRouteReflector(self) && !IsRouteReflector(o) && asn == local
	}
	if global.Spec.NodeToNodeMeshEnabled == nil || *global.Spec.NodeToNodeMeshEnabled {
		for _, o := range others {
			if p, ok := NodeAddr(o); ok {
				byAddr[p.Addr()] = bgp.Peer{Address: p.Addr(), Port: settings.ListenPort(o.Name), ASN: NodeASN(o, globalASN), Type: PeerMesh,
					Passive: waits(p.Addr())}
			}
		}
	}
	for _, bp := range peers {
		s := bp.Spec
		if s.PeerSelector != "" && self != nil && SelectorMatches(s.PeerSelector, self.Labels) {
			for _, o := range others {
				p, ok := NodeAddr(o)
				if !ok || !appliesTo(s, o) {
					continue
				}
				if appliesTo(s, self) && SelectorMatches(s.PeerSelector, o.Labels) {
					continue // both ends dial as forward ends: below
				}
				if q, dup := byAddr[p.Addr()]; dup && q.Type != PeerMesh {
					continue // an earlier BGPPeer's, as at the other end
				}
				// As the other end dials: with the BGPPeer's local AS
				// if it sets one, and its password, replacing the mesh
				// session as its own entry does.
				asn := NodeASN(o, globalASN)
				if s.LocalASNumber != nil {
					asn = uint32(*s.LocalASNumber)
				}
				byAddr[p.Addr()] = bgp.Peer{Address: p.Addr(), Port: settings.ListenPort(o.Name), ASN: asn, Type: PeerNode,
					Password: peerPassword(s.Password), RRClient: rrClient(o, asn, 0),
					Passive: waits(p.Addr())}
			}
		}
		typ := PeerGlobal
		switch {
		case s.Node != "":
			if s.Node != me {
				continue
			}
			typ = PeerNode
		case s.NodeSelector != "":
			if self == nil || !SelectorMatches(s.NodeSelector, self.Labels) {
				continue
			}
			typ = PeerNode
		}
		base := bgp.Peer{Type: typ, Password: peerPassword(s.Password)}
		if s.KeepaliveTime != nil {
			base.KeepaliveTime = s.KeepaliveTime.Duration
		}
		if s.HoldTime != nil {
			base.HoldTime = s.HoldTime.Duration
		}
		if s.LocalASNumber != nil {
			base.LocalASN = uint32(*s.LocalASNumber)
		}
		if s.PeerSelector != "" {
			for _, o := range others {
				p, ok := NodeAddr(o)
				if !ok || !SelectorMatches(s.PeerSelector, o.Labels) {
					continue
				}
				// The first BGPPeer that pairs two nodes makes their
				// session, at both ends (they list BGPPeers in the same
				// order), replacing the mesh's.
				if q, dup := byAddr[p.Addr()]; dup && q.Type != PeerMesh {
					continue
				}
				pe := base
				pe.Address, pe.Port, pe.ASN = p.Addr(), settings.ListenPort(o.Name), NodeASN(o, globalASN)
				if s.LocalASNumber != nil && appliesTo(s, o) && SelectorMatches(s.PeerSelector, self.Labels) {
					// o dials us as a forward end of this BGPPeer too,
					// with its local AS.
					pe.ASN = uint32(*s.LocalASNumber)
				}
				pe.RRClient = rrClient(o, pe.ASN, pe.LocalASN)
				pe.Passive = waits(pe.Address)
				byAddr[pe.Address] = pe
			}
			continue
		}
		addr, port, err := api.ParsePeerIP(s.PeerIP)
		if err != nil || !addr.Is4() {
			continue
		}
		pe := base
		pe.Address, pe.Port, pe.ASN = addr, port, uint32(s.ASNumber)
		if isNodeAddr(others, addr) {
			// Another node, which peers back (its mesh, a selector or a
			// peerIP of its own) or not at all: the lower address dials.
			pe.Passive = waits(addr)
		}
		byAddr[addr] = pe
	}
	// Two route reflectors of one cluster, or a reflector and its
	// clients, found via the mesh too: keep the reflector role.
	if IsRouteReflector(self) {
		for a, p := range byAddr {
			if p.Type != PeerMesh {
				continue
			}
			for _, o := range others {
				if q, ok := NodeAddr(o); ok && q.Addr() == a && rrClient(o, p.ASN, 0) {
					p.RRClient = true
					byAddr[a] = p
				}
			}
		}
	}
	// A Node left behind at this node's address (renamed, or its address
	// reused), or a peerIP naming it: no session with ourselves, which
	// the speaker refuses (NodesAt tells the daemon to warn).
	delete(byAddr, myAddr)
	out := make([]bgp.Peer, 0, len(byAddr))
	for _, p := range byAddr {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b bgp.Peer) int { return a.Address.Compare(b.Address) })
	return out
}

// ExplicitPeers are the sessions of peers whose own routes the import
// policy takes on trust (Import.Explicit): those a BGPPeer configures
// with a router that is no node (a ToR), or with a route reflector node
// (which passes on what its own external peers told it: other racks'
// blocks from a ToR, say). Another node, in the mesh or in a
// peerSelector session, may announce only what nodes announce; and
// what a reflector reflects from its clients is judged as theirs
// (Import.Filter looks at the path's originator).
func ExplicitPeers(sessions []bgp.Peer, others []*api.Node) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, p := range sessions {
		if p.Type == PeerMesh {
			continue
		}
		var node *api.Node
		for _, o := range others {
			if a, ok := NodeAddr(o); ok && a.Addr() == p.Address {
				node = o
			}
		}
		if node == nil || IsRouteReflector(node) {
			out[p.Address] = true
		}
	}
	return out
}

// NodesAt names the nodes whose address is addr: for the daemon, other
// Nodes at its own address, which it warns about (a stale Node; its
// VXLAN MAC and blocks may mislead the others).
func NodesAt(nodes []*api.Node, addr netip.Addr) []string {
	var names []string
	for _, o := range nodes {
		if p, ok := NodeAddr(o); ok && p.Addr() == addr {
			names = append(names, o.Name)
		}
	}
	return names
}

// isNodeAddr says whether addr is the address of one of nodes.
func isNodeAddr(nodes []*api.Node, addr netip.Addr) bool { return len(NodesAt(nodes, addr)) > 0 }

// appliesTo says whether BGPPeer spec s configures sessions on node nd.
func appliesTo(s api.BGPPeerSpec, nd *api.Node) bool {
	switch {
	case s.Node != "":
		return s.Node == nd.Name
	case s.NodeSelector != "":
		return SelectorMatches(s.NodeSelector, nd.Labels)
	}
	return true
}

// peerPassword reads a BGPPeer password from its file or environment
// variable; an unreadable source gives no password (the session then
// fails and node status says so).
func peerPassword(p *api.BGPPassword) string {
	if p == nil {
		return ""
	}
	if p.SecretFile != "" {
		b, err := os.ReadFile(p.SecretFile)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if p.Env != "" {
		return os.Getenv(p.Env)
	}
	return ""
}
