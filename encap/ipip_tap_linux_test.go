package encap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"podnet/internal/netnsutil"
	"podnet/internal/packet"
)

// openIPIPTapIn opens an IPIPTap named pnip0 in the namespace at ns, from
// local, checks its probe and closes it when the test ends.
func openIPIPTapIn(t testing.TB, ns string, local netip.Addr, outerFromInner bool) *IPIPTap {
	t.Helper()
	var tap *IPIPTap
	err := netnsutil.Do(ns, func() (err error) {
		if tap, err = OpenIPIPTap("pnip0", local, outerFromInner); err != nil {
			return err
		}
		return tap.Probe()
	})
	if err != nil {
		if tap != nil {
			tap.Close()
		}
		t.Fatalf("OpenIPIPTap and Probe on Linux %s: %v", osRelease(), err)
	}
	t.Cleanup(func() { tap.Close() })
	return tap
}

// ethtoolOff turns offloads of veth0 in namespace ns off.
func ethtoolOff(t testing.TB, ns string, features ...string) {
	t.Helper()
	args := []string{"netns", "exec", ns, "ethtool", "-K", "veth0"}
	for _, f := range features {
		args = append(args, f, "off")
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ethtool %s: %v\n%s", strings.Join(features, " "), err, out)
	}
}

// ipipSegments checks packets, the IP-in-IP packets the kernel cut one
// superframe into: each a valid outer IPv4 header from src (protocol 4,
// the given DF) around a TCP segment of mss bytes (the last shorter) at
// its sequence number with a complete checksum, inner and outer IDs each
// counting up by one. It returns the payload they carry.
func ipipSegments(packets [][]byte, src netip.Addr, mss int, seq0 uint32, df bool) ([]byte, error) {
	var data []byte
	for i, p := range packets {
		outer, inner, r := DecapIPIP(p)
		if r != DecapOK {
			return nil, fmt.Errorf("packet %d: %v", i, r)
		}
		if packet.Checksum(outer[:20], 0) != 0 || int(outer.TotalLen()) != len(p) || outer.Src() != src || outer.DontFragment() != df {
			return nil, fmt.Errorf("packet %d: outer header %x (from %s, DF %v wanted)", i, outer[:20], src, df)
		}
		if i > 0 {
			prevOuter, prevInner, _ := DecapIPIP(packets[i-1])
			if outer.ID() != prevOuter.ID()+1 || inner.ID() != prevInner.ID()+1 {
				return nil, fmt.Errorf("packet %d: outer ID %d inner ID %d after %d and %d", i, outer.ID(), inner.ID(), prevOuter.ID(), prevInner.ID())
			}
		}
		if inner.Validate() != packet.ParseOK || inner.Protocol() != packet.ProtoTCP || packet.Checksum(inner[:20], 0) != 0 {
			return nil, fmt.Errorf("packet %d: not a valid inner TCP/IPv4 packet", i)
		}
		tcp := packet.TCP(inner.Payload())
		if n := len(tcp) - 20; n > mss || n == 0 {
			return nil, fmt.Errorf("packet %d: %d payload bytes, want 1..%d", i, n, mss)
		}
		if tcp.Seq() != seq0+uint32(i*mss) {
			return nil, fmt.Errorf("packet %d: seq %d, want %d", i, tcp.Seq(), seq0+uint32(i*mss))
		}
		if !packet.TransportChecksumValid(inner) {
			return nil, fmt.Errorf("packet %d: TCP checksum %#04x wrong", i, tcp.Checksum())
		}
		data = append(data, tcp[20:]...)
	}
	return data, nil
}

// A superframe written into the TAP leaves the node as IP-in-IP: across
// a veth it arrives whole, one packet holding the whole inner packet with
// its partial checksum; where the underlay device cannot segment IP-in-IP
// (tx-ipxip4-segmentation off, as on a NIC without it) the kernel cuts it
// into packets of the inner MSS with complete checksums, as its own
// tunnel's. Without the tc program the kernel cannot: it drops the
// superframe.
func TestIPIPTapSuperframe(t *testing.T) {
	u := newUnderlay(t)
	tap := openIPIPTapIn(t, u.nsA, u.addrA, false)
	rx := listen(t, u.nsB, IPIPConfig{Local: u.addrB})
	const payload, mss = 20000, 1400

	buf, _, gso := tcpSuperframe(payload, mss, 1000)
	want := append([]byte(nil), buf[packet.Headroom:]...)
	frame, ok := tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
	if !ok {
		t.Fatal("Frame refused a TCP superframe with headroom")
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	got := readN(t, rx, 1, 3*time.Second)
	outer, inner, r := DecapIPIP(got[0])
	if r != DecapOK || !bytes.Equal(inner, want) {
		t.Fatalf("whole superframe: decap %v, inner %d bytes, want the %d sent (partial checksum)", r, len(inner), len(want))
	}
	if outer.Src() != u.addrA || outer.Dst() != u.addrB || outer.DontFragment() || outer.TTL() != forwardTapOuterTTL-1 {
		t.Errorf("outer header %x: want from %s to %s, DF clear, TTL %d (forwarded once)", outer[:20], u.addrA, u.addrB, forwardTapOuterTTL-1)
	}

	// Software segmentation, with checksums computed in software too.
	ethtoolOff(t, u.nameA, "tx-ipxip4-segmentation", "tx-checksum-ip-generic")
	buf, _, gso = tcpSuperframe(payload, mss, 1000)
	frame, _ = tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	segs := (payload + mss - 1) / mss
	got = readN(t, rx, segs, 3*time.Second)
	if len(got) != segs {
		t.Fatalf("got %d packets, want %d", len(got), segs)
	}
	data, err := ipipSegments(got, u.addrA, mss, 1000, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want[40:]) {
		t.Errorf("segments carry %d payload bytes, not the %d sent", len(data), len(want)-40)
	}
	if tap.Sent() != 2 {
		t.Errorf("Sent() = %d, want 2", tap.Sent())
	}

	// The program is what makes this work: without it the kernel
	// finds an IP-in-IP header on a plain TCP superframe and drops it.
	buf, _, gso = tcpSuperframe(payload, mss, 1000)
	frame, _ = tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
	withoutProgram(t, u.nameA, "pnip0", tap, frame, rx)
}

// batchReader is what withoutProgram reads from: an IPIPConn or a
// VXLANConn.
type batchReader interface {
	SetReadDeadline(time.Time) error
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
}

// withoutProgram deletes the tc filter of TAP dev in namespace ns, sends
// frame through tap and requires that nothing reaches rx (the kernel
// cannot segment an unmarked tunnel frame), and then that the forwarding
// watch says the program is gone.
func withoutProgram(t *testing.T, ns, dev string, tap interface {
	Send([]byte) error
	Err() error
}, frame []byte, rx batchReader) {
	t.Helper()
	if out, err := exec.Command("tc", "-n", ns, "filter", "del", "dev", dev, "ingress").CombinedOutput(); err != nil {
		t.Fatalf("tc filter del: %v\n%s", err, out)
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	rx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := rx.ReadBatch(readBufs(4, packet.BufferSize), make([]int, 4), 0); n != 0 || err == nil {
		t.Fatalf("without the tc program: %d packets arrived (%v), want none", n, err)
	}
	waitProgramGone(t, tap)
}

// waitProgramGone waits for tap's forwarding watch to say its tc program
// is no longer attached.
func waitProgramGone(t *testing.T, tap interface{ Err() error }) {
	t.Helper()
	deadline := time.Now().Add(3 * forwardWatchInterval)
	for tap.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := tap.Err(); err == nil || !strings.Contains(err.Error(), "no longer attached") {
		t.Errorf("Err after the program was removed: %v, want one saying it is no longer attached", err)
	}
}

// With outerFromInner, the outer header copies DF and the inner ID, and
// the kernel numbers both IDs of each segment in step.
func TestIPIPTapOuterFromInner(t *testing.T) {
	u := newUnderlay(t)
	tap := openIPIPTapIn(t, u.nsA, u.addrA, true)
	rx := listen(t, u.nsB, IPIPConfig{Local: u.addrB})
	ethtoolOff(t, u.nameA, "tx-ipxip4-segmentation", "tx-checksum-ip-generic")
	const payload, mss = 9000, 1000
	buf, _, gso := tcpSuperframe(payload, mss, 7)
	frame, _ := tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	got := readN(t, rx, payload/mss, 3*time.Second)
	if _, err := ipipSegments(got, u.addrA, mss, 7, true); err != nil {
		t.Fatal(err)
	}
	for i, p := range got {
		if outer, inner, _ := DecapIPIP(p); outer.ID() != inner.ID() {
			t.Errorf("packet %d: outer ID %d, inner ID %d: want them equal", i, outer.ID(), inner.ID())
		}
	}
}

// Sending a superframe whole allocates nothing.
func TestIPIPTapAllocs(t *testing.T) {
	u := newUnderlay(t)
	tap := openIPIPTapIn(t, u.nsA, u.addrA, false)
	listen(t, u.nsB, IPIPConfig{Local: u.addrB})
	buf, _, gso := tcpSuperframe(20000, 1400, 1000)
	if a := testing.AllocsPerRun(50, func() {
		frame, _ := tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
		if err := tap.Send(frame); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Frame and Send: %v allocations per superframe, want 0", a)
	}
}

// mustFrame frames the superframe in buf (at packet.Headroom, offload
// metadata gso) for dst within testInnerMTU, and returns the frame and
// the virtio-net header Frame wrote.
func mustFrame(t *testing.T, tap *IPIPTap, buf []byte, dst netip.Addr, gso packet.VirtioNetHdr) ([]byte, packet.VirtioNetHdr) {
	t.Helper()
	f, ok := tap.Frame(buf, packet.Headroom, dst, gso, testInnerMTU)
	if !ok {
		t.Fatal("Frame refused")
	}
	var h packet.VirtioNetHdr
	if err := h.Decode(f); err != nil {
		t.Fatal(err)
	}
	return f, h
}

// Frame writes what the kernel's virtio_net_hdr_to_skb and the tc program
// expect, and refuses what cannot leave as one IP-in-IP superframe.
func TestIPIPTapFrame(t *testing.T) {
	tap := &IPIPTap{forwardTap: forwardTap{local: [4]byte{10, 250, 0, 1}, mac: [6]byte{2, 0, 0, 0, 0, 7}, vnetLen: packet.VirtioNetHdrLen}}
	dst := netip.MustParseAddr("10.250.0.2")
	buf, _, gso := tcpSuperframe(20000, 1400, 1)
	gso.HdrLen = 9999 // a lie: Frame must not pass it on
	f, h := mustFrame(t, tap, buf, dst, gso)
	if want := (packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4,
		HdrLen: 14 + 20 + 40, GSOSize: 1400, CsumStart: 14 + 20 + 20, CsumOffset: 16}); h != want {
		t.Errorf("virtio-net header %+v, want %+v", h, want)
	}
	eth := packet.Ethernet(f[packet.VirtioNetHdrLen:])
	if eth.Dst() != packet.MAC(tap.mac) || eth.EtherType() != packet.EtherTypeIPv4 {
		t.Errorf("Ethernet to %s type %#x, want the TAP's MAC, IPv4", eth.Dst(), eth.EtherType())
	}
	ip := packet.IPv4(f[packet.VirtioNetHdrLen+packet.EthernetHeaderLen:])
	if ip.Validate() != packet.ParseOK || packet.Checksum(ip[:20], 0) != 0 || int(ip.TotalLen()) != len(ip) ||
		ip.Protocol() != packet.ProtoIPIP || ip.DontFragment() || ip.TTL() != 64 ||
		ip.SrcBytes() != tap.local || ip.DstBytes() != dst.As4() {
		t.Errorf("outer IPv4 header %x", ip[:20])
	}
	// Superframe after superframe, the IDs the kernel gives segments do
	// not overlap: 15 segments each.
	id1 := ip.ID()
	f2, _ := tap.Frame(buf, packet.Headroom, dst, gso, testInnerMTU)
	if id2 := packet.IPv4(f2[packet.VirtioNetHdrLen+packet.EthernetHeaderLen:]).ID(); id2-id1 != 15 {
		t.Errorf("outer IP IDs %d then %d, want 15 apart (one per segment)", id1, id2)
	}

	for _, tc := range frameCases(IPIPTapHeadroom) {
		buf, _, gso := tcpSuperframe(4000, 1000, 1)
		b, i := tc.adjust(buf, packet.Headroom, &gso)
		if _, ok := tap.Frame(b, i, dst, gso, testInnerMTU); ok != tc.ok {
			t.Errorf("%s: Frame ok = %v, want %v", tc.name, ok, tc.ok)
		}
	}
	for _, tc := range []struct {
		inner int
		ok    bool
	}{{MaxIPIPTapInner, true}, {MaxIPIPTapInner + 1, false}} {
		buf, _, gso := tcpSuperframe(tc.inner-40, 1400, 1)
		f, ok := tap.Frame(buf, packet.Headroom, dst, gso, testInnerMTU)
		if ok != tc.ok {
			t.Errorf("inner packet of %d bytes: Frame ok = %v, want %v", tc.inner, ok, tc.ok)
		}
		if ok && binary.BigEndian.Uint16(f[packet.VirtioNetHdrLen+packet.EthernetHeaderLen+2:]) != 0xffff {
			t.Errorf("largest superframe: outer total length %d, want 65535", binary.BigEndian.Uint16(f[packet.VirtioNetHdrLen+packet.EthernetHeaderLen+2:]))
		}
	}
	if _, ok := tap.Frame(buf, packet.Headroom, netip.MustParseAddr("fd00::1"), gso, testInnerMTU); ok {
		t.Error("Frame took an IPv6 destination")
	}
}

// The forwarding watch notices the tc program going away (a tc filter
// or qdisc flush by someone else): Err says so, and the switch goes back
// to cutting superframes.
func TestIPIPTapProgramWatch(t *testing.T) {
	u := newUnderlay(t)
	tap := openIPIPTapIn(t, u.nsA, u.addrA, false)
	if err := tap.prog.check(); err != nil {
		t.Fatalf("check with the program attached: %v", err)
	}
	if out, err := exec.Command("tc", "-n", u.nameA, "qdisc", "del", "dev", "pnip0", "clsact").CombinedOutput(); err != nil {
		t.Fatalf("tc qdisc del: %v\n%s", err, out)
	}
	waitProgramGone(t, tap)
}

// The self-test at open runs the program on a frame of each kind: an
// IP-in-IP frame is marked and passed unchanged, plain TCP left alone;
// a program that passes everything unmarked fails it.
func TestIPIPTapProgramSelfTest(t *testing.T) {
	load := func(insns asm.Instructions) *ebpf.Program {
		t.Helper()
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: insns, License: "GPL"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	if err := ipipMarking.selfTest(load(ipipMarking.program())); err != nil {
		t.Fatalf("the program: %v", err)
	}
	passAll := asm.Instructions{asm.Mov.Imm(asm.R0, tcActOK), asm.Return()}
	if err := ipipMarking.selfTest(load(passAll)); err == nil || !strings.Contains(err.Error(), "marked 0") {
		t.Fatalf("a program that marks nothing: %v, want a failed self-test", err)
	}
}

// testInnerMTU is the inner MTU the tests' IP-in-IP tunnels carry (a
// 1500-byte underlay).
const testInnerMTU = 1500 - IPIPOverhead

// udpSuperframe returns a buffer holding, after packet.Headroom, a UDP
// superframe of count datagrams of size bytes (the last one 3 bytes
// shorter) from 10.0.0.1 to 10.0.0.2, with its virtio header.
func udpSuperframe(size, count int) ([]byte, packet.VirtioNetHdr) {
	payload := size*count - 3
	buf := make([]byte, packet.Headroom+packet.IPv4MinHeaderLen+packet.UDPHeaderLen+payload)
	ip := testIPv4(buf[packet.Headroom:], packet.ProtoUDP, 0x2000, false)
	u := packet.UDP(ip[20:])
	u.SetSrcPort(40001)
	u.SetDstPort(9000)
	for i := range payload {
		u[8+i] = byte(i * 7)
	}
	return buf, packet.AsUDPSuperframe(ip, size)
}

// A UDP superframe written into the TAP leaves as IP-in-IP: across a
// veth it arrives whole, marked with its segment size
// (packet.MarkedUDPSegments), and is the superframe sent once unmarked;
// where the underlay cannot segment IP-in-IP the kernel cuts it into its
// datagrams, each complete with its own length and checksum.
func TestIPIPTapUDPSuperframe(t *testing.T) {
	u := newUnderlay(t)
	tap := openIPIPTapIn(t, u.nsA, u.addrA, false)
	rx := listen(t, u.nsB, IPIPConfig{Local: u.addrB})
	const size, count = 200, 20
	buf, gso := udpSuperframe(size, count)
	if !tap.WholeUDP() {
		// A kernel before 6.2 (no USO on TAPs): Frame must refuse.
		if _, ok := tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU); ok {
			t.Fatal("Frame took a UDP superframe on a TAP without USO")
		}
		t.Fatalf("the IP-in-IP TAP takes no UDP superframes on Linux %s (USO needs 6.2)", osRelease())
	}
	want := bytes.Clone(buf[packet.Headroom:])
	frame, ok := tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
	if !ok {
		t.Fatal("Frame refused a UDP superframe")
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	got := readN(t, rx, 1, 3*time.Second)
	_, inner, r := DecapIPIP(got[0])
	if r != DecapOK {
		t.Fatalf("whole superframe: decap %v", r)
	}
	seg, ok := packet.MarkedUDPSegments(inner, testInnerMTU)
	if !ok || seg != size {
		t.Fatalf("whole superframe of %d bytes: MarkedUDPSegments = %d, %v; want %d, true", len(inner), seg, ok, size)
	}
	if h := packet.AsUDPSuperframe(inner, seg); h != gso || !bytes.Equal(inner, want) {
		t.Fatalf("whole superframe unmarked: %+v, %d bytes; want the %d sent, %+v", h, len(inner), len(want), gso)
	}

	// Software segmentation: every datagram on its own.
	ethtoolOff(t, u.nameA, "tx-ipxip4-segmentation", "tx-checksum-ip-generic")
	buf, gso = udpSuperframe(size, count)
	if frame, ok = tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU); !ok {
		t.Fatal("Frame refused the second superframe")
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	got = readN(t, rx, count, 3*time.Second)
	if len(got) != count {
		t.Fatalf("got %d packets, want %d datagrams", len(got), count)
	}
	var data []byte
	for i, p := range got {
		_, in, r := DecapIPIP(p)
		if r != DecapOK || in.Validate() != packet.ParseOK || in.Protocol() != packet.ProtoUDP {
			t.Fatalf("packet %d: not a UDP/IPv4 packet in IP-in-IP (%v)", i, r)
		}
		d := packet.UDP(in.Payload())
		wantLen := size
		if i == count-1 {
			wantLen = size - 3
		}
		if int(d.Length()) != packet.UDPHeaderLen+wantLen || len(d) != packet.UDPHeaderLen+wantLen || !packet.TransportChecksumValid(in) {
			t.Fatalf("datagram %d: UDP length %d in %d bytes (checksum valid %v), want %d", i, d.Length(), len(d), packet.TransportChecksumValid(in), packet.UDPHeaderLen+wantLen)
		}
		data = append(data, d[packet.UDPHeaderLen:]...)
	}
	if !bytes.Equal(data, want[28:]) {
		t.Errorf("the datagrams carry %d bytes, not the %d sent", len(data), len(want)-28)
	}
}

// Frame takes a UDP superframe only where it may cross whole: larger
// than the tunnel's MTU, its datagrams within it, at most
// MaxWholeUDPSegments of them.
func TestIPIPTapUDPFrame(t *testing.T) {
	tap := &IPIPTap{forwardTap: forwardTap{local: [4]byte{10, 250, 0, 1}, vnetLen: packet.VirtioNetHdrLen}, udp: true}
	dst := netip.MustParseAddr("10.250.0.2")
	buf, gso := udpSuperframe(200, 20)
	_, h := mustFrame(t, tap, buf, dst, gso)
	if want := (packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOUDPL4,
		HdrLen: 14 + 20 + 28, GSOSize: 200, CsumStart: 14 + 20 + 20, CsumOffset: 6}); h != want {
		t.Errorf("virtio-net header %+v, want %+v", h, want)
	}
	for _, tc := range []struct {
		name        string
		size, count int
		mtu         int
	}{
		{"no larger than the MTU", 100, 10, testInnerMTU},
		{"a datagram larger than the MTU", 1000, 10, 1000},
		{"more than MaxWholeUDPSegments", 30, MaxWholeUDPSegments + 1, testInnerMTU},
	} {
		buf, gso := udpSuperframe(tc.size, tc.count)
		if _, ok := tap.Frame(buf, packet.Headroom, dst, gso, tc.mtu); ok {
			t.Errorf("%s: Frame took it", tc.name)
		}
	}
	buf, gso = udpSuperframe(30, MaxWholeUDPSegments)
	if _, ok := tap.Frame(buf, packet.Headroom, dst, gso, testInnerMTU); !ok {
		t.Errorf("Frame refused %d datagrams, the most it takes", MaxWholeUDPSegments)
	}
	tap.udp = false
	buf, gso = udpSuperframe(200, 20)
	if _, ok := tap.Frame(buf, packet.Headroom, dst, gso, testInnerMTU); ok {
		t.Error("Frame took a UDP superframe on a TAP without USO")
	}
}
