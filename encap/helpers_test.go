package encap

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// This file holds the packet builders the unit, fuzz and namespace tests
// share, and slowDecap, the slow twin of DecapIPIP. Packets are built with
// gopacket, not with the packet package under our own decapsulator, so a
// shared misreading of the header cannot hide.

var (
	podA  = net.IPv4(192, 168, 1, 2).To4()
	podB  = net.IPv4(192, 168, 2, 2).To4()
	nodeA = net.IPv4(10, 250, 0, 1).To4()
	nodeB = net.IPv4(10, 250, 0, 2).To4()
)

// serialize lays out ls with lengths and checksums filled in.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// udpPacket returns an IPv4/UDP packet from src:1000 to dst:2000 carrying
// payload, with DF set as a pod's kernel would.
func udpPacket(t testing.TB, src, dst net.IP, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, udp, gopacket.Payload(payload))
}

// echoRequest returns an ICMP echo request from src to dst.
func echoRequest(t testing.TB, src, dst net.IP, id, seq uint16, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src, DstIP: dst}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}
	return serialize(t, ip, icmp, gopacket.Payload(payload))
}

// ipipPacket wraps inner in an outer IPv4 header from src to dst with
// protocol 4 and the given outer options (a multiple of 4 bytes).
func ipipPacket(t testing.TB, src, dst net.IP, options []layers.IPv4Option, inner []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: src, DstIP: dst, Options: options}
	return serialize(t, ip, gopacket.Payload(inner))
}

// slowDecap is DecapIPIP's twin: it reads every field byte by byte,
// straight from RFC 791's layout, and returns where the outer packet ends,
// where the inner one starts and how long it is.
func slowDecap(p []byte) (outerLen, innerOff, innerLen int, r DecapError) {
	check := func(b []byte, trunc, bad DecapError) (hl, tl int, r DecapError) {
		if len(b) < 20 {
			return 0, 0, trunc
		}
		if b[0]>>4 != 4 {
			return 0, 0, bad
		}
		hl = int(b[0]&0x0f) * 4
		if hl < 20 {
			return 0, 0, bad
		}
		if hl > len(b) {
			return 0, 0, trunc
		}
		tl = int(binary.BigEndian.Uint16(b[2:4]))
		if tl < hl {
			return 0, 0, bad
		}
		if tl > len(b) {
			return 0, 0, trunc
		}
		return hl, tl, DecapOK
	}
	hl, tl, r := check(p, DecapTruncatedOuter, DecapBadOuter)
	if r != DecapOK {
		return 0, 0, 0, r
	}
	if p[9] != 4 {
		return tl, 0, 0, DecapNotIPIP
	}
	mf := p[6]&0x20 != 0
	off := int(p[6]&0x1f)<<8 | int(p[7])
	if mf || off != 0 {
		return tl, 0, 0, DecapOuterFragment
	}
	_, itl, r := check(p[hl:tl], DecapTruncatedInner, DecapBadInner)
	if r != DecapOK {
		return tl, 0, 0, r
	}
	return tl, hl, itl, DecapOK
}
