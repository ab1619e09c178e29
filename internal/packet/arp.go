package packet

import (
	"encoding/binary"
	"net/netip"
)

// ARP packet for Ethernet and IPv4 (RFC 826):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      Hardware Type (1)        |     Protocol Type (0x0800)    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  HLen (6)     |   PLen (4)    |          Operation            |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                Sender Hardware Address (6 bytes)              |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |   Sender Protocol Address     |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  (4 bytes, continued)         |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	|                Target Hardware Address (6 bytes)              |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                   Target Protocol Address                     |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	arpHType = 0
	arpPType = 2
	arpHLen  = 4
	arpPLen  = 5
	arpOp    = 6
	arpSHA   = 8
	arpSPA   = 14
	arpTHA   = 18
	arpTPA   = 24
)

// ARPLen is the size of an Ethernet/IPv4 ARP packet.
const ARPLen = 28

// ARP operations (RFC 826).
const (
	ARPRequest = 1
	ARPReply   = 2
)

// arpHTypeEthernet is the hardware type for Ethernet (IANA ARP parameters).
const arpHTypeEthernet = 1

// ARP is a view of an Ethernet/IPv4 ARP packet. Call IsValid before any
// accessor; other hardware or protocol types have a different layout.
type ARP []byte

// IsValid reports whether a is a complete Ethernet/IPv4 ARP packet.
func (a ARP) IsValid() bool {
	return len(a) >= ARPLen &&
		binary.BigEndian.Uint16(a[arpHType:]) == arpHTypeEthernet &&
		binary.BigEndian.Uint16(a[arpPType:]) == EtherTypeIPv4 &&
		a[arpHLen] == 6 && a[arpPLen] == 4
}

// Op returns the operation (ARPRequest or ARPReply).
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[arpOp:]) }

// SenderMAC returns the sender hardware address.
func (a ARP) SenderMAC() MAC { return MAC(a[arpSHA : arpSHA+6]) }

// SenderIP returns the sender protocol address.
func (a ARP) SenderIP() netip.Addr { return netip.AddrFrom4([4]byte(a[arpSPA : arpSPA+4])) }

// TargetMAC returns the target hardware address (zero in most requests).
func (a ARP) TargetMAC() MAC { return MAC(a[arpTHA : arpTHA+6]) }

// TargetIP returns the target protocol address: the address being asked
// for in a request.
func (a ARP) TargetIP() netip.Addr { return netip.AddrFrom4([4]byte(a[arpTPA : arpTPA+4])) }

// ARPFrameLen is the length of the frame BuildARPReply writes: Ethernet
// header plus ARP, without padding to the 60-byte minimum. A TAP does not
// need padding, and the kernel pads on real wires itself.
const ARPFrameLen = EthernetHeaderLen + ARPLen

// BuildARPReply writes into dst the Ethernet frame answering req with
// replyMAC as the owner of req's target address (proxy ARP). It returns the
// number of bytes written, ARPFrameLen, or 0 if dst is too small or req is
// not a valid Ethernet/IPv4 ARP packet.
func BuildARPReply(dst []byte, req ARP, replyMAC MAC) int {
	if len(dst) < ARPFrameLen || !req.IsValid() {
		return 0
	}
	// Read everything out of req first: a caller may answer in place, with
	// dst overlapping the request frame.
	reqMAC := req.SenderMAC()
	var reqIP, targetIP [4]byte
	copy(reqIP[:], req[arpSPA:arpSPA+4])
	copy(targetIP[:], req[arpTPA:arpTPA+4])

	eth := Ethernet(dst[:EthernetHeaderLen])
	eth.SetDst(reqMAC)
	eth.SetSrc(replyMAC)
	eth.SetEtherType(EtherTypeARP)

	a := dst[EthernetHeaderLen:ARPFrameLen]
	binary.BigEndian.PutUint16(a[arpHType:], arpHTypeEthernet)
	binary.BigEndian.PutUint16(a[arpPType:], EtherTypeIPv4)
	a[arpHLen] = 6
	a[arpPLen] = 4
	binary.BigEndian.PutUint16(a[arpOp:], ARPReply)
	copy(a[arpSHA:], replyMAC[:])
	copy(a[arpSPA:], targetIP[:])
	copy(a[arpTHA:], reqMAC[:])
	copy(a[arpTPA:], reqIP[:])
	return ARPFrameLen
}
