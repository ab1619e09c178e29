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

// DecapECN carries the outer header's ECN field into inner, the packet a
// tunnel delivers (RFC 6040 §4.2, figure 4, as Linux's tunnels
// decapsulate: INET_ECN_decapsulate). outer is the outer TOS byte.
//   - An outer CE over an ECN-capable inner packet sets its field to CE.
//   - An outer ECT(1) over an inner ECT(0) sets it to ECT(1) (L4S
//     traffic uses ECT(1) as its mark of capability).
//   - Anything else leaves inner as it is.
//
// A change patches the header checksum. An outer CE over a Not-ECT inner
// cannot be passed on (the transport would not understand the mark), and
// RFC 6040 says drop the packet, which is what the false result asks
// for: a drop is the congestion signal a Not-ECT transport understands.
func DecapECN(outer uint8, inner IPv4) bool {
	in := inner[ipv4TOS] & ECNMask
	switch outer & ECNMask {
	case ECNCE:
		switch in {
		case ECNNotECT:
			return false
		case ECNECT0, ECNECT1:
			setECN(inner, ECNCE)
		}
	case ECNECT1:
		if in == ECNECT0 {
			setECN(inner, ECNECT1)
		}
	}
	return true
}

// setECN sets the ECN field of ip's TOS byte and patches the header
// checksum (RFC 1624).
func setECN(ip IPv4, ecn uint8) {
	tos := ip[ipv4TOS]
	// TOS is the low byte of the 16-bit word it shares with version/IHL.
	vihl := uint16(ip[ipv4VersIHL]) << 8
	ip[ipv4TOS] = tos&^ECNMask | ecn
	ip.SetChecksum(Update16(ip.Checksum(), vihl|uint16(tos), vihl|uint16(ip[ipv4TOS])))
}
