package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"podnet/internal/packet"
)

// Packet builders for tests and fuzz seeds: complete IPv4 packets from a
// pod with correct checksums.

func buildIPv4(proto uint8, src, dst netip.Addr, l4 []byte) []byte {
	b := make([]byte, packet.IPv4MinHeaderLen+len(l4))
	copy(b[packet.IPv4MinHeaderLen:], l4)
	ip := packet.IPv4(b)
	writeIPv4Header(ip, len(b), proto, src.As4(), dst.As4(), 1)
	switch proto {
	case packet.ProtoTCP:
		if len(l4) >= packet.TCPMinHeaderLen {
			packet.TCP(ip.Payload()).SetChecksum(packet.TransportChecksum(ip))
		}
	case packet.ProtoUDP:
		if len(l4) >= packet.UDPHeaderLen {
			packet.UDP(ip.Payload()).SetChecksum(packet.TransportChecksum(ip))
		}
	case packet.ProtoICMP:
		if len(l4) >= packet.ICMPHeaderLen {
			packet.ICMP(ip.Payload()).SetChecksum(packet.TransportChecksum(ip))
		}
	}
	return b
}

func buildUDP(src, dst netip.AddrPort, payload []byte) []byte {
	u := make([]byte, packet.UDPHeaderLen+len(payload))
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	return buildIPv4(packet.ProtoUDP, src.Addr(), dst.Addr(), u)
}

func buildEcho(src, dst netip.Addr, typ uint8, id, seq uint16, payload []byte) []byte {
	m := make([]byte, packet.ICMPHeaderLen+len(payload))
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	return buildIPv4(packet.ProtoICMP, src, dst, m)
}

func buildTCP(src, dst netip.AddrPort, flags uint8, seq uint32) []byte {
	h := make([]byte, packet.TCPMinHeaderLen)
	t := packet.TCP(h)
	t.SetSrcPort(src.Port())
	t.SetDstPort(dst.Port())
	t.SetSeq(seq)
	h[12] = packet.TCPMinHeaderLen / 4 << 4
	t.SetFlags(flags)
	binary.BigEndian.PutUint16(h[14:], 65535)
	return buildIPv4(packet.ProtoTCP, src.Addr(), dst.Addr(), h)
}

// capture collects copies of what NAT delivers.
func capture(d *deliverCheck) chan []byte {
	ch := make(chan []byte, 1024)
	fn := func(pkt []byte) {
		select {
		case ch <- append([]byte(nil), pkt...):
		default:
		}
	}
	d.next.Store(&fn)
	return ch
}

// expectPacket waits for a delivered packet matching match.
func expectPacket(t *testing.T, ch chan []byte, what string, match func(packet.IPv4) bool) packet.IPv4 {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case b := <-ch:
			if ip := packet.IPv4(b); match(ip) {
				return ip
			}
		case <-timeout:
			t.Fatalf("no %s delivered", what)
			return nil
		}
	}
}
