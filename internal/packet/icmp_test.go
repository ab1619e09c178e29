package packet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestBuildICMPError(t *testing.T) {
	big := buildUDPv4(ipv4Spec{ttl: 1, flags: IPv4FlagDontFragment, src: podA, dst: podB}, 1000, 2000, make([]byte, 1472))
	small := buildTCPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, tcpSpec{flags: TCPFlagSYN}, nil)
	echo := buildICMPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, ICMPEcho, 0, 0x00070001, []byte("ping"))
	tests := []struct {
		name      string
		orig      []byte
		typ, code uint8
		mtu       uint16
		dstLen    int
		wantLen   int
	}{
		{"ttl exceeded, quote capped at 576", big, ICMPTimeExceeded, ICMPTTLExceeded, 0, 1600, ICMPErrorMaxLen},
		{"frag needed carries mtu", big, ICMPDestUnreachable, ICMPFragmentationNeeded, 1450, 1600, ICMPErrorMaxLen},
		{"small orig quoted whole", small, ICMPDestUnreachable, ICMPHostUnreachable, 0, 1600, 28 + len(small)},
		{"about an echo", echo, ICMPDestUnreachable, ICMPAdminProhibited, 0, 1600, 28 + len(echo)},
		{"dst limits quote", big, ICMPDestUnreachable, ICMPNetUnreachable, 0, 100, 100},
		{"dst holds the minimum quote", big, ICMPDestUnreachable, ICMPNetUnreachable, 0, 28 + 28, 56},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, tt.dstLen)
			n := BuildICMPError(dst, IPv4(tt.orig), tt.typ, tt.code, tt.mtu, switchIP, 0)
			if n != tt.wantLen {
				t.Fatalf("n: got %d, want %d", n, tt.wantLen)
			}
			ip := IPv4(dst[:n])
			if ip.Validate() != ParseOK || !ip.HeaderChecksumValid() || !TransportChecksumValid(ip) {
				t.Fatal("result is not valid IPv4/ICMP")
			}
			if ip.SrcBytes() != switchIP || ip.DstBytes() != podA || ip.Protocol() != ProtoICMP ||
				ip.TTL() != DefaultTTL || ip.DontFragment() || ip.IsFragment() {
				t.Errorf("ip: src %v dst %v proto %d ttl %d flags %d", ip.Src(), ip.Dst(), ip.Protocol(), ip.TTL(), ip.Flags())
			}
			m := ICMP(ip.Payload())
			if m.Type() != tt.typ || m.Code() != tt.code || m.MTU() != tt.mtu || binary.BigEndian.Uint16(m[4:]) != 0 {
				t.Errorf("icmp: got %d/%d mtu %d", m.Type(), m.Code(), m.MTU())
			}
			if !bytes.Equal(m[8:], tt.orig[:n-28]) {
				t.Error("quoted datagram differs from the original")
			}

			// Independent decoder and checksum: gopacket re-serialising
			// with ComputeChecksums must reproduce our bytes exactly.
			p := gopacket.NewPacket(dst[:n], layers.LayerTypeIPv4, gopacket.Default)
			ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if ip4 == nil || ic == nil {
				t.Fatalf("gopacket could not decode: %v", p.ErrorLayer())
			}
			if ic.TypeCode != layers.CreateICMPv4TypeCode(tt.typ, tt.code) {
				t.Errorf("gopacket type/code: got %v", ic.TypeCode)
			}
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ip4, ic, gopacket.Payload(ic.Payload)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), dst[:n]) {
				t.Errorf("gopacket re-serialisation differs:\n got %x\nwant %x", buf.Bytes(), dst[:n])
			}
		})
	}
}

// RFC 1812 §4.3.2.7: the cases where no ICMP error may be sent.
func TestBuildICMPErrorSuppressed(t *testing.T) {
	spec := func(src, dst [4]byte) ipv4Spec { return ipv4Spec{ttl: 1, src: src, dst: dst} }
	udp := func(s ipv4Spec) []byte { return buildUDPv4(s, 1, 2, make([]byte, 20)) }
	nonFirst := spec(podA, podB)
	nonFirst.fragOff = 1480
	first := spec(podA, podB)
	first.flags = IPv4FlagMoreFragments
	tests := []struct {
		name string
		orig []byte
		dst  int
		want bool
	}{
		{"first fragment is answered", udp(first), 600, true},
		{"non-first fragment", udp(nonFirst), 600, false},
		{"icmp dest unreachable", buildICMPv4(spec(podA, podB), ICMPDestUnreachable, 1, 0, make([]byte, 28)), 600, false},
		{"icmp time exceeded", buildICMPv4(spec(podA, podB), ICMPTimeExceeded, 0, 0, make([]byte, 28)), 600, false},
		{"icmp redirect", buildICMPv4(spec(podA, podB), ICMPRedirect, 0, 0, nil), 600, false},
		{"icmp source quench", buildICMPv4(spec(podA, podB), ICMPSourceQuench, 0, 0, nil), 600, false},
		{"icmp param problem", buildICMPv4(spec(podA, podB), ICMPParamProblem, 0, 0, nil), 600, false},
		{"icmp echo reply is answered", buildICMPv4(spec(podA, podB), ICMPEchoReply, 0, 0, nil), 600, true},
		{"icmp without header", buildIPv4(ipv4Spec{ttl: 1, proto: ProtoICMP, src: podA, dst: podB}, nil), 600, false},
		{"source 0.0.0.0", udp(spec([4]byte{}, podB)), 600, false},
		{"source broadcast", udp(spec([4]byte{255, 255, 255, 255}, podB)), 600, false},
		{"source multicast", udp(spec([4]byte{224, 0, 0, 5}, podB)), 600, false},
		{"source class e", udp(spec([4]byte{240, 0, 0, 1}, podB)), 600, false},
		{"source loopback", udp(spec([4]byte{127, 0, 0, 1}, podB)), 600, false},
		{"dest multicast", udp(spec(podA, [4]byte{239, 1, 2, 3})), 600, false},
		{"dest broadcast", udp(spec(podA, [4]byte{255, 255, 255, 255})), 600, false},
		{"dst too small", udp(spec(podA, podB)), 28 + 20 + 7, false},
		{"orig invalid", []byte{0x45, 0, 0}, 600, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, tt.dst)
			n := BuildICMPError(dst, IPv4(tt.orig), ICMPTimeExceeded, ICMPTTLExceeded, 0, switchIP, 64)
			if got := n > 0; got != tt.want {
				t.Errorf("sent: got %v (n %d), want %v", got, n, tt.want)
			}
			if n == 0 && bytes.Count(dst, []byte{0}) != len(dst) {
				t.Error("dst written although nothing was sent")
			}
		})
	}
}

// The switch builds the error in the buffer the offending packet arrived
// in; orig and dst overlap.
func TestBuildICMPErrorInPlace(t *testing.T) {
	orig := buildUDPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, 1, 2, make([]byte, 100))
	buf := make([]byte, 1000)
	copy(buf, orig)
	n := BuildICMPError(buf, IPv4(buf[:len(orig)]), ICMPTimeExceeded, ICMPTTLExceeded, 0, switchIP, 64)
	ip := IPv4(buf[:n])
	if n != 28+len(orig) || ip.DstBytes() != podA || !TransportChecksumValid(ip) || !bytes.Equal(ip[28:], orig) {
		t.Errorf("in place: n %d dst %v", n, ip.Dst())
	}
}

func TestAllocsBuildICMPError(t *testing.T) {
	orig := IPv4(buildUDPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, 1, 2, make([]byte, 1400)))
	dst := make([]byte, ICMPErrorMaxLen)
	got := testing.AllocsPerRun(100, func() {
		if BuildICMPError(dst, orig, ICMPTimeExceeded, ICMPTTLExceeded, 0, switchIP, 64) == 0 {
			panic("no error built")
		}
	})
	if got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}

func FuzzBuildICMPError(f *testing.F) {
	f.Add(buildUDPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, 1, 2, make([]byte, 700)), uint8(ICMPTimeExceeded), uint8(0), uint16(0), uint16(1500))
	f.Add(buildTCPv4(ipv4Spec{ttl: 1, src: podA, dst: podB, options: []byte{1, 1, 1, 0}}, tcpSpec{flags: TCPFlagSYN}, nil), uint8(ICMPDestUnreachable), uint8(ICMPFragmentationNeeded), uint16(1400), uint16(60))
	f.Add(buildICMPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, ICMPEcho, 0, 1, nil), uint8(ICMPDestUnreachable), uint8(ICMPHostUnreachable), uint16(0), uint16(600))
	dstBuf := make([]byte, 2048)
	f.Fuzz(func(t *testing.T, orig []byte, typ, code uint8, mtu, dstLen uint16) {
		dst := dstBuf[:int(dstLen)%len(dstBuf)]
		n := BuildICMPError(dst, IPv4(orig), typ, code, mtu, switchIP, 64)
		if n == 0 {
			return
		}
		if n > ICMPErrorMaxLen || n > len(dst) {
			t.Fatalf("n %d exceeds %d or dst %d", n, ICMPErrorMaxLen, len(dst))
		}
		ip := IPv4(dst[:n])
		if ip.Validate() != ParseOK || ip.TotalLen() != n || !ip.HeaderChecksumValid() || !TransportChecksumValid(ip) {
			t.Fatal("result is not a valid IPv4/ICMP packet")
		}
		o := IPv4(orig)
		if ip.DstBytes() != o.SrcBytes() || !bytes.Equal(ip[28:], orig[:n-28]) || n-28 < min(o.TotalLen(), o.HeaderLen()+8) {
			t.Fatal("quote or destination wrong")
		}
		if o.Protocol() == ProtoICMP && ICMP(o.Payload()).IsError() {
			t.Fatal("answered an ICMP error")
		}
	})
}
