package packet

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header (RFC 791 §3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ipv4VersIHL   = 0
	ipv4TOS       = 1
	ipv4TotalLen  = 2
	ipv4ID        = 4
	ipv4FlagsFrag = 6
	ipv4TTL       = 8
	ipv4Protocol  = 9
	ipv4Checksum  = 10
	ipv4Src       = 12
	ipv4Dst       = 16
)

// IPv4 header sizes.
const (
	IPv4MinHeaderLen = 20
	IPv4MaxHeaderLen = 60 // IHL is 4 bits of 32-bit words
)

// IPv4 protocol numbers (IANA) the switch handles.
const (
	ProtoICMP = 1
	ProtoIPIP = 4
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// Bits of the 3-bit IPv4 flags field, as returned by IPv4.Flags.
const (
	IPv4FlagMoreFragments = 0x1
	IPv4FlagDontFragment  = 0x2
)

// DefaultTTL is the TTL of packets the switch originates (RFC 1700's
// recommendation, and Linux's default).
const DefaultTTL = 64

const (
	ipv4FragOffsetMask = 0x1fff
	ipv4FlagsShift     = 13
)

// IPv4 is a view of an IPv4 packet starting at its header. Call Validate
// first: the accessors index the slice without further checks.
type IPv4 []byte

// Validate checks that b holds a complete IPv4 header and that the total
// length fits in b. b may be longer than the total length (Ethernet pads
// short frames to 60 bytes); reslice to TotalLen afterwards. It does not
// verify the header checksum: pods are on a virtual link and the kernel
// always fills it, so checking it per packet buys nothing.
func (b IPv4) Validate() ParseError {
	if len(b) < IPv4MinHeaderLen {
		return ErrTooShort
	}
	if b[ipv4VersIHL]>>4 != 4 {
		return ErrBadVersion
	}
	hl := b.HeaderLen()
	if hl < IPv4MinHeaderLen || hl > len(b) {
		return ErrBadIHL
	}
	if tl := b.TotalLen(); tl < hl || tl > len(b) {
		return ErrBadTotalLength
	}
	return ParseOK
}

// HeaderLen returns the header length in bytes (IHL*4).
func (b IPv4) HeaderLen() int { return int(b[ipv4VersIHL]&0x0f) * 4 }

// TOS returns the type-of-service (DSCP and ECN) byte.
func (b IPv4) TOS() uint8 { return b[ipv4TOS] }

// TotalLen returns the total length field: header plus payload.
func (b IPv4) TotalLen() int { return int(binary.BigEndian.Uint16(b[ipv4TotalLen:])) }

// SetTotalLen sets the total length field without touching the checksum.
func (b IPv4) SetTotalLen(n uint16) { binary.BigEndian.PutUint16(b[ipv4TotalLen:], n) }

// ID returns the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[ipv4ID:]) }

// SetID sets the identification field without touching the checksum.
func (b IPv4) SetID(id uint16) { binary.BigEndian.PutUint16(b[ipv4ID:], id) }

// Flags returns the 3-bit flags field (IPv4FlagDontFragment,
// IPv4FlagMoreFragments).
func (b IPv4) Flags() uint8 { return b[ipv4FlagsFrag] >> 5 }

// DontFragment reports whether DF is set.
func (b IPv4) DontFragment() bool { return b.Flags()&IPv4FlagDontFragment != 0 }

// MoreFragments reports whether MF is set.
func (b IPv4) MoreFragments() bool { return b.Flags()&IPv4FlagMoreFragments != 0 }

// FragmentOffset returns the fragment offset in bytes (the field counts
// 8-byte units; 8191*8 still fits in a uint16).
func (b IPv4) FragmentOffset() uint16 {
	return (binary.BigEndian.Uint16(b[ipv4FlagsFrag:]) & ipv4FragOffsetMask) * 8
}

// IsFragment reports whether b is any fragment of a larger datagram.
func (b IPv4) IsFragment() bool { return b.MoreFragments() || b.FragmentOffset() != 0 }

// TTL returns the time to live.
func (b IPv4) TTL() uint8 { return b[ipv4TTL] }

// Protocol returns the payload protocol number (ProtoTCP, ...).
func (b IPv4) Protocol() uint8 { return b[ipv4Protocol] }

// Checksum returns the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipv4Checksum:]) }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[ipv4Checksum:], c) }

// Src returns the source address.
func (b IPv4) Src() netip.Addr { return netip.AddrFrom4(b.SrcBytes()) }

// Dst returns the destination address.
func (b IPv4) Dst() netip.Addr { return netip.AddrFrom4(b.DstBytes()) }

// SrcBytes returns the source address as 4 bytes.
func (b IPv4) SrcBytes() [4]byte { return [4]byte(b[ipv4Src : ipv4Src+4]) }

// DstBytes returns the destination address as 4 bytes.
func (b IPv4) DstBytes() [4]byte { return [4]byte(b[ipv4Dst : ipv4Dst+4]) }

// SetSrc sets the source address without touching any checksum.
func (b IPv4) SetSrc(a [4]byte) { copy(b[ipv4Src:ipv4Src+4], a[:]) }

// SetDst sets the destination address without touching any checksum.
func (b IPv4) SetDst(a [4]byte) { copy(b[ipv4Dst:ipv4Dst+4], a[:]) }

// Payload returns the bytes after the header, up to the total length.
func (b IPv4) Payload() []byte { return b[b.HeaderLen():b.TotalLen()] }

// ComputeChecksum recomputes the header checksum from scratch and stores it.
func (b IPv4) ComputeChecksum() {
	b.SetChecksum(0)
	b.SetChecksum(Checksum(b[:b.HeaderLen()], 0))
}

// HeaderChecksumValid reports whether the header checksum is correct: the
// header including its checksum sums to all ones.
func (b IPv4) HeaderChecksumValid() bool {
	return Fold(Sum(b[:b.HeaderLen()], 0)) == 0xffff
}

// DecrementTTL lowers the TTL by one and patches the header checksum
// incrementally (RFC 1624 eqn. 3) instead of re-summing the header: this
// runs for every forwarded packet. The caller must have checked TTL > 1
// (and sent ICMP time exceeded otherwise); a TTL of 0 is left alone rather
// than wrapped to 255.
func (b IPv4) DecrementTTL() {
	ttl := b[ipv4TTL]
	if ttl == 0 {
		return
	}
	// TTL is the high byte of the 16-bit word it shares with Protocol.
	proto := uint16(b[ipv4Protocol])
	b[ipv4TTL] = ttl - 1
	b.SetChecksum(Update16(b.Checksum(), uint16(ttl)<<8|proto, uint16(ttl-1)<<8|proto))
}
