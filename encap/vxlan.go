package encap

import (
	"crypto/sha1"
	"encoding/binary"

	"podnet/internal/packet"
)

// VXLAN header (RFC 7348 §5):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|R|R|R|R|I|R|R|R|            Reserved                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                VXLAN Network Identifier (VNI) |   Reserved    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// followed by the inner Ethernet frame (without FCS). The outer UDP
// header is the kernel's business: a UDP socket adds it on send and strips
// it on receive.
const (
	vxlanFlags = 0 // one byte: R R R R I R R R
	vxlanVNI   = 4 // three bytes, then one reserved byte
)

// Specification constants (VXLAN).
const (
	// VXLANHeaderLen is the size of the VXLAN header.
	VXLANHeaderLen = 8

	// VXLANFlagVNI is the I flag: "MUST be set to 1 for a valid VXLAN
	// Network ID (VNI)" (RFC 7348 §5).
	VXLANFlagVNI = 0x08

	// VXLANPort is the IANA-assigned UDP port (RFC 7348 §5) and Calico's
	// FelixConfiguration vxlanPort default.
	VXLANPort = 4789

	// DefaultVNI is Calico's FelixConfiguration vxlanVNI default.
	DefaultVNI = 4096

	// MaxVNI is the largest 24-bit VNI.
	MaxVNI = 1<<24 - 1

	// VXLANOverhead is what VXLAN adds in front of an inner IPv4 packet on
	// an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
	// Ethernet (14). Pods on VXLAN routes get underlay MTU − 50, as
	// Calico's vxlanMTU auto-detection gives them (1500 → 1450).
	VXLANOverhead = packet.IPv4MinHeaderLen + 8 + VXLANHeaderLen + packet.EthernetHeaderLen
)

// VXLAN is a view of a VXLAN header. The slice must be at least
// VXLANHeaderLen bytes long; DecapVXLAN checks it.
type VXLAN []byte

// Flags returns the flags byte (the I flag is VXLANFlagVNI).
func (v VXLAN) Flags() uint8 { return v[vxlanFlags] }

// HasVNI reports whether the I flag is set.
func (v VXLAN) HasVNI() bool { return v[vxlanFlags]&VXLANFlagVNI != 0 }

// VNI returns the 24-bit VXLAN Network Identifier.
func (v VXLAN) VNI() uint32 { return binary.BigEndian.Uint32(v[vxlanVNI:]) >> 8 }

// SetVNI sets the VNI (the low 24 bits of vni) and leaves the reserved
// byte after it alone.
func (v VXLAN) SetVNI(vni uint32) {
	v[vxlanVNI] = byte(vni >> 16)
	v[vxlanVNI+1] = byte(vni >> 8)
	v[vxlanVNI+2] = byte(vni)
}

// Payload returns the inner Ethernet frame.
func (v VXLAN) Payload() []byte { return v[VXLANHeaderLen:] }

// VTEPMAC returns the MAC Calico gives a node's VXLAN tunnel endpoint when
// Node.spec.vxlanTunnelMACAddr is not set: 0x66 ('f') followed by the
// first five bytes of SHA-1(nodeName) (felix/calc/vxlan_resolver.go). 0x66
// has the locally-administered bit set and the group bit clear, so it is a
// valid unicast address that no NIC vendor owns.
func VTEPMAC(nodeName string) packet.MAC {
	sum := sha1.Sum([]byte(nodeName))
	return packet.MAC{0x66, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// DecapVXLAN takes apart payload, a UDP payload as a UDP socket delivers
// it (the VXLAN header followed by the inner Ethernet frame), and returns
// a view of the inner frame; nothing is copied. inner is nil unless reason
// is DecapOK.
//
// The I flag must be set (RFC 7348 §5) and the VNI must equal vni. The
// reserved bits, the seven other flag bits and the bytes around the VNI,
// are ignored as RFC 7348 §5 says receivers must. Linux's vxlan_rcv is
// stricter by default: it drops packets with any unknown bit set unless
// an extension (GBP, GPE, RCO) claims it (TestKernelVXLANInterop records
// this for the running kernel; 6.18 drops them). Being lenient costs nothing
// here since the VNI and the outer source are checked anyway, and it
// interoperates with senders that set bits Linux has no use for.
//
// The inner frame must hold at least an Ethernet header. Its EtherType,
// its destination MAC and whether the outer source is a known node are the
// switch's to check: see the package comment.
func DecapVXLAN(payload []byte, vni uint32) (inner packet.Ethernet, reason DecapError) {
	if len(payload) < VXLANHeaderLen {
		return nil, DecapTruncatedVXLAN
	}
	v := VXLAN(payload)
	if !v.HasVNI() {
		return nil, DecapBadVXLANFlags
	}
	if v.VNI() != vni {
		return nil, DecapWrongVNI
	}
	if len(payload) < VXLANHeaderLen+packet.EthernetHeaderLen {
		return nil, DecapTruncatedInnerEthernet
	}
	return packet.Ethernet(payload[VXLANHeaderLen:]), DecapOK
}

// EncapVXLAN writes a VXLAN header for vni (I flag set, reserved bits
// zero) into buf[off-VXLANHeaderLen:off], in front of the inner Ethernet
// frame the caller has already placed at buf[off:], and returns
// off-VXLANHeaderLen, where the UDP payload now starts. Reserve the room
// with headroom (packet.Headroom is enough for all of VXLANOverhead); off
// must be at least VXLANHeaderLen. It does not allocate.
func EncapVXLAN(buf []byte, off int, vni uint32) int {
	start := off - VXLANHeaderLen
	h := VXLAN(buf[start:off:off])
	// One 8-byte store: flags, three reserved bytes, VNI, reserved byte.
	binary.BigEndian.PutUint64(h, uint64(VXLANFlagVNI)<<56|uint64(vni&MaxVNI)<<8)
	return start
}

// The kernel's default net.ipv4.ip_local_port_range, the range
// udp_flow_src_port picks VXLAN source ports from.
const (
	flowPortMin = 32768
	flowPortMax = 60999
)

// FlowSourcePort picks the outer UDP source port for inner, an inner
// Ethernet frame, from a hash of its flow: IPv4 source, destination and
// protocol, plus the ports for TCP and UDP. RFC 7348 §5 recommends this
// so that underlay ECMP and the receiving NIC's RSS spread flows while
// keeping each flow's packets in order. Like the kernel's
// udp_flow_src_port it returns a port in [32768, 60999], the default
// ephemeral range; unlike it, the hash is unseeded, so it is the same on
// every node and across restarts.
//
// Fragments are hashed without ports (only the first carries them), so
// all fragments of a datagram take the same port. Frames that are not
// IPv4, or too short to parse, hash their first bytes instead. It reads
// at most the headers, never panics and does not allocate.
func FlowSourcePort(inner []byte) uint16 {
	var a, b uint64
	e := inner
	if len(e) >= packet.EthernetHeaderLen && packet.Ethernet(e).EtherType() == packet.EtherTypeIPv4 &&
		len(e) >= packet.EthernetHeaderLen+packet.IPv4MinHeaderLen {
		ip := packet.IPv4(e[packet.EthernetHeaderLen:])
		a = uint64(binary.BigEndian.Uint32(ip[12:16]))<<32 | uint64(binary.BigEndian.Uint32(ip[16:20]))
		proto := ip.Protocol()
		b = uint64(proto) << 32
		hl := ip.HeaderLen()
		if (proto == packet.ProtoTCP || proto == packet.ProtoUDP) && !ip.IsFragment() &&
			hl >= packet.IPv4MinHeaderLen && len(ip) >= hl+4 {
			b |= uint64(binary.BigEndian.Uint32(ip[hl : hl+4]))
		}
	} else {
		// Not IPv4 (ARP): whatever is there, so the port is still
		// deterministic. ARP between VTEPs is rare; spreading it does
		// not matter.
		var w [16]byte
		copy(w[:], e)
		a = binary.BigEndian.Uint64(w[:8])
		b = binary.BigEndian.Uint64(w[8:]) ^ uint64(len(e))<<48
	}
	h := mix64(a ^ mix64(b^0x9e3779b97f4a7c15))
	// Scale the top 32 bits into the range, as udp_flow_src_port does
	// (multiply-shift instead of a modulo).
	return uint16(flowPortMin + (h>>32)*(flowPortMax-flowPortMin+1)>>32)
}

// mix64 is MurmurHash3's 64-bit finalizer: every input bit affects every
// output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// VXLANOuterECN returns the ECN bits for the outer header of payload, a
// VXLAN datagram's UDP payload (VXLAN header, inner Ethernet frame): those
// of its inner IPv4 header, as packet.TunnelECN says, or 0 if the inner
// frame is not IPv4. The Linux VXLAN device does the same
// (ip_tunnel_ecn_encap).
func VXLANOuterECN(payload []byte) uint8 {
	const innerIP = VXLANHeaderLen + packet.EthernetHeaderLen
	if len(payload) < innerIP+packet.IPv4MinHeaderLen ||
		packet.Ethernet(payload[VXLANHeaderLen:]).EtherType() != packet.EtherTypeIPv4 || payload[innerIP]>>4 != 4 {
		return 0
	}
	return packet.TunnelECN(payload[innerIP+1])
}
