package encap

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"unsafe"

	"podnet/internal/netnsutil"
	"podnet/internal/packet"
)

// tosReader is a conn whose reads report the outer TOS of each datagram.
type tosReader interface {
	SetReadDeadline(time.Time) error
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	OuterTOS() []uint8
}

// readTOS reads until want datagrams arrived (or 3 s passed), vec at a
// time, and returns copies with the outer TOS OuterTOS reported for each.
func readTOS(t testing.TB, c tosReader, want, vec int) ([][]byte, []uint8) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := readBufs(vec, packet.BufferSize)
	sizes := make([]int, len(bufs))
	var got [][]byte
	var tos []uint8
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, packet.Headroom)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(got), want, err)
		}
		if len(c.OuterTOS()) != n {
			t.Fatalf("OuterTOS has %d entries for %d datagrams", len(c.OuterTOS()), n)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][packet.Headroom:packet.Headroom+sizes[i]]...))
			tos = append(tos, c.OuterTOS()[i])
		}
	}
	return got, tos
}

// setTOS sets the TOS byte of the IPv4 header ip and its checksum.
func setTOS(ip []byte, tos uint8) {
	ip[1] = tos
	packet.IPv4(ip).ComputeChecksum()
}

// innerECNs are the inner TOS bytes the ECN tests send, each with a DSCP
// that must not leave in the outer header: runs of equal ECN, so that
// GSO has something to group, and every codepoint next to every other.
var innerECNs = []uint8{
	0x28 | packet.ECNNotECT, 0x28 | packet.ECNNotECT, 0x28 | packet.ECNECT0, 0x28 | packet.ECNECT0,
	0x28 | packet.ECNCE, 0x28 | packet.ECNCE, 0x28 | packet.ECNECT1, 0x28 | packet.ECNECT1,
	0x28 | packet.ECNNotECT, 0x28 | packet.ECNECT0, 0x28 | packet.ECNCE, 0x28 | packet.ECNECT1,
}

// VXLAN datagrams leave with the inner packet's ECN field in the outer
// header (CE as ECT(0)), and the receiving conn reports each one's: a run
// of equal-sized datagrams whose ECN changes is not sent as one GSO
// message, which would give them all the first one's.
func TestVXLANConnECN(t *testing.T) {
	for _, noGSO := range []bool{false, true} {
		u := newVXLANUnderlay(t)
		a := listenVXLAN(t, u.nsA, VXLANConfig{Local: u.addrA, DisableGSO: noGSO})
		b := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
		if a.gso.Load() == noGSO {
			t.Fatalf("GSO %v with DisableGSO %v on Linux %s", a.gso.Load(), noGSO, osRelease())
		}
		vxlanECN(t, a, b, u.addrB)
	}
}

// vxlanECN sends innerECNs from a to b and checks the outer TOS of each.
func vxlanECN(t *testing.T, a, b *VXLANConn, dst netip.Addr) {
	t.Helper()
	pkts := make([][]byte, len(innerECNs))
	dsts := make([]netip.AddrPort, len(pkts))
	for i, tos := range innerECNs {
		frame := indexedFrame(t, i, 200)
		setTOS(frame[packet.EthernetHeaderLen:], tos)
		pkts[i] = vxlanDatagram(frame, DefaultVNI)
		dsts[i] = netip.AddrPortFrom(dst, VXLANPort)
	}
	if n, err := a.WriteBatch(pkts, dsts); n != len(pkts) || err != nil {
		t.Fatalf("WriteBatch: (%d, %v), want (%d, nil)", n, err, len(pkts))
	}
	got, tos := readTOS(t, b, len(pkts), 8)
	for k, p := range got {
		i := frameIndex(t, p[VXLANHeaderLen:])
		if want := packet.TunnelECN(innerECNs[i]); tos[k] != want {
			t.Errorf("datagram %d (inner TOS %#02x): outer TOS %#02x, want %#02x", i, innerECNs[i], tos[k], want)
		}
	}
}

// The receiving side alone: a sender that sets the outer TOS itself (a
// router on the way that marked CE, say) is read as it sent, on every
// read path: one datagram per slot, several the kernel hands over in one
// read (UDP GRO) and split across reads two buffers at a time, and
// without GRO.
func TestVXLANConnReadsOuterTOS(t *testing.T) {
	for _, cfg := range []struct {
		noGRO bool
		vec   int
	}{{false, 8}, {false, 2}, {true, 8}} {
		u := newVXLANUnderlay(t)
		b := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB, DisableGRO: cfg.noGRO})
		readsOuterTOS(t, u, b, cfg.vec)
	}
}

func readsOuterTOS(t *testing.T, u *underlay, b *VXLANConn, vec int) {
	t.Helper()
	payload := vxlanDatagram(indexedFrame(t, 0, 200), DefaultVNI)
	var seg [24]byte // a UDP_SEGMENT message: the same TOS on every segment
	for _, tc := range []struct {
		tos  uint8
		segs int
	}{{packet.ECNCE, 1}, {packet.ECNECT1, 1}, {0xb8 | packet.ECNCE, 4}, {0, 3}} {
		err := netnsutil.Do(u.nsA, func() error {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.addrB, VXLANPort)))
			if err != nil {
				return err
			}
			defer c.Close()
			rc, _ := c.SyscallConn()
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(tc.tos)) })
			if serr != nil {
				return serr
			}
			var buf []byte
			for range tc.segs {
				buf = append(buf, payload...)
			}
			var oob []byte
			if tc.segs > 1 {
				h := (*unix.Cmsghdr)(unsafe.Pointer(&seg[0]))
				h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
				h.SetLen(unix.CmsgLen(2))
				binary.NativeEndian.PutUint16(seg[unix.CmsgLen(0):], uint16(len(payload)))
				oob = seg[:]
			}
			_, _, err = c.WriteMsgUDP(buf, oob, nil)
			return err
		})
		if err != nil {
			t.Fatalf("send with TOS %#02x: %v", tc.tos, err)
		}
		got, tos := readTOS(t, b, tc.segs, vec)
		for k := range got {
			if tos[k] != tc.tos {
				t.Errorf("GRO %v, %d buffers: sent with TOS %#02x (%d segments): datagram %d read with %#02x", b.GRO(), vec, tc.tos, tc.segs, k, tos[k])
			}
		}
	}
}

// IP-in-IP packets leave with the inner packet's ECN field in the outer
// header, whether the kernel builds that header (IP_TOS per message) or
// the conn does (OuterFromInner), and a raw socket's reads report it.
func TestIPIPConnECN(t *testing.T) {
	for _, outerFromInner := range []bool{false, true} {
		u := newUnderlay(t)
		a := listen(t, u.nsA, IPIPConfig{OuterFromInner: outerFromInner})
		b := listen(t, u.nsB, IPIPConfig{Local: u.addrB})
		pkts := make([][]byte, len(innerECNs)+1)
		dsts := make([]netip.Addr, len(pkts))
		for i := range pkts {
			// The last is too big for the veth: with OuterFromInner it
			// goes out again with the kernel's header, fragmented
			// (sendPlain), and must keep its ECN bits there too.
			payload := make([]byte, 100)
			tos := packet.ECNECT0
			if i < len(innerECNs) {
				tos = innerECNs[i]
			} else {
				payload = make([]byte, 1600)
			}
			binary.BigEndian.PutUint32(payload, uint32(i))
			pkts[i] = udpPacket(t, podA, podB, payload)
			pkts[i][6] &^= 0x40 // DF clear: the underlay may fragment it
			setTOS(pkts[i], tos)
			dsts[i] = u.addrB
		}
		if n, err := a.WriteBatch(pkts, dsts); n != len(pkts) || err != nil {
			t.Fatalf("OuterFromInner %v: WriteBatch: (%d, %v), want (%d, nil)", outerFromInner, n, err, len(pkts))
		}
		got, tos := readTOS(t, b, len(pkts), 8)
		for k, p := range got {
			outer, inner, r := DecapIPIP(p)
			if r != DecapOK {
				t.Fatalf("packet %d: %v", k, r)
			}
			i := int(binary.BigEndian.Uint32(inner[packet.IPv4MinHeaderLen+8:]))
			sent := packet.IPv4(pkts[i]).TOS()
			want := packet.TunnelECN(sent)
			if outer.TOS() != want || tos[k] != want {
				t.Errorf("OuterFromInner %v, packet %d (inner TOS %#02x, %d bytes): outer TOS %#02x, OuterTOS %#02x, want %#02x",
					outerFromInner, i, sent, len(pkts[i]), outer.TOS(), tos[k], want)
			}
			if inner.TOS() != sent {
				t.Errorf("packet %d: inner TOS %#02x, want %#02x unchanged", i, inner.TOS(), sent)
			}
		}
	}
}

// Superframes sent whole through a TAP carry the inner ECN field in their
// outer header, and the kernel copies it into every segment it cuts.
func TestTapSuperframeECN(t *testing.T) {
	const payload, mss = 20000, 1400
	segs := (payload + mss - 1) / mss
	t.Run("ipip", func(t *testing.T) {
		u := newUnderlay(t)
		tap := openIPIPTapIn(t, u.nsA, u.addrA, false)
		rx := listen(t, u.nsB, IPIPConfig{Local: u.addrB})
		send := func(tos uint8) {
			buf, _, gso := tcpSuperframe(payload, mss, 1000)
			setTOS(buf[packet.Headroom:], tos)
			frame, ok := tap.Frame(buf, packet.Headroom, u.addrB, gso, testInnerMTU)
			if !ok {
				t.Fatal("Frame refused a TCP superframe")
			}
			if err := tap.Send(frame); err != nil {
				t.Fatal(err)
			}
		}
		send(0x28 | packet.ECNCE)
		if _, tos := readTOS(t, rx, 1, 8); tos[0] != packet.ECNECT0 {
			t.Errorf("whole superframe, inner CE: outer TOS %#02x, want ECT(0)", tos[0])
		}
		ethtoolOff(t, u.nameA, "tx-ipxip4-segmentation", "tx-checksum-ip-generic")
		send(0x28 | packet.ECNECT1)
		got, tos := readTOS(t, rx, segs, 8)
		for k, p := range got {
			outer, inner, _ := DecapIPIP(p)
			if tos[k] != packet.ECNECT1 || outer.TOS() != packet.ECNECT1 || inner.TOS() != 0x28|packet.ECNECT1 {
				t.Errorf("segment %d: outer TOS %#02x (OuterTOS %#02x), inner %#02x; want ECT(1) outside, %#02x inside", k, outer.TOS(), tos[k], inner.TOS(), 0x28|packet.ECNECT1)
			}
		}
	})
	t.Run("vxlan", func(t *testing.T) {
		u, tap, ok := probedTap(t)
		if !ok {
			return // refused as it must be before 6.17 (probedTap checked)
		}
		rx := listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB})
		dst := netip.AddrPortFrom(u.addrB, VXLANPort)
		send := func(tos uint8) {
			buf, start, gso := tcpSuperframe(payload, mss, 1000)
			setTOS(buf[packet.Headroom:], tos)
			frame, ok := tap.Frame(buf, start, dst, 40000, gso)
			if !ok {
				t.Fatal("Frame refused a TCP superframe")
			}
			if err := tap.Send(frame); err != nil {
				t.Fatal(err)
			}
		}
		send(0x28 | packet.ECNECT0)
		if _, tos := readTOS(t, rx, 1, 8); tos[0] != packet.ECNECT0 {
			t.Errorf("whole superframe, inner ECT(0): outer TOS %#02x, want ECT(0)", tos[0])
		}
		ethtoolOff(t, u.nameA, "tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "tx-checksum-ip-generic")
		send(0x28 | packet.ECNCE)
		_, tos := readTOS(t, rx, segs, 8)
		for k := range tos {
			if tos[k] != packet.ECNECT0 {
				t.Errorf("segment %d of an inner-CE superframe: outer TOS %#02x, want ECT(0)", k, tos[k])
			}
		}
	})
}
