package packet

import (
	"encoding/binary"
	"math/rand/v2"
)

// This file holds the slow, obviously correct twins and the packet builders
// the tests and fuzz seeds share. They write every field by hand and never
// call the views or checksum code under test.

// slowSum is the byte-at-a-time twin of Fold(Sum(b, initial)): RFC 1071's
// definition, adding each byte to the high or low half of a 16-bit word
// and folding the carry back in after every step.
func slowSum(b []byte, initial uint32) uint16 {
	s := initial
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	for i, c := range b {
		if i%2 == 0 {
			s += uint32(c) << 8
		} else {
			s += uint32(c)
		}
		for s > 0xffff {
			s = s&0xffff + s>>16
		}
	}
	return uint16(s)
}

// slowChecksum is the value a checksum field gets: the inverted slowSum.
func slowChecksum(b []byte, initial uint32) uint16 { return ^slowSum(b, initial) }

// slowPseudo is the pseudo-header sum of RFC 793 §3.1, word by word.
func slowPseudo(proto uint8, src, dst [4]byte, length int) uint32 {
	var ph [12]byte
	copy(ph[0:], src[:])
	copy(ph[4:], dst[:])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(length))
	return uint32(slowSum(ph[:], 0))
}

type ipv4Spec struct {
	tos     uint8
	id      uint16
	flags   uint8  // 3-bit field: 2 = DF, 1 = MF
	fragOff uint16 // bytes, multiple of 8
	ttl     uint8
	proto   uint8
	src     [4]byte
	dst     [4]byte
	options []byte // multiple of 4 bytes
}

// buildIPv4 returns an IPv4 packet with a correct header checksum.
func buildIPv4(s ipv4Spec, payload []byte) []byte {
	hl := 20 + len(s.options)
	b := make([]byte, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = s.tos
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], s.id)
	binary.BigEndian.PutUint16(b[6:], uint16(s.flags)<<13|s.fragOff/8)
	b[8] = s.ttl
	b[9] = s.proto
	copy(b[12:], s.src[:])
	copy(b[16:], s.dst[:])
	copy(b[20:], s.options)
	binary.BigEndian.PutUint16(b[10:], slowChecksum(b[:hl], 0))
	copy(b[hl:], payload)
	return b
}

type tcpSpec struct {
	srcPort, dstPort uint16
	seq, ack         uint32
	flags            uint8
	window           uint16
	options          []byte // multiple of 4 bytes
}

// tcpHeader returns a TCP header with a zero checksum.
func tcpHeader(t tcpSpec) []byte {
	hl := 20 + len(t.options)
	h := make([]byte, hl)
	binary.BigEndian.PutUint16(h[0:], t.srcPort)
	binary.BigEndian.PutUint16(h[2:], t.dstPort)
	binary.BigEndian.PutUint32(h[4:], t.seq)
	binary.BigEndian.PutUint32(h[8:], t.ack)
	h[12] = byte(hl/4) << 4
	h[13] = t.flags
	binary.BigEndian.PutUint16(h[14:], t.window)
	copy(h[20:], t.options)
	return h
}

// buildTCPv4 returns an IPv4/TCP packet with both checksums correct.
func buildTCPv4(ip ipv4Spec, t tcpSpec, payload []byte) []byte {
	ip.proto = ProtoTCP
	seg := append(tcpHeader(t), payload...)
	c := slowChecksum(seg, slowPseudo(ProtoTCP, ip.src, ip.dst, len(seg)))
	binary.BigEndian.PutUint16(seg[16:], c)
	return buildIPv4(ip, seg)
}

// buildUDPv4 returns an IPv4/UDP packet with both checksums correct.
func buildUDPv4(ip ipv4Spec, sport, dport uint16, payload []byte) []byte {
	ip.proto = ProtoUDP
	seg := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dport)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	c := slowChecksum(seg, slowPseudo(ProtoUDP, ip.src, ip.dst, len(seg)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[6:], c)
	return buildIPv4(ip, seg)
}

// buildICMPv4 returns an IPv4/ICMP packet with both checksums correct;
// rest is the second ICMP word.
func buildICMPv4(ip ipv4Spec, typ, code uint8, rest uint32, payload []byte) []byte {
	ip.proto = ProtoICMP
	m := make([]byte, 8+len(payload))
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint32(m[4:], rest)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:], slowChecksum(m, 0))
	return buildIPv4(ip, m)
}

// ethFrame prepends an Ethernet header.
func ethFrame(dst, src MAC, etherType uint16, payload []byte) []byte {
	f := make([]byte, 14+len(payload))
	copy(f[0:], dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], etherType)
	copy(f[14:], payload)
	return f
}

// arpRequestFrame returns a broadcast "who has tpa, tell spa" frame padded
// to the 60-byte Ethernet minimum, as a real NIC would send it.
func arpRequestFrame(sha MAC, spa, tpa [4]byte) []byte {
	a := make([]byte, 28+18)
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:], sha[:])
	copy(a[14:], spa[:])
	copy(a[24:], tpa[:])
	return ethFrame(BroadcastMAC, sha, 0x0806, a)
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var (
	podA     = [4]byte{192, 168, 1, 10}
	podB     = [4]byte{192, 168, 2, 20}
	podMAC   = MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	switchIP = [4]byte{169, 254, 1, 1}
)
