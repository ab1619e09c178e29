package packet

import "encoding/binary"

// ICMPErrorMaxLen bounds the ICMP errors the switch originates, IP header
// included: RFC 1812 §4.3.2.3 says to quote as much of the offending
// datagram as fits in 576 bytes, the minimum every IPv4 host must accept.
const ICMPErrorMaxLen = 576

// icmpErrorTOS is the TOS byte of originated ICMP errors: precedence 6
// (internetwork control), as Linux's icmp_send uses, so they survive the
// same congestion that may have caused them (RFC 1812 §4.3.2.5).
const icmpErrorTOS = 0xc0

// icmpErrorHdrLen is the outer IPv4 header plus the ICMP header.
const icmpErrorHdrLen = IPv4MinHeaderLen + ICMPHeaderLen

// BuildICMPError writes into dst an IPv4 packet (no Ethernet header)
// carrying an ICMP error of type typ and code about orig, from src to
// orig's source, and returns its length. The body quotes orig's header and
// as much of its payload as keeps the result within ICMPErrorMaxLen; for
// "fragmentation needed" nextHopMTU goes into bytes 6-7 (RFC 1191 §4). A
// ttl of 0 means DefaultTTL. dst may overlap orig: orig is read before dst
// is written.
//
// It returns 0, and writes nothing, when RFC 1812 §4.3.2.7 forbids the
// error: orig is itself an ICMP error (or too short to tell), a non-first
// fragment, sent from an address that is not a single host (0/8, 127/8,
// multicast, class E and broadcast), or sent to multicast or the limited
// broadcast address. It also returns 0 when orig is not a valid IPv4
// packet or dst cannot hold orig's header and first 8 payload bytes, the
// minimum quote RFC 792 asks for.
func BuildICMPError(dst []byte, orig IPv4, typ, code uint8, nextHopMTU uint16, src [4]byte, ttl uint8) int {
	if orig.Validate() != ParseOK {
		return 0
	}
	orig = orig[:orig.TotalLen()]
	if orig.FragmentOffset() != 0 {
		return 0
	}
	origSrc := orig.SrcBytes()
	if !isSingleHost(origSrc) || isMulticastOrBroadcast(orig.DstBytes()) {
		return 0
	}
	if orig.Protocol() == ProtoICMP {
		p := orig.Payload()
		if len(p) < 1 || isICMPErrorType(p[icmpType]) {
			return 0
		}
	}
	minQuote := min(len(orig), orig.HeaderLen()+8)
	if len(dst) < icmpErrorHdrLen+minQuote {
		return 0
	}
	quote := min(len(orig), ICMPErrorMaxLen-icmpErrorHdrLen, len(dst)-icmpErrorHdrLen)
	total := icmpErrorHdrLen + quote
	if ttl == 0 {
		ttl = DefaultTTL
	}

	// copy is a memmove, so this is safe even when dst and orig overlap;
	// orig must not be read after it.
	copy(dst[icmpErrorHdrLen:total], orig[:quote])

	ip := IPv4(dst[:total])
	ip[ipv4VersIHL] = 4<<4 | IPv4MinHeaderLen/4
	ip[ipv4TOS] = icmpErrorTOS
	ip.SetTotalLen(uint16(total))
	ip.SetID(0)                                       // 576 bytes fit every IPv4 link, so the ID is never used
	binary.BigEndian.PutUint16(ip[ipv4FlagsFrag:], 0) // DF clear, offset 0
	ip[ipv4TTL] = ttl
	ip[ipv4Protocol] = ProtoICMP
	ip.SetSrc(src)
	ip.SetDst(origSrc)
	ip.ComputeChecksum()

	icmp := ICMP(dst[IPv4MinHeaderLen:total])
	icmp.SetType(typ)
	icmp.SetCode(code)
	icmp.SetChecksum(0)
	binary.BigEndian.PutUint32(icmp[icmpRest:], 0)
	if typ == ICMPDestUnreachable && code == ICMPFragmentationNeeded {
		binary.BigEndian.PutUint16(icmp[icmpMTU:], nextHopMTU)
	}
	icmp.SetChecksum(Checksum(icmp, 0))
	return total
}

// isSingleHost reports whether a can be the source of a datagram an ICMP
// error may answer (RFC 1812 §4.3.2.7, §5.3.7).
func isSingleHost(a [4]byte) bool {
	switch {
	case a[0] == 0: // "this network" 0/8, including 0.0.0.0
		return false
	case a[0] == 127: // loopback
		return false
	case a[0] >= 224: // multicast 224/4, class E 240/4 and 255.255.255.255
		return false
	}
	return true
}

// isMulticastOrBroadcast reports whether a is a multicast or the limited
// broadcast address. Directed broadcasts cannot be recognised without the
// subnet, and pods live on /32s.
func isMulticastOrBroadcast(a [4]byte) bool {
	return a[0]&0xf0 == 0xe0 || a == [4]byte{255, 255, 255, 255}
}
