package api

import (
	"fmt"
	"net/netip"

	"podnet/selector"
)

// EncapMode is an IPPool's ipipMode or vxlanMode: when traffic to the
// pool's addresses on other nodes is encapsulated.
type EncapMode string

// Encapsulation modes of an IPPool. "" reads as Never.
const (
	// EncapNever sends pod traffic unencapsulated: the underlay routes it.
	EncapNever EncapMode = "Never"
	// EncapAlways encapsulates traffic to every other node.
	EncapAlways EncapMode = "Always"
	// EncapCrossSubnet encapsulates traffic only to nodes outside this
	// node's underlay subnet.
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// Enabled reports whether the mode encapsulates any traffic.
func (m EncapMode) Enabled() bool { return m == EncapAlways || m == EncapCrossSubnet }

// Allowed uses of an IPPool.
const (
	UseWorkload     = "Workload"
	UseTunnel       = "Tunnel"
	UseLoadBalancer = "LoadBalancer"
)

// Assignment modes of an IPPool.
const (
	AssignAutomatic = "Automatic"
	AssignManual    = "Manual"
)

// Defaults of an IPPool (docs/calico-conventions.md §1.1) and of the pool the daemon
// creates when there is none (§1.4).
const (
	DefaultBlockSizeIPv4 = 26
	DefaultBlockSizeIPv6 = 122
	DefaultNodeSelector  = "all()"
	DefaultPoolName      = "default-ipv4-ippool"
	DefaultPoolCIDR      = "192.168.0.0/16"
)

// IPPool is a range of pod addresses, carved into blocks of BlockSize
// that IPAM hands to nodes.
type IPPool struct {
	TypeMeta
	ObjectMeta `json:"metadata"`
	Spec       IPPoolSpec `json:"spec"`
}

// IPPoolSpec has Calico's IPPool fields (docs/calico-conventions.md §1.1).
type IPPoolSpec struct {
	// CIDR is the pool's range; required, strictly masked, immutable.
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of the blocks; default 26, immutable.
	BlockSize int `json:"blockSize,omitempty"`
	// IPIPMode and VXLANMode: Never (default), Always or CrossSubnet; not
	// both on.
	IPIPMode  EncapMode `json:"ipipMode,omitempty"`
	VXLANMode EncapMode `json:"vxlanMode,omitempty"`
	// NATOutgoing masquerades traffic to destinations outside all pools.
	NATOutgoing bool `json:"natOutgoing,omitempty"`
	// Disabled stops new allocations; existing addresses keep working.
	Disabled bool `json:"disabled,omitempty"`
	// DisableBGPExport keeps the pool's blocks (and addresses borrowed
	// from them) out of BGP: they are advertised to no peer. Refused on
	// VXLAN pools, whose routes nodes learn from BGP too.
	DisableBGPExport bool `json:"disableBGPExport,omitempty"`
	// NodeSelector picks the nodes IPAM may assign from this pool for;
	// default all().
	NodeSelector string `json:"nodeSelector,omitempty"`
	// AllowedUses: Workload, Tunnel, LoadBalancer; default [Workload, Tunnel].
	AllowedUses []string `json:"allowedUses,omitempty"`
	// AssignmentMode: Automatic (default) or Manual.
	AssignmentMode string `json:"assignmentMode,omitempty"`
}

// NewIPPool returns an IPPool named name with TypeMeta set.
func NewIPPool(name string) *IPPool {
	return &IPPool{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindIPPool}, ObjectMeta: ObjectMeta{Name: name}}
}

// DefaultIPPool is the pool the daemon creates when no IPv4 pool exists:
// 192.168.0.0/16, blocks of /26 and, unlike a pool written by hand,
// natOutgoing true (docs/calico-conventions.md §1.4).
func DefaultIPPool() *IPPool {
	p := NewIPPool(DefaultPoolName)
	p.Spec.CIDR = DefaultPoolCIDR
	p.Spec.NATOutgoing = true
	p.SetDefaults()
	return p
}

// ResourceKind implements Resource.
func (*IPPool) ResourceKind() string { return KindIPPool }

// Prefix parses Spec.CIDR.
func (p *IPPool) Prefix() (netip.Prefix, error) { return netip.ParsePrefix(p.Spec.CIDR) }

// SetDefaults implements Resource. It also rewrites a valid CIDR in its
// canonical form, as Calico does on write.
func (p *IPPool) SetDefaults() {
	s := &p.Spec
	pfx, err := netip.ParsePrefix(s.CIDR)
	if err == nil && pfx == pfx.Masked() {
		s.CIDR = pfx.String()
	}
	if s.BlockSize == 0 {
		s.BlockSize = DefaultBlockSizeIPv4
		if err == nil && pfx.Addr().Is6() {
			s.BlockSize = DefaultBlockSizeIPv6
		}
	}
	if s.IPIPMode == "" {
		s.IPIPMode = EncapNever
	}
	if s.VXLANMode == "" {
		s.VXLANMode = EncapNever
	}
	if s.NodeSelector == "" {
		s.NodeSelector = DefaultNodeSelector
	}
	if len(s.AllowedUses) == 0 {
		s.AllowedUses = []string{UseWorkload, UseTunnel}
	}
	if s.AssignmentMode == "" {
		s.AssignmentMode = AssignAutomatic
	}
}

// Validate implements Resource with Calico's checks and reason texts
// (docs/calico-conventions.md §1.2). Call SetDefaults first: empty modes are invalid here.
func (p *IPPool) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &p.ObjectMeta)
	s := &p.Spec
	const cidrField = "IPPool.Spec.CIDR"
	var pfx netip.Prefix
	cidrOK := false
	switch pf, err := netip.ParsePrefix(s.CIDR); {
	case s.CIDR == "":
		fe.add(cidrField, s.CIDR, "IPPool CIDR must be specified")
	case err != nil:
		fe.add(cidrField, s.CIDR, "IPPool CIDR must be a valid subnet")
	case pf != pf.Masked():
		fe.add(cidrField, s.CIDR, "IPPool CIDR is not strictly masked")
	default:
		pfx, cidrOK = pf, true
	}
	v6 := cidrOK && pfx.Addr().Is6()
	if cidrOK {
		if v6 {
			if pfx.Overlaps(linkLocal6) {
				fe.add(cidrField, s.CIDR, "IPPool CIDR overlaps with IPv6 Link Local range fe80::/10")
			}
			fe.add(cidrField, s.CIDR, "IPv6 pools are not supported yet")
		} else {
			checkPoolRangeIPv4(&fe, cidrField, s.CIDR, pfx)
		}
	}
	const bsField = "IPPool.Spec.BlockSize"
	bsOK := true
	if v6 {
		if s.BlockSize < 116 || s.BlockSize > 128 {
			fe.add(bsField, s.BlockSize, "IPv6 block size must be between 116 and 128")
			bsOK = false
		}
	} else if s.BlockSize < 20 || s.BlockSize > 32 {
		fe.add(bsField, s.BlockSize, "IPv4 block size must be between 20 and 32")
		bsOK = false
	}
	if cidrOK && bsOK && !s.Disabled && pfx.Bits() > s.BlockSize {
		fe.add(cidrField, s.CIDR, "IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size.")
	}
	for _, m := range []struct {
		field string
		v     EncapMode
	}{{"IPPool.Spec.IPIPMode", s.IPIPMode}, {"IPPool.Spec.VXLANMode", s.VXLANMode}} {
		if m.v != EncapNever && m.v != EncapAlways && m.v != EncapCrossSubnet {
			fe.add(m.field, m.v, "must be one of Never, Always, CrossSubnet")
		}
	}
	ipip, vxlan := s.IPIPMode != "" && s.IPIPMode != EncapNever, s.VXLANMode != "" && s.VXLANMode != EncapNever
	if ipip && vxlan {
		fe.add("IPPool.Spec.VXLANMode", s.VXLANMode, "Cannot enable both VXLAN and IPIP on the same IPPool")
	}
	if ipip && v6 {
		fe.add("IPPool.Spec.IPIPMode", s.IPIPMode, "IPIP is not supported on an IPv6 IP pool")
	}
	validateSelector(&fe, "IPPool.Spec.NodeSelector", s.NodeSelector)
	if s.DisableBGPExport && vxlan {
		// Nodes learn VXLAN routes from BGP too (Calico's Felix derives
		// them from block affinities instead): a VXLAN pool kept out of
		// BGP would be unreachable from every other node.
		fe.add("IPPool.Spec.DisableBGPExport", true, notYet("disableBGPExport on a VXLAN pool", "nodes learn VXLAN routes from BGP; use vxlanMode Never, or export the pool"))
	}
	lb := false
	for _, u := range s.AllowedUses {
		switch u {
		case UseWorkload, UseTunnel:
		case UseLoadBalancer:
			lb = true
		default:
			fe.add("IPPool.Spec.AllowedUses", u, "must be one of Workload, Tunnel, LoadBalancer")
		}
	}
	if lb {
		switch {
		case len(s.AllowedUses) > 1:
			fe.add("IPPool.Spec.AllowedUses", fmt.Sprint(s.AllowedUses), "LoadBalancer cannot be combined with Workload or Tunnel")
		case ipip || vxlan:
			fe.add("IPPool.Spec.AllowedUses", UseLoadBalancer, "LoadBalancer pools cannot use IPIP or VXLAN")
		case s.DisableBGPExport:
			fe.add("IPPool.Spec.AllowedUses", UseLoadBalancer, "LoadBalancer pools cannot disable BGP export")
		case !selectsAll(s.NodeSelector):
			fe.add("IPPool.Spec.AllowedUses", UseLoadBalancer, "LoadBalancer pools need nodeSelector all()")
		}
	}
	if s.AssignmentMode != AssignAutomatic && s.AssignmentMode != AssignManual {
		fe.add("IPPool.Spec.AssignmentMode", s.AssignmentMode, "must be one of Automatic, Manual")
	}
	return fe.err()
}

// selectsAll reports whether selector s is all() (however written).
func selectsAll(s string) bool {
	sel, err := selector.Parse(s)
	return err == nil && sel.String() == DefaultNodeSelector
}

// ValidateUpdate checks what may not change between the stored pool old
// and its replacement p: CIDR and block size are immutable.
func (p *IPPool) ValidateUpdate(old *IPPool) error {
	var fe fieldErrors
	if p.Spec.CIDR != old.Spec.CIDR {
		fe.add("IPPool.Spec.CIDR", p.Spec.CIDR, "IPPool CIDR cannot be modified")
	}
	if p.Spec.BlockSize != old.Spec.BlockSize {
		fe.add("IPPool.Spec.BlockSize", p.Spec.BlockSize, "IPPool BlockSize cannot be modified")
	}
	if len(old.Spec.AllowedUses) == 1 && old.Spec.AllowedUses[0] == UseLoadBalancer {
		for _, u := range p.Spec.AllowedUses {
			if u != UseLoadBalancer {
				fe.add("IPPool.Spec.AllowedUses", u, "IPPool allowed use cannot be changed from LoadBalacer to Workload or Tunnel")
				break
			}
		}
	}
	return fe.err()
}

// Overlaps reports whether p's CIDR overlaps other's; false if either is
// unparsable.
func (p *IPPool) Overlaps(other *IPPool) bool {
	a, err1 := p.Prefix()
	b, err2 := other.Prefix()
	return err1 == nil && err2 == nil && a.Overlaps(b)
}

// OverlapError is Calico's reason for a new pool overlapping an existing
// one, as a validation error on IPPool.Spec.CIDR.
func (p *IPPool) OverlapError(other *IPPool) error {
	return &ValidationError{Fields: []FieldError{{
		Field: "IPPool.Spec.CIDR", Value: p.Spec.CIDR,
		Reason: fmt.Sprintf("IPPool(%s) CIDR overlaps with IPPool(%s) CIDR %s", p.Name, other.Name, other.Spec.CIDR),
	}}}
}
