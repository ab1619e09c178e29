package encap

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"podnet/internal/packet"
)

// Builders shared by the VXLAN unit, fuzz and namespace tests. Like the
// IPIP ones they use gopacket, so a misreading of RFC 7348 shared by
// EncapVXLAN and DecapVXLAN cannot hide.

var (
	vtepA = VTEPMAC("worker1")
	vtepB = VTEPMAC("worker2")
)

// innerFrame returns an Ethernet frame from src to dst MAC carrying an
// IPv4/UDP packet from podA:1000 to podB:2000 with payload.
func innerFrame(t testing.TB, src, dst packet.MAC, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(src[:]), DstMAC: net.HardwareAddr(dst[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolUDP, SrcIP: podA, DstIP: podB}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, eth, ip, udp, gopacket.Payload(payload))
}

// vxlanPayload wraps frame in a VXLAN header built by gopacket: what a UDP
// socket delivers for a VXLAN datagram.
func vxlanPayload(t testing.TB, vx *layers.VXLAN, frame []byte) []byte {
	t.Helper()
	return serialize(t, vx, gopacket.Payload(frame))
}

// slowDecapVXLAN is DecapVXLAN's twin, reading RFC 7348 §5's layout byte
// by byte: it returns the inner frame's offset (always 8) or the reason.
func slowDecapVXLAN(p []byte, vni uint32) (int, DecapError) {
	if len(p) < 8 {
		return 0, DecapTruncatedVXLAN
	}
	if p[0]&0x08 == 0 {
		return 0, DecapBadVXLANFlags
	}
	if uint32(p[4])<<16|uint32(p[5])<<8|uint32(p[6]) != vni {
		return 0, DecapWrongVNI
	}
	if len(p)-8 < 14 {
		return 0, DecapTruncatedInnerEthernet
	}
	return 8, DecapOK
}

type vxlanCase struct {
	name  string
	pkt   []byte
	vni   uint32
	want  DecapError
	inner []byte // the frame expected on success
}

func vxlanCases(t testing.TB) []vxlanCase {
	frame := innerFrame(t, vtepA, vtepB, []byte("hello through VXLAN"))
	good := vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: DefaultVNI}, frame)
	mod := func(f func(p []byte)) []byte {
		p := append([]byte(nil), good...)
		f(p)
		return p
	}
	return []vxlanCase{
		{name: "good", pkt: good, vni: DefaultVNI, want: DecapOK, inner: frame},
		{name: "VNI 1", pkt: vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: 1}, frame), vni: 1, want: DecapOK, inner: frame},
		{name: "max VNI", pkt: vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: MaxVNI}, frame), vni: MaxVNI, want: DecapOK, inner: frame},
		// RFC 7348 §5: reserved bits "MUST be ignored on receipt".
		{name: "GBP bits are reserved to us", pkt: vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: DefaultVNI,
			GBPExtension: true, GBPApplied: true, GBPGroupPolicyID: 0xbeef}, frame), vni: DefaultVNI, want: DecapOK, inner: frame},
		{name: "all reserved bits set", pkt: mod(func(p []byte) { p[0], p[1], p[2], p[3], p[7] = 0xff, 0xff, 0xff, 0xff, 0xff }),
			vni: DefaultVNI, want: DecapOK, inner: frame},
		{name: "bare Ethernet header", pkt: vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: DefaultVNI}, frame[:14]),
			vni: DefaultVNI, want: DecapOK, inner: frame[:14]},

		{name: "empty", pkt: nil, vni: DefaultVNI, want: DecapTruncatedVXLAN},
		{name: "7 bytes", pkt: good[:7], vni: DefaultVNI, want: DecapTruncatedVXLAN},
		{name: "I flag clear (gopacket)", pkt: vxlanPayload(t, &layers.VXLAN{VNI: DefaultVNI}, frame), vni: DefaultVNI, want: DecapBadVXLANFlags},
		{name: "only reserved flags", pkt: mod(func(p []byte) { p[0] = 0xf7 }), vni: DefaultVNI, want: DecapBadVXLANFlags},
		{name: "other VNI", pkt: vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: DefaultVNI + 1}, frame), vni: DefaultVNI, want: DecapWrongVNI},
		{name: "VNI 0", pkt: vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: 0}, frame), vni: DefaultVNI, want: DecapWrongVNI},
		{name: "VNI in reserved byte", pkt: mod(func(p []byte) { p[4], p[5], p[6], p[7] = 0, 0, 0, 0x10 }), vni: DefaultVNI, want: DecapWrongVNI},
		{name: "header only", pkt: good[:8], vni: DefaultVNI, want: DecapTruncatedInnerEthernet},
		{name: "13-byte inner", pkt: good[:8+13], vni: DefaultVNI, want: DecapTruncatedInnerEthernet},
	}
}

func TestDecapVXLAN(t *testing.T) {
	for _, tt := range vxlanCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			inner, got := DecapVXLAN(tt.pkt, tt.vni)
			if got != tt.want {
				t.Fatalf("DecapVXLAN: got %v, want %v", got, tt.want)
			}
			if _, slow := slowDecapVXLAN(tt.pkt, tt.vni); slow != got {
				t.Errorf("slowDecapVXLAN: got %v, DecapVXLAN %v", slow, got)
			}
			if got != DecapOK {
				if inner != nil {
					t.Errorf("inner: got %d bytes, want nil", len(inner))
				}
				return
			}
			if !bytes.Equal(inner, tt.inner) {
				t.Errorf("inner:\ngot  %x\nwant %x", []byte(inner), tt.inner)
			}
			if &inner[0] != &tt.pkt[VXLANHeaderLen] {
				t.Errorf("inner is a copy, want a view of the payload")
			}
		})
	}
}

func TestDecapErrorNames(t *testing.T) {
	for _, tt := range []struct {
		r    DecapError
		want string
	}{
		{DecapTruncatedVXLAN, "truncated-vxlan"},
		{DecapBadVXLANFlags, "bad-vxlan-flags"},
		{DecapWrongVNI, "wrong-vni"},
		{DecapTruncatedInnerEthernet, "truncated-inner-ethernet"},
		{numDecapErrors, "unknown"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("DecapError(%d).String(): got %q, want %q", tt.r, got, tt.want)
		}
	}
	for r := DecapOK; r < numDecapErrors; r++ {
		if decapErrorNames[r] == "" {
			t.Errorf("DecapError %d has no name", r)
		}
	}
}

// TestEncapVXLAN checks EncapVXLAN against gopacket both ways: the bytes
// equal gopacket's serialisation, gopacket decodes them to the same
// fields, and DecapVXLAN gets the frame back.
func TestEncapVXLAN(t *testing.T) {
	frame := innerFrame(t, vtepA, vtepB, []byte("round trip"))
	for _, vni := range []uint32{0, 1, DefaultVNI, 0xabcdef, MaxVNI} {
		t.Run(fmt.Sprint(vni), func(t *testing.T) {
			buf := make([]byte, packet.Headroom+len(frame))
			for i := range buf[:packet.Headroom] {
				buf[i] = 0xa5 // garbage where the header goes
			}
			copy(buf[packet.Headroom:], frame)
			start := EncapVXLAN(buf, packet.Headroom, vni)
			if start != packet.Headroom-VXLANHeaderLen {
				t.Fatalf("start: got %d, want %d", start, packet.Headroom-VXLANHeaderLen)
			}
			got := buf[start:]
			want := vxlanPayload(t, &layers.VXLAN{ValidIDFlag: true, VNI: vni}, frame)
			if !bytes.Equal(got, want) {
				t.Fatalf("payload (-want +got):\n%x\n%x", want, got)
			}
			if buf[start-1] != 0xa5 {
				t.Errorf("EncapVXLAN wrote before its 8 bytes")
			}
			pk := gopacket.NewPacket(got, layers.LayerTypeVXLAN, gopacket.Default)
			vx, _ := pk.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
			if vx == nil || !vx.ValidIDFlag || vx.VNI != vni || vx.GBPExtension {
				t.Fatalf("gopacket decodes %+v, want I flag and VNI %d", vx, vni)
			}
			if pk.Layer(layers.LayerTypeUDP) == nil {
				t.Errorf("gopacket finds no inner UDP: %v", pk)
			}
			inner, r := DecapVXLAN(got, vni)
			if r != DecapOK || !bytes.Equal(inner, frame) {
				t.Errorf("DecapVXLAN: got %v %x, want ok %x", r, []byte(inner), frame)
			}
			if v := VXLAN(got); v.Flags() != VXLANFlagVNI || v.VNI() != vni || !bytes.Equal(v.Payload(), frame) {
				t.Errorf("view: flags %#x VNI %d", v.Flags(), v.VNI())
			}
		})
	}
	t.Run("VNI masked to 24 bits", func(t *testing.T) {
		buf := make([]byte, 8+14)
		EncapVXLAN(buf, 8, 1<<24|5)
		if v := VXLAN(buf); v.VNI() != 5 || buf[7] != 0 {
			t.Errorf("got VNI %d, reserved %#x; want 5, 0", v.VNI(), buf[7])
		}
	})
	t.Run("SetVNI", func(t *testing.T) {
		v := VXLAN(make([]byte, 8))
		v[7] = 0x42
		v.SetVNI(0x123456)
		if v.VNI() != 0x123456 || v[7] != 0x42 {
			t.Errorf("SetVNI: got VNI %#x, reserved %#x", v.VNI(), v[7])
		}
	})
}

func TestVTEPMAC(t *testing.T) {
	// 0x66 then sha1("worker1")[:5]; the literal is from `printf worker1 |
	// sha1sum` = 3c05842098..., so the test does not only mirror the code.
	want := packet.MAC{0x66, 0x3c, 0x05, 0x84, 0x20, 0x98}
	if got := VTEPMAC("worker1"); got != want {
		t.Errorf("VTEPMAC(worker1): got %v, want %v", got, want)
	}
	sum := sha1.Sum([]byte("worker1"))
	if got := VTEPMAC("worker1"); got[0] != 'f' || !bytes.Equal(got[1:], sum[:5]) {
		t.Errorf("VTEPMAC(worker1): got %v, want 66 + %x", got, sum[:5])
	}
	for _, name := range []string{"", "worker2", "a-very-long-node-name.example.com"} {
		m := VTEPMAC(name)
		if m[0]&0x02 == 0 || m.IsMulticast() {
			t.Errorf("VTEPMAC(%q) = %v: want a locally administered unicast MAC", name, m)
		}
	}
	if VTEPMAC("worker1") == VTEPMAC("worker2") {
		t.Errorf("worker1 and worker2 got the same VTEP MAC")
	}
}

// flowFrame builds an Ethernet/IPv4 frame with a TCP or UDP header (or
// none) for FlowSourcePort.
func flowFrame(src, dst [4]byte, proto uint8, sport, dport uint16, id uint16, ttl uint8) []byte {
	f := make([]byte, 14+20+8+16)
	binary.BigEndian.PutUint16(f[12:], packet.EtherTypeIPv4)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[8], ip[9] = ttl, proto
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	return f
}

func TestFlowSourcePort(t *testing.T) {
	src, dst := [4]byte{192, 168, 1, 2}, [4]byte{192, 168, 2, 2}
	base := flowFrame(src, dst, packet.ProtoTCP, 40000, 80, 1, 64)
	p := FlowSourcePort(base)

	t.Run("same flow same port", func(t *testing.T) {
		// ID, TTL, MACs and payload are not part of the flow.
		other := flowFrame(src, dst, packet.ProtoTCP, 40000, 80, 999, 3)
		copy(other[0:12], "abcdefghijkl")
		other[len(other)-1] = 0xff
		if got := FlowSourcePort(other); got != p {
			t.Errorf("same 5-tuple: got %d, want %d", got, p)
		}
	})
	t.Run("any field of the 5-tuple changes it", func(t *testing.T) {
		for name, f := range map[string][]byte{
			"src":   flowFrame([4]byte{192, 168, 1, 3}, dst, packet.ProtoTCP, 40000, 80, 1, 64),
			"dst":   flowFrame(src, [4]byte{192, 168, 2, 3}, packet.ProtoTCP, 40000, 80, 1, 64),
			"proto": flowFrame(src, dst, packet.ProtoUDP, 40000, 80, 1, 64),
			"sport": flowFrame(src, dst, packet.ProtoTCP, 40001, 80, 1, 64),
			"dport": flowFrame(src, dst, packet.ProtoTCP, 40000, 81, 1, 64),
		} {
			if FlowSourcePort(f) == p {
				t.Errorf("changing %s kept port %d (a 1-in-28232 collision is possible but unlikely)", name, p)
			}
		}
	})
	t.Run("fragments share a port", func(t *testing.T) {
		first := flowFrame(src, dst, packet.ProtoUDP, 5000, 6000, 7, 64)
		first[14+6] = 0x20 // MF
		later := flowFrame(src, dst, packet.ProtoUDP, 0xdead, 0xbeef, 7, 64)
		later[14+7] = 185 // offset, and what sits at "ports" is payload
		if a, b := FlowSourcePort(first), FlowSourcePort(later); a != b {
			t.Errorf("fragments of one datagram: ports %d and %d", a, b)
		}
	})
	t.Run("range and spread", func(t *testing.T) {
		seen := map[uint16]bool{}
		const flows = 2000
		for i := range flows {
			f := flowFrame(src, dst, packet.ProtoUDP, uint16(i), 4789, 0, 64)
			port := FlowSourcePort(f)
			if port < 32768 || port > 60999 {
				t.Fatalf("port %d outside [32768, 60999]", port)
			}
			seen[port] = true
		}
		// 2000 balls in 28232 bins: about 70 collisions expected.
		if len(seen) < flows*9/10 {
			t.Errorf("%d distinct ports for %d flows, want them spread", len(seen), flows)
		}
	})
	t.Run("odd frames stay in range", func(t *testing.T) {
		arp := make([]byte, 42)
		binary.BigEndian.PutUint16(arp[12:], packet.EtherTypeARP)
		badIHL := flowFrame(src, dst, packet.ProtoTCP, 1, 2, 0, 64)
		badIHL[14] = 0x4f // IHL 60 bytes, past the frame
		for _, f := range [][]byte{nil, {1}, arp, base[:14], base[:14+19], base[:14+20], base[:14+23], badIHL} {
			if port := FlowSourcePort(f); port < 32768 || port > 60999 {
				t.Errorf("FlowSourcePort(%x) = %d, outside the range", f, port)
			}
		}
		if FlowSourcePort(arp) != FlowSourcePort(append([]byte(nil), arp...)) {
			t.Errorf("ARP frame: port not deterministic")
		}
	})
}

func TestVXLANWireAllocs(t *testing.T) {
	frame := innerFrame(t, vtepA, vtepB, make([]byte, 100))
	buf := make([]byte, packet.Headroom+len(frame))
	copy(buf[packet.Headroom:], frame)
	var sink uint16
	allocs := testing.AllocsPerRun(100, func() {
		start := EncapVXLAN(buf, packet.Headroom, DefaultVNI)
		if _, r := DecapVXLAN(buf[start:], DefaultVNI); r != DecapOK {
			t.Fatal(r)
		}
		sink += FlowSourcePort(buf[packet.Headroom:])
	})
	if allocs != 0 {
		t.Errorf("EncapVXLAN+DecapVXLAN+FlowSourcePort allocs per run: got %v, want 0", allocs)
	}
	_ = sink
}

func FuzzDecapVXLAN(f *testing.F) {
	for _, tt := range vxlanCases(f) {
		f.Add(tt.pkt, tt.vni)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, vni uint32) {
		inner, r := DecapVXLAN(pkt, vni)
		if r >= numDecapErrors {
			t.Fatalf("reason %d out of range", r)
		}
		off, want := slowDecapVXLAN(pkt, vni)
		if r != want {
			t.Fatalf("reason: got %v, want %v (slowDecapVXLAN)", r, want)
		}
		if r != DecapOK {
			if inner != nil {
				t.Fatalf("inner non-nil with reason %v", r)
			}
			return
		}
		if off+len(inner) != len(pkt) || &inner[0] != &pkt[off] {
			t.Fatalf("inner at len %d does not alias pkt[%d:] (len %d)", len(inner), off, len(pkt))
		}
		if len(inner) < packet.EthernetHeaderLen || vni > MaxVNI {
			t.Fatalf("accepted inner of %d bytes with VNI %d", len(inner), vni)
		}
		// Round trip: re-encapsulating the accepted frame gives a
		// canonical header that decapsulates to the same frame, and
		// FlowSourcePort stays in range whatever the frame holds.
		buf := append(make([]byte, VXLANHeaderLen), inner...)
		start := EncapVXLAN(buf, VXLANHeaderLen, vni)
		again, r2 := DecapVXLAN(buf[start:], vni)
		if r2 != DecapOK || !bytes.Equal(again, inner) || buf[0] != VXLANFlagVNI {
			t.Fatalf("re-encapsulated: got %v, header %x", r2, buf[:8])
		}
		if port := FlowSourcePort(inner); port < 32768 || port > 60999 {
			t.Fatalf("FlowSourcePort = %d", port)
		}
	})
}
