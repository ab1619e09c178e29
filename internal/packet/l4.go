package packet

import "encoding/binary"

// TCP header (RFC 9293 §3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        Sequence Number                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Acknowledgment Number                      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Data |       |C|E|U|A|P|R|S|F|                               |
//	| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//	|       |       |R|E|G|K|H|T|N|N|                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Checksum            |         Urgent Pointer        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                           [Options]                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	tcpSrcPort    = 0
	tcpDstPort    = 2
	tcpSeq        = 4
	tcpAck        = 8
	tcpDataOffset = 12
	tcpFlags      = 13
	tcpWindow     = 14
	tcpChecksum   = 16
	tcpUrgent     = 18
)

// UDP header (RFC 768):
//
//	 0      7 8     15 16    23 24    31
//	+--------+--------+--------+--------+
//	|     Source      |   Destination   |
//	|      Port       |      Port       |
//	+--------+--------+--------+--------+
//	|     Length      |    Checksum     |
//	+--------+--------+--------+--------+
const (
	udpSrcPort  = 0
	udpDstPort  = 2
	udpLength   = 4
	udpChecksum = 6
)

// ICMP header (RFC 792). The second word depends on the type: echo ID and
// sequence, or unused with the next-hop MTU in its low half for
// "fragmentation needed" (RFC 1191 §4).
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Rest of header (unused / ID+Seq / Next-Hop MTU)           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	icmpType     = 0
	icmpCode     = 1
	icmpChecksum = 2
	icmpRest     = 4
	icmpMTU      = 6
)

// Transport header sizes.
const (
	TCPMinHeaderLen = 20
	TCPMaxHeaderLen = 60
	UDPHeaderLen    = 8
	ICMPHeaderLen   = 8
)

// TCP flags, as returned by TCP.Flags.
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
	TCPFlagURG = 0x20
	TCPFlagECE = 0x40
	TCPFlagCWR = 0x80
)

// ICMP types (RFC 792, RFC 950).
const (
	ICMPEchoReply       = 0
	ICMPDestUnreachable = 3
	ICMPSourceQuench    = 4
	ICMPRedirect        = 5
	ICMPEcho            = 8
	ICMPTimeExceeded    = 11
	ICMPParamProblem    = 12
)

// ICMP codes. Destination-unreachable codes (RFC 792, RFC 1812 §5.2.7.1)
// and the time-exceeded code for TTL expiry in transit.
const (
	ICMPNetUnreachable      = 0
	ICMPHostUnreachable     = 1
	ICMPPortUnreachable     = 3
	ICMPFragmentationNeeded = 4
	ICMPAdminProhibited     = 13
	ICMPTTLExceeded         = 0
)

// TCP is a view of a TCP header and its payload. ValidateTransport checks
// that the header is complete.
type TCP []byte

// SrcPort returns the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[tcpSrcPort:]) }

// DstPort returns the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[tcpDstPort:]) }

// SetSrcPort sets the source port without touching the checksum.
func (t TCP) SetSrcPort(p uint16) { binary.BigEndian.PutUint16(t[tcpSrcPort:], p) }

// SetDstPort sets the destination port without touching the checksum.
func (t TCP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(t[tcpDstPort:], p) }

// Seq returns the sequence number.
func (t TCP) Seq() uint32 { return binary.BigEndian.Uint32(t[tcpSeq:]) }

// SetSeq sets the sequence number without touching the checksum.
func (t TCP) SetSeq(s uint32) { binary.BigEndian.PutUint32(t[tcpSeq:], s) }

// Ack returns the acknowledgment number.
func (t TCP) Ack() uint32 { return binary.BigEndian.Uint32(t[tcpAck:]) }

// SetAck sets the acknowledgment number without touching the checksum.
func (t TCP) SetAck(a uint32) { binary.BigEndian.PutUint32(t[tcpAck:], a) }

// DataOffset returns the header length in bytes, options included.
func (t TCP) DataOffset() int { return int(t[tcpDataOffset]>>4) * 4 }

// Flags returns the flag byte (TCPFlagFIN ... TCPFlagCWR).
func (t TCP) Flags() uint8 { return t[tcpFlags] }

// SetFlags sets the flag byte without touching the checksum.
func (t TCP) SetFlags(f uint8) { t[tcpFlags] = f }

// Window returns the (unscaled) receive window.
func (t TCP) Window() uint16 { return binary.BigEndian.Uint16(t[tcpWindow:]) }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[tcpChecksum:]) }

// SetChecksum sets the checksum field.
func (t TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(t[tcpChecksum:], c) }

// UDP is a view of a UDP header and its payload.
type UDP []byte

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[udpSrcPort:]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[udpDstPort:]) }

// SetSrcPort sets the source port without touching the checksum.
func (u UDP) SetSrcPort(p uint16) { binary.BigEndian.PutUint16(u[udpSrcPort:], p) }

// SetDstPort sets the destination port without touching the checksum.
func (u UDP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(u[udpDstPort:], p) }

// Length returns the length field: header plus payload.
func (u UDP) Length() uint16 { return binary.BigEndian.Uint16(u[udpLength:]) }

// SetLength sets the length field.
func (u UDP) SetLength(n uint16) { binary.BigEndian.PutUint16(u[udpLength:], n) }

// Checksum returns the checksum field; 0 means "not computed" (RFC 768).
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[udpChecksum:]) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[udpChecksum:], c) }

// ICMP is a view of an ICMP message.
type ICMP []byte

// Type returns the message type.
func (c ICMP) Type() uint8 { return c[icmpType] }

// Code returns the message code.
func (c ICMP) Code() uint8 { return c[icmpCode] }

// SetType sets the message type.
func (c ICMP) SetType(t uint8) { c[icmpType] = t }

// SetCode sets the message code.
func (c ICMP) SetCode(v uint8) { c[icmpCode] = v }

// Checksum returns the checksum field.
func (c ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(c[icmpChecksum:]) }

// SetChecksum sets the checksum field.
func (c ICMP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[icmpChecksum:], v) }

// MTU returns the next-hop MTU of a "fragmentation needed" message
// (RFC 1191 §4).
func (c ICMP) MTU() uint16 { return binary.BigEndian.Uint16(c[icmpMTU:]) }

// IsError reports whether the type is an ICMP error message rather than a
// query. RFC 1812 §4.3.2.7 forbids answering an error with an error.
func (c ICMP) IsError() bool { return isICMPErrorType(c.Type()) }

func isICMPErrorType(t uint8) bool {
	switch t {
	case ICMPDestUnreachable, ICMPSourceQuench, ICMPRedirect, ICMPTimeExceeded, ICMPParamProblem:
		return true
	}
	return false
}

// ValidateTransport checks that ip's payload holds a complete header for
// its TCP, UDP or ICMP protocol (ip must have passed Validate and been
// resliced to TotalLen). Non-first fragments carry no transport header and
// other protocols are not inspected; both pass.
func ValidateTransport(ip IPv4) ParseError {
	if ip.FragmentOffset() != 0 {
		return ParseOK
	}
	p := ip.Payload()
	switch ip.Protocol() {
	case ProtoTCP:
		if len(p) < TCPMinHeaderLen {
			return ErrTruncatedL4
		}
		if d := TCP(p).DataOffset(); d < TCPMinHeaderLen || d > len(p) {
			return ErrTruncatedL4
		}
	case ProtoUDP:
		if len(p) < UDPHeaderLen {
			return ErrTruncatedL4
		}
		if l := int(UDP(p).Length()); l < UDPHeaderLen || l > len(p) {
			return ErrTruncatedL4
		}
	case ProtoICMP:
		if len(p) < ICMPHeaderLen {
			return ErrTruncatedL4
		}
	}
	return ParseOK
}

// transportChecksumOffset returns where the checksum field of proto sits in
// its header, and the shortest header that contains it.
func transportChecksumOffset(proto uint8) (off, minLen int, ok bool) {
	switch proto {
	case ProtoTCP:
		return tcpChecksum, TCPMinHeaderLen, true
	case ProtoUDP:
		return udpChecksum, UDPHeaderLen, true
	case ProtoICMP:
		return icmpChecksum, ICMPHeaderLen, true
	}
	return 0, 0, false
}

// transportSum returns the sum the transport checksum of ip covers, the
// checksum field included, for TCP, UDP (pseudo header, RFC 793, RFC 768)
// and ICMP (no pseudo header, RFC 792).
func transportSum(ip IPv4, p []byte) uint64 {
	var s uint64
	if proto := ip.Protocol(); proto != ProtoICMP {
		s = PseudoHeaderSum(proto, ip.SrcBytes(), ip.DstBytes(), uint16(len(p)))
	}
	return Sum(p, s)
}

// TransportChecksum computes the TCP, UDP or ICMP checksum of ip's payload
// as the sender should have written it: over the pseudo header (not for
// ICMP) and the payload with the checksum field taken as zero. A UDP
// result of 0 is returned as 0xffff, since 0 means "no checksum" there
// (RFC 768). It returns 0 for other protocols, for fragments and when the
// payload is too short to hold the checksum field. ip must have passed
// Validate.
func TransportChecksum(ip IPv4) uint16 {
	off, minLen, ok := transportChecksumOffset(ip.Protocol())
	p := ip.Payload()
	if !ok || ip.IsFragment() || len(p) < minLen {
		return 0
	}
	// The field is at an even offset, so the words after it keep their
	// alignment when the sum skips it.
	var s uint64
	if proto := ip.Protocol(); proto != ProtoICMP {
		s = PseudoHeaderSum(proto, ip.SrcBytes(), ip.DstBytes(), uint16(len(p)))
	}
	s = Sum(p[:off], s)
	s = Sum(p[off+2:], s)
	c := ^Fold(s)
	if c == 0 && ip.Protocol() == ProtoUDP {
		c = 0xffff
	}
	return c
}

// TransportChecksumValid reports whether ip's TCP, UDP or ICMP checksum is
// correct: everything it covers, the field included, sums to all ones. A
// UDP checksum of 0 (not computed) counts as valid. Other protocols,
// fragments and truncated headers report false. ip must have passed
// Validate.
func TransportChecksumValid(ip IPv4) bool {
	_, minLen, ok := transportChecksumOffset(ip.Protocol())
	p := ip.Payload()
	if !ok || ip.IsFragment() || len(p) < minLen {
		return false
	}
	if ip.Protocol() == ProtoUDP && UDP(p).Checksum() == 0 {
		return true
	}
	return Fold(transportSum(ip, p)) == 0xffff
}
