package packet

// ECN codepoints (RFC 3168 §5): the low two bits of the TOS byte.
const (
	ECNMask   uint8 = 0x03
	ECNNotECT uint8 = 0x00 // the transport does not do ECN
	ECNECT1   uint8 = 0x01
	ECNECT0   uint8 = 0x02
	ECNCE     uint8 = 0x03 // congestion experienced
)

// TunnelECN returns the ECN bits of the outer header for an inner packet
// whose TOS byte is inner: RFC 6040 §4.1's normal mode, as Linux's
// tunnels encapsulate (INET_ECN_encapsulate). The inner ECN field is
// copied, so routers on the underlay can mark congestion instead of
// dropping, except that an inner CE goes out as ECT(0): the mark is
// already in the inner header, and a second one outside would count the
// same congestion twice. The outer DSCP stays 0, as on a Linux VXLAN or
// ipip device without "tos inherit".
func TunnelECN(inner uint8) uint8 {
	if inner&ECNMask == ECNCE {
		return ECNECT0
	}
	return inner & ECNMask
}

// DecapECN carries the outer header's congestion mark into inner, the
// packet a tunnel delivers (RFC 6040 §4.2, as Linux's tunnels
// decapsulate: __INET_ECN_decapsulate). outer is the outer TOS byte. An
// outer CE over an ECN-capable inner sets the inner field to CE, and the
// header checksum is patched; anything else leaves inner as it is. An
// outer CE over a Not-ECT inner cannot be passed on (the transport would
// not understand the mark), and RFC 6040 says drop the packet, which
// is what the false result asks for: a drop is the congestion signal a
// Not-ECT transport understands.
func DecapECN(outer uint8, inner IPv4) bool {
	if outer&ECNMask != ECNCE {
		return true
	}
	tos := inner[ipv4TOS]
	switch tos & ECNMask {
	case ECNNotECT:
		return false
	case ECNCE:
		return true
	}
	// TOS is the low byte of the 16-bit word it shares with version/IHL.
	vihl := uint16(inner[ipv4VersIHL]) << 8
	inner[ipv4TOS] = tos | ECNCE
	inner.SetChecksum(Update16(inner.Checksum(), vihl|uint16(tos), vihl|uint16(tos|ECNCE)))
	return true
}
