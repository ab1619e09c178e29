package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func TestTCPView(t *testing.T) {
	ip := IPv4(buildTCPv4(ipv4Spec{ttl: 64, src: podA, dst: podB},
		tcpSpec{srcPort: 40000, dstPort: 443, seq: 0xdeadbeef, ack: 0x01020304, flags: TCPFlagACK | TCPFlagPSH, window: 512, options: []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}}, []byte("data")))
	tcp := TCP(ip.Payload())
	checks := []struct {
		name      string
		got, want any
	}{
		{"SrcPort", tcp.SrcPort(), uint16(40000)},
		{"DstPort", tcp.DstPort(), uint16(443)},
		{"Seq", tcp.Seq(), uint32(0xdeadbeef)},
		{"Ack", tcp.Ack(), uint32(0x01020304)},
		{"DataOffset", tcp.DataOffset(), 32},
		{"Flags", tcp.Flags(), uint8(TCPFlagACK | TCPFlagPSH)},
		{"Window", tcp.Window(), uint16(512)},
		{"Checksum", tcp.Checksum(), TransportChecksum(ip)},
		{"Valid", TransportChecksumValid(ip), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	tcp.SetSeq(1)
	tcp.SetFlags(TCPFlagFIN)
	if TransportChecksumValid(ip) {
		t.Error("checksum valid after changing seq and flags")
	}
	tcp.SetChecksum(TransportChecksum(ip))
	if !TransportChecksumValid(ip) {
		t.Error("checksum invalid after recomputing")
	}
}

func TestUDPAndICMPView(t *testing.T) {
	ip := IPv4(buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 5353, 53, []byte("query")))
	u := UDP(ip.Payload())
	if u.SrcPort() != 5353 || u.DstPort() != 53 || u.Length() != 13 || u.Checksum() != TransportChecksum(ip) || !TransportChecksumValid(ip) {
		t.Errorf("udp: got %d %d len %d sum %#04x (computed %#04x)", u.SrcPort(), u.DstPort(), u.Length(), u.Checksum(), TransportChecksum(ip))
	}
	u.SetChecksum(0) // "no checksum" is valid UDP
	if !TransportChecksumValid(ip) {
		t.Error("udp zero checksum reported invalid")
	}

	ip = IPv4(buildICMPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, ICMPDestUnreachable, ICMPFragmentationNeeded, 1400, make([]byte, 28)))
	c := ICMP(ip.Payload())
	if c.Type() != ICMPDestUnreachable || c.Code() != ICMPFragmentationNeeded || c.MTU() != 1400 || !c.IsError() ||
		c.Checksum() != TransportChecksum(ip) || !TransportChecksumValid(ip) {
		t.Errorf("icmp: got %d/%d mtu %d sum %#04x (computed %#04x)", c.Type(), c.Code(), c.MTU(), c.Checksum(), TransportChecksum(ip))
	}
}

// TransportChecksum against the slow twin on random TCP, UDP and ICMP
// packets of every small length, odd ones included.
func TestTransportChecksumMatchesSlow(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := range 5000 {
		spec := ipv4Spec{ttl: 64}
		binary.BigEndian.PutUint32(spec.src[:], r.Uint32())
		binary.BigEndian.PutUint32(spec.dst[:], r.Uint32())
		var ip IPv4
		switch i % 3 {
		case 0:
			ip = buildTCPv4(spec, tcpSpec{seq: r.Uint32(), flags: uint8(r.Uint32()), options: randBytes(r, 4*r.IntN(11))}, randBytes(r, r.IntN(1500)))
		case 1:
			ip = buildUDPv4(spec, uint16(r.Uint32()), uint16(r.Uint32()), randBytes(r, r.IntN(1500)))
		case 2:
			ip = buildICMPv4(spec, uint8(r.Uint32()), uint8(r.Uint32()), r.Uint32(), randBytes(r, r.IntN(1500)))
		}
		off, _, _ := transportChecksumOffset(ip.Protocol())
		want := binary.BigEndian.Uint16(ip.Payload()[off:])
		if got := TransportChecksum(ip); got != want {
			t.Fatalf("proto %d len %d: got %#04x, want %#04x", ip.Protocol(), len(ip), got, want)
		}
		if !TransportChecksumValid(ip) {
			t.Fatalf("proto %d len %d: valid packet reported invalid", ip.Protocol(), len(ip))
		}
	}
}

func TestValidateTransport(t *testing.T) {
	tcp := buildTCPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, tcpSpec{options: make([]byte, 4)}, nil)
	udp := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, []byte{1, 2, 3})
	icmp := buildICMPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, ICMPEcho, 0, 0, nil)
	cut := func(b []byte, n int) IPv4 {
		c := append([]byte(nil), b[:n]...)
		binary.BigEndian.PutUint16(c[2:], uint16(n))
		return c
	}
	set := func(b []byte, i int, v byte) IPv4 {
		c := append([]byte(nil), b...)
		c[i] = v
		return c
	}
	tests := []struct {
		name string
		ip   IPv4
		want ParseError
	}{
		{"tcp ok", tcp, ParseOK},
		{"tcp short", cut(tcp, 39), ErrTruncatedL4},
		{"tcp options cut", cut(tcp, 40), ErrTruncatedL4},
		{"tcp data offset 4", set(tcp, 32, 0x10), ErrTruncatedL4},
		{"udp ok", udp, ParseOK},
		{"udp short", cut(udp, 27), ErrTruncatedL4},
		{"udp length beyond", set(udp, 25, 200), ErrTruncatedL4},
		{"udp length 7", set(udp, 25, 7), ErrTruncatedL4},
		{"icmp ok", icmp, ParseOK},
		{"icmp short", cut(icmp, 27), ErrTruncatedL4},
		{"non-first fragment", buildIPv4(ipv4Spec{ttl: 64, proto: ProtoTCP, fragOff: 8, src: podA, dst: podB}, []byte{1}), ParseOK},
		{"other protocol", buildIPv4(ipv4Spec{ttl: 64, proto: 47, src: podA, dst: podB}, nil), ParseOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ip.Validate() != ParseOK {
				t.Fatal("test packet is not valid IPv4")
			}
			if got := ValidateTransport(tt.ip); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
