// Package router holds podnet's route table: an IPv4/IPv6 longest-prefix
// match (github.com/gaissmai/bart) built by the control plane and published
// to the data path as an immutable snapshot. Each route says what to do
// with a packet: deliver it to a local pod's port, hand it to the host,
// encapsulate it to another node, or drop it.
package router

import (
	"fmt"
	"net/netip"
	"strings"

	"podnet/internal/packet"
)

// Kind says what the switch does with a packet that matches a route.
type Kind uint8

const (
	// KindBlackhole drops matching packets (counted as "blackhole").
	KindBlackhole Kind = iota
	// KindLocalPod delivers to a pod port on this node.
	KindLocalPod
	// KindHost delivers to the node itself through its host TUN port.
	KindHost
	// KindRemote sends to another node (NextHop), encapsulated per Encap.
	KindRemote
	// KindNAT sends outside the cluster through the node's address
	// (natOutgoing), for pods whose pool allows it.
	KindNAT
)

var kindNames = [...]string{"blackhole", "local", "host", "remote", "nat"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// MarshalText makes kinds readable in JSON output.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (k *Kind) UnmarshalText(b []byte) error {
	for i, n := range kindNames {
		if n == string(b) {
			*k = Kind(i)
			return nil
		}
	}
	return fmt.Errorf("unknown route kind %q", b)
}

// Encap is the encapsulation used toward a remote node.
type Encap uint8

const (
	EncapNone Encap = iota
	EncapIPIP
	EncapVXLAN
)

var encapNames = [...]string{"none", "ipip", "vxlan"}

func (e Encap) String() string {
	if int(e) < len(encapNames) {
		return encapNames[e]
	}
	return fmt.Sprintf("encap(%d)", e)
}

func (e Encap) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

func (e *Encap) UnmarshalText(b []byte) error {
	for i, n := range encapNames {
		if n == strings.ToLower(string(b)) {
			*e = Encap(i)
			return nil
		}
	}
	return fmt.Errorf("unknown encapsulation %q", b)
}

// Route is one entry of the table.
type Route struct {
	Prefix netip.Prefix `json:"prefix"`
	Kind   Kind         `json:"kind"`
	// Port is the switch port index for KindLocalPod routes.
	Port int `json:"port,omitempty"`
	// Dev names what the route points at for people: a pod name, "podnet0".
	Dev string `json:"dev,omitempty"`
	// NextHop is the remote node's underlay address (KindRemote).
	NextHop netip.Addr `json:"nextHop,omitzero"`
	Encap   Encap      `json:"encap"`
	// NextHopMAC is the remote node's VTEP MAC (VXLAN): the inner
	// Ethernet destination.
	NextHopMAC packet.MAC `json:"nextHopMAC,omitzero"`
	// Source says who installed the route: "local", "host", "bgp <peer>".
	Source string `json:"source"`
}

// SourceHost is the Source of the routes to this node's own addresses.
const SourceHost = "host"

// ToThisNode says whether r leads to one of this node's own addresses
// (as opposed to a host route through the node's kernel to somewhere
// else: another node, a router's prefix).
func (r *Route) ToThisNode() bool { return r.Kind == KindHost && r.Source == SourceHost }

func (r Route) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Prefix, r.Kind)
	if r.Dev != "" {
		fmt.Fprintf(&b, " dev %s", r.Dev)
	}
	if r.NextHop.IsValid() {
		fmt.Fprintf(&b, " via %s encap %s", r.NextHop, r.Encap)
	}
	return b.String()
}
