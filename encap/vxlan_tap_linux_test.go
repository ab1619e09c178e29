package encap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
)

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(t testing.TB, major, minor int) bool {
	t.Helper()
	f := strings.FieldsFunc(osRelease(), func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		t.Fatalf("cannot parse kernel release %q", osRelease())
	}
	ma, _ := strconv.Atoi(f[0])
	mi, _ := strconv.Atoi(f[1])
	return ma > major || ma == major && mi >= minor
}

// openVXLANTapIn opens a VXLANTap in the namespace at ns, from local, and closes
// it when the test ends. On a kernel before 6.17 it checks that the
// refusal says why and reports false.
func openVXLANTapIn(t testing.TB, ns string, local netip.Addr) (*VXLANTap, bool) {
	t.Helper()
	var tap *VXLANTap
	err := netnsutil.Do(ns, func() (err error) {
		tap, err = OpenVXLANTap("pnvx0", local)
		return err
	})
	if !kernelAtLeast(t, 6, 17) {
		if !errors.Is(err, ErrNoUDPTunnelGSO) {
			t.Fatalf("OpenVXLANTap on Linux %s: %v, want ErrNoUDPTunnelGSO", osRelease(), err)
		}
		return nil, false
	}
	if err != nil {
		t.Fatalf("OpenVXLANTap on Linux %s: %v", osRelease(), err)
	}
	t.Cleanup(func() { tap.Close() })
	return tap, true
}

// probedTap is an underlay whose node A has a VXLANTap that passed its
// probe; false on a kernel before 6.17 (openTap checked the refusal).
func probedTap(t testing.TB) (*underlay, *VXLANTap, bool) {
	t.Helper()
	u := newVXLANUnderlay(t)
	tap, ok := openVXLANTapIn(t, u.nsA, u.addrA)
	if !ok {
		return nil, nil, false
	}
	if err := netnsutil.Do(u.nsA, tap.Probe); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return u, tap, true
}

// tcpSuperframe builds, at packet.Headroom in a buffer, a TCP superframe
// from 10.0.0.1 to 10.0.0.2 with payload bytes (byte i is i*7), sequence
// number seq and a partial checksum, as a pod's kernel hands one over, and
// wraps it for VXLAN as the switch does. It returns the buffer, where the
// VXLAN header starts, and the superframe's offload metadata.
func tcpSuperframe(payload, mss int, seq uint32) ([]byte, int, packet.VirtioNetHdr) {
	buf := make([]byte, packet.Headroom+40+payload)
	ip := testIPv4(buf[packet.Headroom:], packet.ProtoTCP, 0x1000, true)
	tcp := packet.TCP(ip[20:])
	tcp.SetSrcPort(40001)
	tcp.SetDstPort(5201)
	tcp.SetSeq(seq)
	tcp[12] = 5 << 4
	tcp.SetFlags(packet.TCPFlagACK)
	binary.BigEndian.PutUint16(tcp[14:], 512)
	for i := range payload {
		tcp[20+i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(tcp[16:], packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp)))))
	eth := packet.Ethernet(buf[packet.Headroom-packet.EthernetHeaderLen:])
	eth.SetDst(packet.MAC{0x66, 0, 0, 0, 0, 2})
	eth.SetSrc(packet.MAC{0x66, 0, 0, 0, 0, 1})
	eth.SetEtherType(packet.EtherTypeIPv4)
	start := EncapVXLAN(buf, packet.Headroom-packet.EthernetHeaderLen, DefaultVNI)
	return buf, start, packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4,
		HdrLen: 40, GSOSize: uint16(mss), CsumStart: 20, CsumOffset: 16}
}

// testIPv4 writes into b an IPv4 header from 10.0.0.1 to 10.0.0.2 for
// a packet of len(b) bytes (TTL 64, its checksum set) and returns it.
func testIPv4(b []byte, proto uint8, id uint16, df bool) packet.IPv4 {
	ip := packet.IPv4(b)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], id)
	if df {
		ip[6] = 0x40
	}
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip[:20], 0))
	return ip
}

// readDatagrams reads until want datagrams arrived (or 3 s passed) into
// 64-KiB buffers and returns copies with their sources.
func readDatagrams(t testing.TB, c *VXLANConn, want int) ([][]byte, []netip.AddrPort) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := readBufs(8, packet.BufferSize)
	sizes := make([]int, len(bufs))
	var got [][]byte
	var from []netip.AddrPort
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, packet.Headroom)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(got), want, err)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][packet.Headroom:packet.Headroom+sizes[i]]...))
			from = append(from, netip.AddrPortFrom(c.Sources()[i], c.SourcePorts()[i]))
		}
	}
	return got, from
}

// A superframe written into the TAP leaves the node as VXLAN: across a
// veth it arrives whole, one datagram holding the whole inner packet with
// its partial checksum; where the underlay device cannot segment UDP
// tunnels, the kernel cuts it into datagrams of the inner MSS, in order,
// that together carry the same bytes.
func TestVXLANTapSuperframe(t *testing.T) {
	u, tap, ok := probedTap(t)
	if !ok {
		return
	}
	rx := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
	const payload, mss, sport = 20000, 1400, 40000
	dst := netip.AddrPortFrom(u.addrB, VXLANPort)

	buf, start, gso := tcpSuperframe(payload, mss, 1000)
	want := append([]byte(nil), buf[start:]...)
	frame, ok := tap.Frame(buf, start, dst, sport, gso)
	if !ok {
		t.Fatal("Frame refused a TCP superframe with headroom")
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	got, from := readDatagrams(t, rx, 1)
	if !bytes.Equal(got[0], want) {
		t.Fatalf("whole superframe: got %d bytes, want the %d sent (VXLAN header, inner frame, partial checksum)", len(got[0]), len(want))
	}
	if from[0] != netip.AddrPortFrom(u.addrA, sport) {
		t.Errorf("datagram from %v, want %v", from[0], netip.AddrPortFrom(u.addrA, sport))
	}

	// The largest a veth carries whole (a frame under its 64-KiB
	// gso_max_size; a bigger one is cut by the kernel, as below) arrives
	// whole too.
	const vethWhole = 0xffff - packet.EthernetHeaderLen - packet.IPv4MinHeaderLen - udpHeaderLen - VXLANHeaderLen - packet.EthernetHeaderLen
	big, bigStart, bigGSO := tcpSuperframe(vethWhole-40, mss, 1)
	bigWant := append([]byte(nil), big[bigStart:]...)
	frame, ok = tap.Frame(big, bigStart, dst, sport, bigGSO)
	if !ok {
		t.Fatal("Frame refused a superframe of 65471 bytes")
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	if got, _ = readDatagrams(t, rx, 1); !bytes.Equal(got[0], bigWant) {
		t.Fatalf("superframe of 65471 bytes: got %d bytes, want the %d sent", len(got[0]), len(bigWant))
	}

	// The kernel segments in software when the device cannot.
	ethtoolOff(t, u.nameA, "tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation")
	buf, start, gso = tcpSuperframe(payload, mss, 1000)
	frame, _ = tap.Frame(buf, start, dst, sport, gso)
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	segs := (payload + mss - 1) / mss
	got, _ = readDatagrams(t, rx, segs)
	if len(got) != segs {
		t.Fatalf("got %d datagrams, want %d", len(got), segs)
	}
	data := segmentsPayload(t, got, mss, 1000, false)
	ids := map[uint16]bool{}
	for _, d := range got {
		ids[packet.IPv4(d[VXLANHeaderLen+packet.EthernetHeaderLen:]).ID()] = true
	}
	if len(ids) != segs {
		t.Errorf("inner IP IDs: %d distinct in %d segments", len(ids), segs)
	}
	for i, b := range data {
		if b != byte(i*7) {
			t.Fatalf("payload byte %d is %d, want %d", i, b, byte(i*7))
		}
	}
	if len(data) != payload {
		t.Errorf("segments carry %d payload bytes, want %d", len(data), payload)
	}
	if tap.Sent() != 3 {
		t.Errorf("Sent() = %d, want 3", tap.Sent())
	}
	if !tap.udpCsum {
		t.Errorf("Linux %s: the TAP sends without the outer UDP checksum (TUN_F_UDP_TUNNEL_GSO_CSUM refused)", osRelease())
	}
}

// Sending a superframe whole allocates nothing.
func TestVXLANTapAllocs(t *testing.T) {
	u := newVXLANUnderlay(t)
	tap, ok := openVXLANTapIn(t, u.nsA, u.addrA)
	if !ok {
		return
	}
	listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
	const sport = 40000
	dst := netip.AddrPortFrom(u.addrB, VXLANPort)
	buf, start, gso := tcpSuperframe(20000, 1400, 1000)
	if a := testing.AllocsPerRun(50, func() {
		frame, _ := tap.Frame(buf, start, dst, sport, gso)
		if err := tap.Send(frame); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Frame and Send: %v allocations per superframe, want 0", a)
	}
}

// segmentsPayload checks the datagrams a superframe was cut into
// (checkSegment; complete: every inner checksum complete, not partial)
// and returns the TCP payload they carry, in order.
func segmentsPayload(t testing.TB, got [][]byte, mss int, seq0 uint32, complete bool) []byte {
	t.Helper()
	var data []byte
	for i, d := range got {
		if err := checkSegment(d, i, mss, seq0); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		ip := packet.IPv4(d[VXLANHeaderLen+packet.EthernetHeaderLen:])
		if complete && !packet.TransportChecksumValid(ip) {
			t.Fatalf("segment %d: inner TCP checksum not complete", i)
		}
		data = append(data, ip.Payload()[packet.TCPMinHeaderLen:]...)
	}
	return data
}

// checkSegment checks datagram i of a superframe the kernel cut: a VXLAN
// header, the inner Ethernet header, and a TCP segment of mss bytes (the
// last shorter) at the right sequence number whose checksum is complete
// or, across a veth, the partial sum for its own length.
func checkSegment(d []byte, i, mss int, seq0 uint32) error {
	if _, r := DecapVXLAN(d, DefaultVNI); r != DecapOK {
		return fmt.Errorf("decap: %v", r)
	}
	ip := packet.IPv4(d[VXLANHeaderLen+packet.EthernetHeaderLen:])
	if ip.Validate() != packet.ParseOK || ip.Protocol() != packet.ProtoTCP {
		return errors.New("not a valid inner TCP/IPv4 packet")
	}
	if packet.Checksum(ip[:20], 0) != 0 {
		return errors.New("inner IPv4 header checksum wrong")
	}
	tcp := packet.TCP(ip.Payload())
	if n := len(tcp) - 20; n > mss || n == 0 {
		return fmt.Errorf("%d payload bytes, want 1..%d", n, mss)
	}
	if tcp.Seq() != seq0+uint32(i*mss) {
		return fmt.Errorf("seq %d, want %d", tcp.Seq(), seq0+uint32(i*mss))
	}
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp))))
	if !packet.TransportChecksumValid(ip) && tcp.Checksum() != partial {
		return fmt.Errorf("TCP checksum %#04x neither complete nor the partial sum %#04x", tcp.Checksum(), partial)
	}
	return nil
}

// A firewall that drops forwarded traffic lets the probe through (it is
// delivered locally) but not the superframes: the forwarding watch sees
// that and Err says so. Without it, the same superframes pass the watch.
func TestVXLANTapForwardingWatch(t *testing.T) {
	u, tap, ok := probedTap(t)
	if !ok {
		return
	}
	tap.stopWatch() // the test drives checkForwarding itself
	rx := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
	dst := netip.AddrPortFrom(u.addrB, VXLANPort)
	sendSome := func() {
		t.Helper()
		for range forwardWatchMin + 4 {
			buf, start, gso := tcpSuperframe(8000, 1400, 1)
			frame, _ := tap.Frame(buf, start, dst, 40000, gso)
			if err := tap.Send(frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	sendSome()
	readDatagrams(t, rx, forwardWatchMin+4)
	if err := tap.checkForwarding(); err != nil || tap.Err() != nil {
		t.Fatalf("forwarded superframes: check %v, Err %v, want nil", err, tap.Err())
	}
	for _, rule := range []string{"add table ip pnfw", "add chain ip pnfw block { type filter hook forward priority 0 ; policy drop ; }"} {
		if out, err := exec.Command("ip", "netns", "exec", u.nameA, "nft", rule).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v\n%s", rule, err, out)
		}
	}
	sendSome()
	if err := tap.checkForwarding(); err == nil || !strings.Contains(err.Error(), "FORWARD") {
		t.Fatalf("dropped superframes: %v, want an error naming the FORWARD chain", err)
	}
	// A trickle, one superframe per look, fewer than it takes to judge:
	// forwarded, it passes; dropped, it is found once enough were written.
	nft := func(rule string) {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "exec", u.nameA, "nft", rule).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v\n%s", rule, err, out)
		}
	}
	nft("delete table ip pnfw")
	buf, start, gso := tcpSuperframe(8000, 1400, 1)
	frame, _ := tap.Frame(buf, start, dst, 40000, gso)
	for i := range forwardWatchMin + 1 {
		if err := tap.Send(frame); err != nil {
			t.Fatal(err)
		}
		if err := tap.checkForwarding(); err != nil {
			t.Fatalf("forwarded trickle, superframe %d: %v", i, err)
		}
	}
	nft("add table ip pnfw")
	nft("add chain ip pnfw block { type filter hook forward priority 0 ; policy drop ; }")
	var err error
	for i := 0; i < forwardWatchMin && err == nil; i++ {
		if serr := tap.Send(frame); serr != nil {
			t.Fatal(serr)
		}
		err = tap.checkForwarding()
	}
	if err == nil {
		t.Fatal("a trickle of dropped superframes, one per look: never judged")
	}
}

// Probe fails, saying why, where the kernel drops what the TAP writes: a
// strict rp_filter on "all" overrides the TAP's own setting.
func TestVXLANTapProbeStrictRPFilter(t *testing.T) {
	u := newVXLANUnderlay(t)
	nettest.Sysctl(t, u.nameA, "net.ipv4.conf.all.rp_filter=1")
	tap, ok := openVXLANTapIn(t, u.nsA, u.addrA)
	if !ok {
		return
	}
	err := netnsutil.Do(u.nsA, tap.Probe)
	if err == nil || !strings.Contains(err.Error(), "rp_filter") {
		t.Fatalf("Probe with rp_filter strict: %v, want an error naming rp_filter", err)
	}
}

// With a loose rp_filter on "all" (Ubuntu's default) the TAP gets the
// node's address, without which the kernel's source check drops every
// frame, and superframes get through.
func TestVXLANTapLooseRPFilter(t *testing.T) {
	u := newVXLANUnderlay(t)
	nettest.Sysctl(t, u.nameA, "net.ipv4.conf.all.rp_filter=2")
	tap, ok := openVXLANTapIn(t, u.nsA, u.addrA)
	if !ok {
		return
	}
	if err := netnsutil.Do(u.nsA, tap.Probe); err != nil {
		t.Fatalf("Probe with rp_filter loose: %v", err)
	}
	rx := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
	buf, start, gso := tcpSuperframe(9000, 1400, 1)
	frame, _ := tap.Frame(buf, start, netip.AddrPortFrom(u.addrB, VXLANPort), 40000, gso)
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	if got, _ := readDatagrams(t, rx, 1); len(got[0]) != VXLANHeaderLen+packet.EthernetHeaderLen+9040 {
		t.Fatalf("got %d bytes, want the whole superframe", len(got[0]))
	}
}

// frameCase is a change to a TCP superframe from tcpSuperframe (its
// buffer, where Frame is to start, its offload metadata) and whether a
// tunnel TAP's Frame takes it after that.
type frameCase struct {
	name   string
	adjust func(buf []byte, start int, gso *packet.VirtioNetHdr) ([]byte, int)
	ok     bool
}

// frameCases are what the Frame of a tunnel TAP with headroom bytes
// before start takes and refuses: the superframe as it is, and with too
// little headroom or anything the kernel could not segment again.
func frameCases(headroom int) []frameCase {
	return []frameCase{
		{"tcp superframe", func(b []byte, s int, _ *packet.VirtioNetHdr) ([]byte, int) { return b, s }, true},
		{"no headroom", func(b []byte, s int, _ *packet.VirtioNetHdr) ([]byte, int) {
			return b[s-headroom+1:], headroom - 1
		}, false},
		{"udp superframe", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.GSOType = packet.GSOUDPL4; return b, s }, false},
		{"complete checksum", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.Flags = 0; return b, s }, false},
		{"no segment size", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.GSOSize = 0; return b, s }, false},
		{"checksum not in TCP", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.CsumOffset = 6; return b, s }, false},
		{"checksum start past IP", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.CsumStart = 24; return b, s }, false},
	}
}

// Frame refuses what cannot leave as one UDP-tunnel superframe, and takes
// the largest one that can.
func TestVXLANTapFrameRefuses(t *testing.T) {
	tap := &VXLANTap{forwardTap: forwardTap{local: [4]byte{10, 251, 0, 1}, vnetLen: vnetTunnelHdrLen}}
	dst := netip.MustParseAddrPort("10.251.0.2:4789")
	for _, tc := range frameCases(VXLANTapHeadroom) {
		buf, start, gso := tcpSuperframe(4000, 1000, 1)
		buf, start = tc.adjust(buf, start, &gso)
		if _, ok := tap.Frame(buf, start, dst, 1, gso); ok != tc.ok {
			t.Errorf("%s: Frame ok = %v, want %v", tc.name, ok, tc.ok)
		}
	}
	for _, tc := range []struct {
		inner int
		ok    bool
	}{{MaxVXLANTapInner, true}, {MaxVXLANTapInner + 1, false}} {
		buf, start, gso := tcpSuperframe(tc.inner-40, 1400, 1)
		f, ok := tap.Frame(buf, start, dst, 1, gso)
		if ok != tc.ok {
			t.Errorf("inner packet of %d bytes: Frame ok = %v, want %v", tc.inner, ok, tc.ok)
		}
		if ok && binary.BigEndian.Uint16(f[vnetTunnelHdrLen+packet.EthernetHeaderLen+2:]) != 0xffff {
			t.Errorf("largest superframe: outer total length %d, want 65535", binary.BigEndian.Uint16(f[vnetTunnelHdrLen+packet.EthernetHeaderLen+2:]))
		}
	}
}

// Frame writes what the kernel's virtio_net_hdr_tnl_to_skb expects: the
// offsets counted from the outer Ethernet header, the header length taken
// from the packet (not from gso), the outer IPv4 and UDP headers right.
func TestVXLANTapFrameBytes(t *testing.T) {
	for _, udpCsum := range []bool{false, true} {
		tap := &VXLANTap{forwardTap: forwardTap{local: [4]byte{10, 251, 0, 1}, mac: [6]byte{2, 0, 0, 0, 0, 7}, vnetLen: vnetTunnelHdrLen}, udpCsum: udpCsum}
		dst := netip.MustParseAddrPort("10.251.0.2:4789")
		buf, start, gso := tcpSuperframe(20000, 1400, 1)
		gso.HdrLen = 9999 // a lie: Frame must not pass it on
		f, ok := tap.Frame(buf, start, dst, 40000, gso)
		if !ok {
			t.Fatal("Frame refused")
		}
		le := binary.LittleEndian
		flags := byte(packet.VirtioNetHdrFNeedsCsum)
		if udpCsum {
			flags |= vnetFUDPTunnelCsum
		}
		if f[0] != flags || f[1] != gsoUDPTunnelIPv4|packet.GSOTCPv4 {
			t.Errorf("flags %#x gso type %#x, want %#x and %#x", f[0], f[1], flags, gsoUDPTunnelIPv4|packet.GSOTCPv4)
		}
		for _, c := range []struct {
			name      string
			off, want int
		}{
			{"hdr_len", 2, 14 + 20 + 8 + 8 + 14 + 40},
			{"gso_size", 4, 1400},
			{"csum_start", 6, 14 + 20 + 8 + 8 + 14 + 20},
			{"csum_offset", 8, 16},
			{"outer_th_offset", 20, 14 + 20},
			{"inner_nh_offset", 22, 14 + 20 + 8 + 8 + 14},
		} {
			if got := int(le.Uint16(f[c.off:])); got != c.want {
				t.Errorf("%s = %d, want %d", c.name, got, c.want)
			}
		}
		eth := packet.Ethernet(f[vnetTunnelHdrLen:])
		if eth.Dst() != packet.MAC(tap.mac) || eth.EtherType() != packet.EtherTypeIPv4 {
			t.Errorf("Ethernet to %s type %#x, want the TAP's MAC, IPv4", eth.Dst(), eth.EtherType())
		}
		ip := packet.IPv4(f[vnetTunnelHdrLen+packet.EthernetHeaderLen:])
		if ip.Validate() != packet.ParseOK || packet.Checksum(ip[:20], 0) != 0 || int(ip.TotalLen()) != len(ip) ||
			ip.Protocol() != packet.ProtoUDP || ip.DontFragment() || ip.TTL() != 64 ||
			ip.SrcBytes() != tap.local || ip.DstBytes() != dst.Addr().As4() {
			t.Errorf("outer IPv4 header %x", ip[:20])
		}
		u := ip[20:28]
		if be := binary.BigEndian; be.Uint16(u) != 40000 || be.Uint16(u[2:]) != 4789 || int(be.Uint16(u[4:])) != len(ip)-20 {
			t.Errorf("outer UDP header %x", u)
		}
		want := uint16(0)
		if udpCsum {
			want = packet.Fold(packet.PseudoHeaderSum(packet.ProtoUDP, tap.local, dst.Addr().As4(), uint16(len(ip)-20)))
		}
		if got := binary.BigEndian.Uint16(u[6:]); got != want {
			t.Errorf("outer UDP checksum %#04x, want %#04x", got, want)
		}
		// Superframe after superframe, the IDs the kernel gives segments
		// do not overlap: 15 segments each.
		id1 := ip.ID()
		f2, _ := tap.Frame(buf, start, dst, 40000, gso)
		if id2 := packet.IPv4(f2[vnetTunnelHdrLen+packet.EthernetHeaderLen:]).ID(); id2-id1 != 15 {
			t.Errorf("outer IP IDs %d then %d, want 15 apart (one per segment)", id1, id2)
		}
	}
}

// A marked VXLANTap (the way for kernels before 6.17, forced here) sends
// the same: a superframe arrives whole across the veth, with a zero outer
// UDP checksum; where the underlay device cannot segment UDP tunnels or
// fill in checksums, the kernel cuts it into datagrams of the inner MSS
// with complete inner checksums; without the program it is dropped, and
// the forwarding watch says so.
func TestVXLANTapMarkedSuperframe(t *testing.T) {
	u := newVXLANUnderlay(t)
	var tap *VXLANTap
	if err := netnsutil.Do(u.nsA, func() (err error) {
		if tap, err = OpenVXLANTapMarked("pnvx0", u.addrA, VXLANPort); err != nil {
			return err
		}
		return tap.Probe()
	}); err != nil {
		if tap != nil {
			tap.Close()
		}
		t.Fatalf("OpenVXLANTapMarked and Probe on Linux %s: %v", osRelease(), err)
	}
	t.Cleanup(func() { tap.Close() })
	if !tap.Marked() {
		t.Fatal("Marked() = false")
	}
	rx := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
	const payload, mss, sport = 20000, 1400, 40000
	dst := netip.AddrPortFrom(u.addrB, VXLANPort)
	buf, start, gso := tcpSuperframe(payload, mss, 1000)
	want := append([]byte(nil), buf[start:]...)
	frame, ok := tap.Frame(buf, start, dst, sport, gso)
	if !ok {
		t.Fatal("Frame refused a TCP superframe with headroom")
	}
	if u := frame[vnetTunnelHdrLen+packet.EthernetHeaderLen+packet.IPv4MinHeaderLen:]; binary.BigEndian.Uint16(u[6:]) != 0 {
		t.Errorf("outer UDP checksum %#04x, want 0 (no UDP-tunnel checksum offload this way)", binary.BigEndian.Uint16(u[6:]))
	}
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	got, from := readDatagrams(t, rx, 1)
	if !bytes.Equal(got[0], want) || from[0] != netip.AddrPortFrom(u.addrA, sport) {
		t.Fatalf("whole superframe: got %d bytes from %v, want the %d sent from %v", len(got[0]), from[0], len(want), netip.AddrPortFrom(u.addrA, sport))
	}

	ethtoolOff(t, u.nameA, "tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "tx-checksum-ip-generic")
	buf, start, gso = tcpSuperframe(payload, mss, 1000)
	frame, _ = tap.Frame(buf, start, dst, sport, gso)
	if err := tap.Send(frame); err != nil {
		t.Fatal(err)
	}
	segs := (payload + mss - 1) / mss
	got, _ = readDatagrams(t, rx, segs)
	data := segmentsPayload(t, got, mss, 1000, true)
	if !bytes.Equal(data, want[VXLANHeaderLen+packet.EthernetHeaderLen+40:]) {
		t.Errorf("segments carry %d payload bytes, not the %d sent", len(data), payload)
	}

	// Without the program the kernel cannot segment the frame: dropped.
	buf, start, gso = tcpSuperframe(payload, mss, 1000)
	frame, _ = tap.Frame(buf, start, dst, sport, gso)
	withoutProgram(t, u.nameA, "pnvx0", tap, frame, rx)
	// What checksystem asks, in the same namespace: it can work here.
	if err := netnsutil.Do(u.nsA, CheckVXLANTapMarked); err != nil {
		t.Errorf("CheckVXLANTapMarked: %v", err)
	}
	if _, err := OpenVXLANTapMarked("pnvx1", u.addrA, 0); err == nil {
		t.Error("OpenVXLANTapMarked with port 0 (every UDP frame marked): no error")
	}
}

// The VXLAN program's self-test passes it, and fails one that marks
// nothing.
func TestVXLANTapProgramSelfTest(t *testing.T) {
	m := vxlanMarking(VXLANPort)
	for _, tc := range []struct {
		name  string
		insns asm.Instructions
		ok    bool
	}{
		{"the program", m.program(), true},
		{"a program that passes everything", asm.Instructions{asm.Mov.Imm(asm.R0, tcActOK), asm.Return()}, false},
		{"the program for another port", vxlanMarking(VXLANPort + 1).program(), false},
	} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: tc.insns, License: "GPL"})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = m.selfTest(p)
		p.Close()
		if (err == nil) != tc.ok {
			t.Errorf("%s: self-test %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
