package api

import (
	"net/netip"
)

// Node is one machine running the podnet daemon. The daemon registers it;
// users patch its BGP fields (e.g. routeReflectorClusterID).
type Node struct {
	TypeMeta
	ObjectMeta `json:"metadata"`
	Spec       NodeSpec    `json:"spec"`
	Status     *NodeStatus `json:"status,omitempty"`
}

// NodeSpec has Calico's Node fields that podnet uses (docs/calico-conventions.md §5.4).
type NodeSpec struct {
	BGP *NodeBGPSpec `json:"bgp,omitempty"`
	// IPv4VXLANTunnelAddr is the node's VXLAN tunnel address (from a pool).
	IPv4VXLANTunnelAddr string `json:"ipv4VXLANTunnelAddr,omitempty"`
	// VXLANTunnelMACAddr is the node's VTEP MAC; empty: 0x66 + SHA-1(node name)[:5] (docs/calico-conventions.md §3.3).
	VXLANTunnelMACAddr string `json:"vxlanTunnelMACAddr,omitempty"`
	// Addresses and OrchRefs are accepted from Calico Node documents.
	Addresses []NodeAddress `json:"addresses,omitempty"`
	OrchRefs  []OrchRef     `json:"orchRefs,omitempty"`
}

// NodeBGPSpec is a node's BGP identity. As in Calico, the IPIP tunnel
// address lives here too.
type NodeBGPSpec struct {
	// IPv4Address is the node's underlay address with its prefix length,
	// e.g. 10.0.0.11/24; the prefix defines the node's subnet
	// (CrossSubnet).
	IPv4Address string `json:"ipv4Address,omitempty"`
	// IPv6Address is Calico's; podnet refuses it until it routes IPv6.
	IPv6Address string `json:"ipv6Address,omitempty"`
	// ASNumber overrides the global AS; nil inherits BGPConfiguration's.
	ASNumber *ASNumber `json:"asNumber,omitempty"`
	// RouteReflectorClusterID (an IPv4 address) makes the node a route
	// reflector.
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
	// IPv4IPIPTunnelAddr is the node's IPIP tunnel address.
	IPv4IPIPTunnelAddr string `json:"ipv4IPIPTunnelAddr,omitempty"`
}

// NodeAddress is one address of a node (Calico's spec.addresses).
type NodeAddress struct {
	Address string `json:"address"`
	Type    string `json:"type,omitempty"`
}

// OrchRef is Calico's orchestrator reference of a node.
type OrchRef struct {
	NodeName     string `json:"nodeName,omitempty"`
	Orchestrator string `json:"orchestrator"`
}

// NodeStatus is what the daemon reports about itself.
type NodeStatus struct {
	// PodMTU is the MTU given to pods (underlay MTU − encap overhead).
	PodMTU int `json:"podMTU,omitempty"`
	// UnderlayInterface is the interface carrying the node address.
	UnderlayInterface string `json:"underlayInterface,omitempty"`
	// Version is the podnet version of the daemon.
	Version string `json:"version,omitempty"`
	// Started is when the daemon started.
	Started Time `json:"started,omitzero"`
}

// NewNode returns a Node named name.
func NewNode(name string) *Node {
	return &Node{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindNode}, ObjectMeta: ObjectMeta{Name: name}}
}

// ResourceKind implements Resource.
func (*Node) ResourceKind() string { return KindNode }

// SetDefaults implements Resource; a Node has no defaults.
func (n *Node) SetDefaults() {}

// Validate implements Resource.
func (n *Node) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &n.ObjectMeta)
	if b := n.Spec.BGP; b != nil {
		if b.IPv4Address != "" {
			if p, err := netip.ParsePrefix(b.IPv4Address); err != nil || !p.Addr().Is4() {
				fe.add("Node.Spec.BGP.IPv4Address", b.IPv4Address, "must be an IPv4 address with prefix length, e.g. 10.0.0.11/24")
			}
		}
		if b.IPv6Address != "" {
			if p, err := netip.ParsePrefix(b.IPv6Address); err != nil || !p.Addr().Is6() {
				fe.add("Node.Spec.BGP.IPv6Address", b.IPv6Address, "must be an IPv6 address with prefix length")
			} else {
				fe.add("Node.Spec.BGP.IPv6Address", b.IPv6Address, notYet("IPv6 node addresses", noteNoIPv6+" (IPv6 pools are refused too); leave ipv6Address unset"))
			}
		}
		if b.ASNumber != nil && *b.ASNumber == 0 {
			fe.add("Node.Spec.BGP.ASNumber", 0, "AS number must be between 1 and 4294967295")
		}
		if b.RouteReflectorClusterID != "" {
			if _, ok := parseIPv4(b.RouteReflectorClusterID); !ok {
				fe.add("Node.Spec.BGP.RouteReflectorClusterID", b.RouteReflectorClusterID, "must be an IPv4 address")
			}
		}
		if b.IPv4IPIPTunnelAddr != "" {
			if _, ok := parseIPv4(b.IPv4IPIPTunnelAddr); !ok {
				fe.add("Node.Spec.BGP.IPv4IPIPTunnelAddr", b.IPv4IPIPTunnelAddr, "must be an IPv4 address")
			}
		}
	}
	if a := n.Spec.IPv4VXLANTunnelAddr; a != "" {
		if _, ok := parseIPv4(a); !ok {
			fe.add("Node.Spec.IPv4VXLANTunnelAddr", a, "must be an IPv4 address")
		}
	}
	if m := n.Spec.VXLANTunnelMACAddr; m != "" && !validMAC(m) {
		fe.add("Node.Spec.VXLANTunnelMACAddr", m, "must be a MAC address")
	}
	for _, a := range n.Spec.Addresses {
		if _, err := netip.ParseAddr(a.Address); err != nil {
			if _, err := netip.ParsePrefix(a.Address); err != nil {
				fe.add("Node.Spec.Addresses", a.Address, "must be an IP address or CIDR")
			}
		}
	}
	if n.Status != nil && n.Status.PodMTU < 0 {
		fe.add("Node.Status.PodMTU", n.Status.PodMTU, "must not be negative")
	}
	return fe.err()
}
