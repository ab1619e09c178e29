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

	"podnet/internal/netnsutil"
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

// openTap opens a VXLANTap in the namespace at ns, from local, and closes
// it when the test ends. On a kernel before 6.17 it checks that the
// refusal says why and reports false.
func openTap(t testing.TB, ns string, local netip.Addr) (*VXLANTap, bool) {
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

// tcpSuperframe builds, at packet.Headroom in a buffer, a TCP superframe
// from 10.0.0.1 to 10.0.0.2 with payload bytes (byte i is i*7), sequence
// number seq and a partial checksum, as a pod's kernel hands one over, and
// wraps it for VXLAN as the switch does. It returns the buffer, where the
// VXLAN header starts, and the superframe's offload metadata.
func tcpSuperframe(payload, mss int, seq uint32) ([]byte, int, packet.VirtioNetHdr) {
	buf := make([]byte, packet.Headroom+40+payload)
	ip := packet.IPv4(buf[packet.Headroom:])
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], 0x1000)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = packet.ProtoTCP
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip[:20], 0))
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

// readDatagrams reads until want datagrams arrived (or 3 s passed) into
// 64-KiB buffers and returns copies with their sources.
func readDatagrams(t testing.TB, c *VXLANConn, want int) ([][]byte, []netip.AddrPort) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := readBufs(8, packet.BufferSize-packet.Headroom)
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
	u := newVXLANUnderlay(t)
	tap, ok := openTap(t, u.nsA, u.addrA)
	if !ok {
		return
	}
	if err := netnsutil.Do(u.nsA, tap.Probe); err != nil {
		t.Fatalf("Probe: %v", err)
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

	// The kernel segments in software when the device cannot.
	if out, err := exec.Command("ip", "netns", "exec", u.nameA, "ethtool", "-K", "veth0",
		"tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation", "off").CombinedOutput(); err != nil {
		t.Fatalf("ethtool: %v\n%s", err, out)
	}
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
	var data []byte
	ids := map[uint16]bool{}
	for i, d := range got {
		if err := checkSegment(d, i, mss, 1000); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		ip := packet.IPv4(d[VXLANHeaderLen+packet.EthernetHeaderLen:])
		ids[ip.ID()] = true
		data = append(data, ip.Payload()[20:]...)
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
	if tap.Sent() != 2 {
		t.Errorf("Sent() = %d, want 2", tap.Sent())
	}
}

// Sending a superframe whole allocates nothing.
func TestVXLANTapAllocs(t *testing.T) {
	u := newVXLANUnderlay(t)
	tap, ok := openTap(t, u.nsA, u.addrA)
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
	u := newVXLANUnderlay(t)
	tap, ok := openTap(t, u.nsA, u.addrA)
	if !ok {
		return
	}
	if err := netnsutil.Do(u.nsA, tap.Probe); err != nil {
		t.Fatalf("Probe: %v", err)
	}
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
	err := tap.checkForwarding()
	if err == nil {
		err = tap.Err() // the watch got there first
	}
	if err == nil || !strings.Contains(err.Error(), "FORWARD") {
		t.Fatalf("dropped superframes: %v, want an error naming the FORWARD chain", err)
	}
}

// Probe fails, saying why, where the kernel drops what the TAP writes: a
// strict rp_filter on "all" overrides the TAP's own setting.
func TestVXLANTapProbeStrictRPFilter(t *testing.T) {
	u := newVXLANUnderlay(t)
	if out, err := exec.Command("ip", "netns", "exec", u.nameA, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	tap, ok := openTap(t, u.nsA, u.addrA)
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
	if out, err := exec.Command("ip", "netns", "exec", u.nameA, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=2").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	tap, ok := openTap(t, u.nsA, u.addrA)
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

// Frame refuses what cannot leave as one UDP-tunnel superframe, and takes
// the largest one that can.
func TestVXLANTapFrameRefuses(t *testing.T) {
	tap := &VXLANTap{local: [4]byte{10, 251, 0, 1}}
	dst := netip.MustParseAddrPort("10.251.0.2:4789")
	for _, tc := range []struct {
		name   string
		adjust func(buf []byte, start int, gso *packet.VirtioNetHdr) ([]byte, int)
		ok     bool
	}{
		{"tcp superframe", func(b []byte, s int, _ *packet.VirtioNetHdr) ([]byte, int) { return b, s }, true},
		{"no headroom", func(b []byte, s int, _ *packet.VirtioNetHdr) ([]byte, int) {
			return b[s-VXLANTapHeadroom+1:], VXLANTapHeadroom - 1
		}, false},
		{"udp superframe", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.GSOType = packet.GSOUDPL4; return b, s }, false},
		{"complete checksum", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.Flags = 0; return b, s }, false},
		{"no segment size", func(b []byte, s int, g *packet.VirtioNetHdr) ([]byte, int) { g.GSOSize = 0; return b, s }, false},
	} {
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
