package encap

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
	"podnet/internal/udpoffload"
)

// kernelVXLAN adds the kernel's own VXLAN device vx0 to node B, set up the
// way Calico's Felix programs vxlan.calico, with node A as its only
// remote VTEP:
//
//	netns A                                 netns B
//	veth0 10.251.0.1 ────────────────────── veth0 10.251.0.2
//	VXLANConn :4789                         vx0 VNI 4096 :4789, MAC vtepB
//	  VTEP MAC vtepA, "pod" 192.168.2.2       192.168.2.1/24
//	                                          fdb vtepA dst 10.251.0.1
//	                                          neigh 192.168.2.2 lladdr vtepA
func kernelVXLAN(t *testing.T, u *underlay) {
	t.Helper()
	// No IPv6 on vx0: its router solicitations and DAD would be noise.
	nettest.Sysctl(t, u.nameB, "net.ipv6.conf.default.disable_ipv6=1")
	ip(t, "-n", u.nameB, "link", "add", "vx0", "address", vtepB.String(), "type", "vxlan",
		"id", "4096", "dstport", "4789", "local", "10.251.0.2", "nolearning")
	ip(t, "-n", u.nameB, "addr", "add", "192.168.2.1/24", "dev", "vx0")
	ip(t, "-n", u.nameB, "link", "set", "vx0", "up")
	if out, err := exec.Command("ip", "netns", "exec", u.nameB, "bridge", "fdb", "add", vtepA.String(),
		"dev", "vx0", "dst", "10.251.0.1", "self", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb add in %s: %v\n%s", u.nameB, err, out)
	}
	ip(t, "-n", u.nameB, "neigh", "add", "192.168.2.2", "lladdr", vtepA.String(), "dev", "vx0", "nud", "permanent")
}

var (
	vxPodA = net.IPv4(192, 168, 2, 2).To4() // made up, behind A's VTEP
	vxPodB = net.IPv4(192, 168, 2, 1).To4() // vx0's address in B
)

// readInner reads from c until a datagram whose inner frame satisfies
// match arrives, skipping others (logged), and returns it.
func readInner(t *testing.T, c *VXLANConn, match func(gopacket.Packet) bool) (payload []byte, src netip.Addr, port uint16) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got, _ := readVXLAN(t, c, 1, 1, time.Until(deadline))
		inner, r := DecapVXLAN(got[0].payload, DefaultVNI)
		if r != DecapOK {
			t.Fatalf("DecapVXLAN: got %v, want ok (%x)", r, got[0].payload)
		}
		if pk := gopacket.NewPacket(inner, layers.LayerTypeEthernet, gopacket.Default); match(pk) {
			return got[0].payload, got[0].src, got[0].port
		} else {
			t.Logf("skipping unrelated frame: %v", pk)
		}
	}
	t.Fatalf("no matching datagram within 5s")
	return nil, netip.Addr{}, 0
}

// TestKernelVXLANInterop checks VXLANConn, DecapVXLAN and EncapVXLAN
// against Linux's own VXLAN on the wire, both ways: a datagram a kernel
// socket sends through vx0 arrives at our conn and decapsulates to an
// inner frame addressed to A's VTEP MAC carrying exactly that datagram;
// an echo request we encapsulate is accepted and answered by the kernel,
// and the reply comes back through the tunnel.
func TestKernelVXLANInterop(t *testing.T) {
	u := newVXLANUnderlay(t)
	kernelVXLAN(t, u)
	a := listenVXLAN(t, u.nsA, VXLANConfig{Local: u.addrA})

	t.Run("kernel to VXLANConn", func(t *testing.T) {
		payload := []byte("from a kernel socket through vx0")
		var sport int
		if err := netnsutil.Do(u.nsB, func() error {
			c, err := net.ListenPacket("udp4", "192.168.2.1:0")
			if err != nil {
				return err
			}
			defer c.Close()
			sport = c.LocalAddr().(*net.UDPAddr).Port
			_, err = c.WriteTo(payload, &net.UDPAddr{IP: vxPodA, Port: 7777})
			return err
		}); err != nil {
			t.Fatalf("send UDP from %s through vx0: %v", u.nameB, err)
		}
		p, src, port := readInner(t, a, func(pk gopacket.Packet) bool { return pk.Layer(layers.LayerTypeUDP) != nil })
		if src != u.addrB {
			t.Errorf("outer source: got %v, want %v", src, u.addrB)
		}
		// The kernel picks the outer source port by flow hash from the
		// local port range (udp_flow_src_port).
		if port < 32768 || port > 60999 {
			t.Errorf("outer source port %d outside [32768, 60999]", port)
		}
		if p[0] != 0x08 || p[1] != 0 || p[2] != 0 || p[3] != 0 || p[7] != 0 {
			t.Errorf("VXLAN header %x: want flags 0x08 and zero reserved bits", p[:8])
		}
		vx := VXLAN(p)
		if vx.VNI() != DefaultVNI {
			t.Errorf("VNI: got %d, want %d", vx.VNI(), DefaultVNI)
		}

		pk := gopacket.NewPacket(p, layers.LayerTypeVXLAN, gopacket.Default)
		gvx, _ := pk.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		eth, _ := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip4, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if gvx == nil || eth == nil || ip4 == nil || udp == nil {
			t.Fatalf("not VXLAN/Ethernet/IPv4/UDP: %v", pk)
		}
		if !gvx.ValidIDFlag || gvx.VNI != DefaultVNI || gvx.GBPExtension {
			t.Errorf("gopacket VXLAN: %+v, want I flag and VNI 4096 only", gvx)
		}
		if !bytes.Equal(eth.DstMAC, vtepA[:]) || !bytes.Equal(eth.SrcMAC, vtepB[:]) || eth.EthernetType != layers.EthernetTypeIPv4 {
			t.Errorf("inner Ethernet: %v -> %v type %v, want %v -> %v IPv4", eth.SrcMAC, eth.DstMAC, eth.EthernetType, vtepB, vtepA)
		}
		if ip4.Version != 4 || ip4.IHL != 5 || ip4.Protocol != layers.IPProtocolUDP || ip4.TTL != 64 ||
			!ip4.SrcIP.Equal(vxPodB) || !ip4.DstIP.Equal(vxPodA) || int(ip4.Length) != 20+8+len(payload) {
			t.Errorf("inner IPv4: %+v, want v4 IHL 5 UDP TTL 64 %v -> %v length %d", ip4, vxPodB, vxPodA, 20+8+len(payload))
		}
		inner := packet.IPv4(eth.Payload)
		if !inner.HeaderChecksumValid() {
			t.Errorf("inner IPv4 header checksum invalid")
		}
		if int(udp.SrcPort) != sport || udp.DstPort != 7777 || int(udp.Length) != 8+len(payload) || !bytes.Equal(udp.Payload, payload) {
			t.Errorf("inner UDP: %d -> %d length %d payload %q, want %d -> 7777 length %d payload %q",
				udp.SrcPort, udp.DstPort, udp.Length, udp.Payload, sport, 8+len(payload), payload)
		}
		// The inner UDP checksum is either complete or, where vx0 and the
		// veth left it to "hardware" (CHECKSUM_PARTIAL), exactly the
		// pseudo-header seed: no hardware on a veth ever completes it, and
		// a UDP socket hands the bytes over as they are. Real NICs finish
		// it; the switch has to cope with the seed on veth underlays.
		seed := packet.Fold(packet.PseudoHeaderSum(packet.ProtoUDP, inner.SrcBytes(), inner.DstBytes(), uint16(8+len(payload))))
		switch {
		case packet.TransportChecksumValid(inner[:inner.TotalLen()]):
		case udp.Checksum == seed:
			t.Logf("inner UDP checksum %#04x is the CHECKSUM_PARTIAL pseudo-header seed (offload on a veth)", udp.Checksum)
		default:
			t.Errorf("inner UDP checksum %#04x: neither valid nor the pseudo-header seed %#04x", udp.Checksum, seed)
		}
	})

	// The kernel's vxlan device and VXLANConn agree on ECN (RFC 6040
	// normal mode): the outer header carries the inner ECN field, CE as
	// ECT(0), and no DSCP; VXLANConn writes the same (TestVXLANConnECN).
	t.Run("kernel's outer ECN", func(t *testing.T) {
		for _, tos := range []uint8{0x28 | packet.ECNNotECT, packet.ECNECT0, packet.ECNECT1, 0x28 | packet.ECNCE} {
			payload := []byte(fmt.Sprintf("tos %#02x through vx0", tos))
			if err := netnsutil.Do(u.nsB, func() error {
				c, err := net.ListenPacket("udp4", "192.168.2.1:0")
				if err != nil {
					return err
				}
				defer c.Close()
				rc, _ := c.(*net.UDPConn).SyscallConn()
				var serr error
				rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(tos)) })
				if serr != nil {
					return serr
				}
				_, err = c.WriteTo(payload, &net.UDPAddr{IP: vxPodA, Port: 7777})
				return err
			}); err != nil {
				t.Fatalf("send UDP with TOS %#02x through vx0: %v", tos, err)
			}
			p, _, _ := readInner(t, a, func(pk gopacket.Packet) bool {
				udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
				return udp != nil && bytes.Equal(udp.Payload, payload)
			})
			inner := packet.IPv4(p[VXLANHeaderLen+packet.EthernetHeaderLen:])
			if got, want := a.OuterTOS()[0], packet.TunnelECN(tos); got != want || VXLANOuterECN(p) != want {
				t.Errorf("inner TOS %#02x: the kernel's outer TOS %#02x, want %#02x (VXLANOuterECN gives %#02x)", tos, got, want, VXLANOuterECN(p))
			}
			if inner.TOS() != tos {
				t.Errorf("inner TOS %#02x arrived as %#02x", tos, inner.TOS())
			}
		}
	})

	// And the other way: the kernel's vxlan device applies an outer ECN
	// field to the inner packet exactly as packet.DecapECN does, for all
	// sixteen pairs (RFC 6040 figure 4), the drop included.
	t.Run("kernel's decap of outer ECN", func(t *testing.T) {
		var ln *net.UDPConn
		if err := netnsutil.Do(u.nsB, func() (err error) {
			if ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: vxPodB, Port: 2000}); err != nil {
				return err
			}
			rc, _ := ln.SyscallConn()
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) })
			return err
		}); err != nil {
			t.Fatalf("listen in %s: %v", u.nameB, err)
		}
		defer ln.Close()
		for outer := range uint8(4) {
			for in := range uint8(4) {
				payload := []byte(fmt.Sprintf("outer %d inner %d", outer, in))
				inner := udpPacket(t, vxPodA, vxPodB, payload)
				setTOS(inner, 0x28|in)
				want := append([]byte(nil), inner...)
				kept := packet.DecapECN(outer, want)
				frame := append(make([]byte, packet.EthernetHeaderLen), inner...)
				e := packet.Ethernet(frame)
				e.SetDst(vtepB)
				e.SetSrc(vtepA)
				e.SetEtherType(packet.EtherTypeIPv4)
				if err := netnsutil.Do(u.nsA, func() error {
					c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.addrB, VXLANPort)))
					if err != nil {
						return err
					}
					defer c.Close()
					rc, _ := c.SyscallConn()
					rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(outer)) })
					if err != nil {
						return err
					}
					_, err = c.Write(vxlanDatagram(frame, DefaultVNI))
					return err
				}); err != nil {
					t.Fatal(err)
				}
				wait := 2 * time.Second
				if !kept {
					wait = 300 * time.Millisecond
				}
				ln.SetReadDeadline(time.Now().Add(wait))
				buf, oob := make([]byte, 256), make([]byte, 64)
				n, oobn, _, _, err := ln.ReadMsgUDP(buf, oob)
				switch {
				case !kept && err == nil:
					t.Errorf("outer %d inner %d: the kernel delivered %q, DecapECN drops it", outer, in, buf[:n])
				case !kept:
				case err != nil:
					t.Errorf("outer %d inner %d: nothing delivered (%v), DecapECN keeps it", outer, in, err)
				case string(buf[:n]) != string(payload):
					t.Errorf("outer %d inner %d: got %q, a datagram of another case", outer, in, buf[:n])
				default:
					if tos, ok := udpoffload.RecvTOS(oob[:oobn]); !ok || tos != packet.IPv4(want).TOS() {
						t.Errorf("outer %d inner %d: the kernel delivered TOS %#02x (%v), DecapECN gives %#02x", outer, in, tos, ok, packet.IPv4(want).TOS())
					}
				}
			}
		}
	})

	t.Run("VXLANConn to kernel and back", func(t *testing.T) {
		echo := []byte("ping through the kernel's vxlan")
		req := append(make([]byte, 14), echoRequest(t, vxPodA, vxPodB, 0x4242, 7, echo)...)
		e := packet.Ethernet(req)
		e.SetDst(vtepB) // vx0's MAC
		e.SetSrc(vtepA)
		e.SetEtherType(packet.EtherTypeIPv4)
		dst := netip.AddrPortFrom(u.addrB, VXLANPort)
		if n, err := a.WriteBatch([][]byte{vxlanDatagram(req, DefaultVNI)}, []netip.AddrPort{dst}); n != 1 || err != nil {
			t.Fatalf("WriteBatch echo request: got (%d, %v), want (1, nil)", n, err)
		}
		isReply := func(pk gopacket.Packet) bool {
			icmp, _ := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			return icmp != nil && icmp.TypeCode.Type() == layers.ICMPv4TypeEchoReply
		}
		p, src, _ := readInner(t, a, isReply)
		if src != u.addrB {
			t.Errorf("outer source: got %v, want %v", src, u.addrB)
		}
		inner, _ := DecapVXLAN(p, DefaultVNI)
		if inner.Dst() != vtepA || inner.Src() != vtepB {
			t.Errorf("inner Ethernet: %v -> %v, want %v -> %v", inner.Src(), inner.Dst(), vtepB, vtepA)
		}
		pk := gopacket.NewPacket(inner, layers.LayerTypeEthernet, gopacket.Default)
		ip4 := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if icmp.Id != 0x4242 || icmp.Seq != 7 || !bytes.Equal(icmp.Payload, echo) {
			t.Errorf("echo reply: id %#x seq %d payload %q, want 0x4242 7 %q", icmp.Id, icmp.Seq, icmp.Payload, echo)
		}
		if !ip4.SrcIP.Equal(vxPodB) || !ip4.DstIP.Equal(vxPodA) {
			t.Errorf("echo reply: %v -> %v, want %v -> %v", ip4.SrcIP, ip4.DstIP, vxPodB, vxPodA)
		}

		// Reserved bits: RFC 7348 says ignore them, DecapVXLAN does;
		// record what this kernel does (vxlan_rcv drops unknown flags
		// unless told otherwise), without failing either way.
		probe := vxlanDatagram(req, DefaultVNI)
		probe[1] = 0x01
		if _, err := a.WriteBatch([][]byte{probe}, []netip.AddrPort{dst}); err != nil {
			t.Fatalf("WriteBatch probe: %v", err)
		}
		a.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		bufs, sizes := readBufs(1, 2048), make([]int, 1)
		_, err := a.ReadBatch(bufs, sizes, 0)
		a.SetReadDeadline(time.Time{})
		t.Logf("kernel %s with a reserved VXLAN bit set: answered=%v", osRelease(), err == nil)
	})
}
