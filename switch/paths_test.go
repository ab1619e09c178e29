package vswitch

// Every packet path and every drop reason, on in-memory ports: no root.
//
//	pod a 10.0.0.1 (TAP with offloads)   pod b 10.0.0.2 (offloads)
//	pod c 10.0.0.3 (plain TAP)           pod d 10.5.0.1 (pool without NAT)
//	host port (node 172.16.0.1)
//	IP-in-IP  → 10.0.1.0/26 via node 172.16.0.2
//	VXLAN     → 10.0.2.0/26 via node 172.16.0.3 (VTEP 66:00:00:00:00:03)
//	NAT       → 0.0.0.0/0 for pool 10.0.0.0/16

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

var (
	nodeSelf  = netip.MustParseAddr("172.16.0.1")
	nodeIPIP  = netip.MustParseAddr("172.16.0.2")
	nodeVXLAN = netip.MustParseAddr("172.16.0.3")
	vtepPeer  = packet.MAC{0x66, 0, 0, 0, 0, 3}
	vtepSelf  = packet.MAC{0x66, 0, 0, 0, 0, 1}
	stranger  = netip.MustParseAddr("203.0.113.9")
)

type fakePod struct {
	dev  *fakePodDev
	ip   netip.Addr
	mac  packet.MAC
	port int
}

type fakeNet struct {
	s          *Switch
	a, b, c, d *fakePod
	host       *fakeHostDev
	ipip       *fakeIPIP
	vx         *fakeVXLAN
	nat        *fakeNAT
}

func newFakeNet(t testing.TB) *fakeNet { return newFakeNetHost(t, false) }

// newFakeNetHost is newFakeNet with, when offload is set, a host TUN
// that reads and writes virtio-net headers and takes UDP superframes, as
// podnet0 does on a kernel with USO.
func newFakeNetHost(t testing.TB, offload bool) *fakeNet {
	t.Helper()
	n := &fakeNet{
		s:    New(Config{}),
		host: &fakeHostDev{fakeQueue: newFakeQueue()},
		ipip: &fakeIPIP{fakeQueue: newFakeQueue()},
		vx:   newFakeVXLAN(),
		nat:  &fakeNAT{},
	}
	t.Cleanup(func() { n.s.Close() })
	n.a = n.addPod(t, "a", "10.0.0.1", true)
	n.b = n.addPod(t, "b", "10.0.0.2", true)
	n.c = n.addPod(t, "c", "10.0.0.3", false)
	n.d = n.addPod(t, "d", "10.5.0.1", true)
	var host HostDevice = n.host
	if offload {
		host = offloadHostDev{n.host}
	}
	if err := n.s.AttachHost(host); err != nil {
		t.Fatal(err)
	}
	if err := n.s.AttachUnderlay(UnderlayConfig{Conn: n.ipip, MTU: 1500, LocalAddr: nodeSelf}); err != nil {
		t.Fatal(err)
	}
	if err := n.s.AttachVXLAN(VXLANConfig{Conn: n.vx, MTU: 1500, LocalMAC: vtepSelf, LocalAddr: nodeSelf}); err != nil {
		t.Fatal(err)
	}
	n.s.SetNodes(NodeSet{nodeIPIP: true, nodeVXLAN: true})
	n.s.SetNAT(NATConfig{Handler: n.nat, Allowed: []netip.Prefix{pfx("10.0.0.0/16")},
		Pools: []netip.Prefix{pfx("10.0.0.0/16"), pfx("10.5.0.0/16")}})
	routes := []router.Route{
		{Prefix: pfx("172.16.0.1/32"), Kind: router.KindHost, Dev: HostTUNName, Source: router.SourceHost}, // the node itself
		{Prefix: pfx("10.0.1.0/26"), Kind: router.KindRemote, NextHop: nodeIPIP, Encap: router.EncapIPIP},
		{Prefix: pfx("10.0.2.0/26"), Kind: router.KindRemote, NextHop: nodeVXLAN, Encap: router.EncapVXLAN, NextHopMAC: vtepPeer},
		{Prefix: pfx("10.0.3.0/26"), Kind: router.KindRemote, NextHop: nodeIPIP, Encap: router.EncapNone},
		{Prefix: pfx("10.0.4.0/26"), Kind: router.KindBlackhole},
		// Another node's block in a pool without encapsulation: through
		// the node's kernel.
		{Prefix: pfx("10.0.6.0/26"), Kind: router.KindHost, NextHop: nodeIPIP, Dev: HostTUNName, Source: "bgp " + nodeIPIP.String()},
		{Prefix: pfx("10.0.5.5/32"), Kind: router.KindLocalPod, Port: 99},
		{Prefix: pfx("0.0.0.0/0"), Kind: router.KindNAT},
	}
	for _, p := range []*fakePod{n.a, n.b, n.c, n.d} {
		routes = append(routes, router.Route{Prefix: netip.PrefixFrom(p.ip, 32), Kind: router.KindLocalPod, Port: p.port, Dev: p.dev.name})
	}
	tab, err := router.NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	n.s.SetRoutes(tab)
	return n
}

func (n *fakeNet) addPod(t testing.TB, name, ip string, offload bool) *fakePod {
	t.Helper()
	p := &fakePod{dev: newFakePodDev(name, offload), ip: netip.MustParseAddr(ip), mac: packet.MAC{2, 0, 0, 0, 0, byte(len(name) + int(ip[len(ip)-1]))}}
	var err error
	if p.port, err = n.s.AddPodPort(PodPort{Name: name, IP: p.ip, MAC: p.mac, Dev: p.dev}); err != nil {
		t.Fatal(err)
	}
	return p
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func (n *fakeNet) stats(name string) PortStats { return portStats(n.s, name) }

// waitDrop waits until port has counted reason once more than before.
func (n *fakeNet) waitDrop(t testing.TB, port string, reason DropReason, before uint64) {
	t.Helper()
	n.waitStats(t, port, "drop "+reason.String()+" counted", func(s PortStats) bool { return s.Drops[reason.String()] > before })
}

// waitRx waits until port has counted n received frames: a reader counts
// a batch after it has forwarded and flushed all of it.
func (n *fakeNet) waitRx(t testing.TB, port string, frames uint64) {
	t.Helper()
	n.waitStats(t, port, fmt.Sprintf("%d frames received", frames), func(s PortStats) bool { return s.RxFrames >= frames })
}

// waitStats polls port's counters until cond holds (they have no change
// notification).
func (n *fakeNet) waitStats(t testing.TB, port, want string, cond func(PortStats) bool) {
	t.Helper()
	waitPortStats(t, n.s, port, want, cond)
}

// waitPortStats waits up to 5 s for s's counters of port to meet cond
// (want says what it waits for): a port counts a packet after the write
// that delivered it returns, so a receiver can be faster than the count.
func waitPortStats(t testing.TB, s *Switch, port, want string, cond func(PortStats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(portStats(s, port)) {
		if time.Now().After(deadline) {
			t.Fatalf("port %s: want %s; counters %+v", port, want, portStats(s, port))
		}
		time.Sleep(time.Millisecond)
	}
}

// ipSpec describes an IPv4 packet to build.
type ipSpec struct {
	src, dst string
	ttl      uint8
	tos      uint8
	df       bool
	proto    string // "udp" (default), "tcp", "icmp"
	payload  int
	seq      uint32
	flags    string // TCP: "A", "PA", "S"
}

// build returns the packet with correct checksums.
func (s ipSpec) build() []byte {
	ip := &layers.IPv4{Version: 4, TTL: s.ttl, TOS: s.tos, SrcIP: netip.MustParseAddr(s.src).AsSlice(), DstIP: netip.MustParseAddr(s.dst).AsSlice()}
	if ip.TTL == 0 {
		ip.TTL = 64
	}
	if s.df {
		ip.Flags = layers.IPv4DontFragment
	}
	payload := gopacket.Payload(make([]byte, s.payload))
	for i := range payload {
		payload[i] = byte(i)
	}
	var l4 gopacket.SerializableLayer
	switch s.proto {
	case "tcp":
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: s.seq, Ack: 7, Window: 500, ACK: true, PSH: s.flags == "PA", SYN: s.flags == "S"}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	case "icmp":
		ip.Protocol = layers.IPProtocolICMPv4
		l4 = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	default:
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: 40000, DstPort: 9}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = udp
	}
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, l4, payload); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// podFrame frames ip as pod p sends it: a zero virtio header when p's TAP
// has offloads, Ethernet to the gateway.
func podFrame(p *fakePod, ip []byte) []byte {
	var b []byte
	if p.dev.offload {
		b = make([]byte, vnetLen)
	}
	eth := make([]byte, ethLen)
	packet.Ethernet(eth).SetDst(packet.GatewayMAC)
	packet.Ethernet(eth).SetSrc(p.mac)
	packet.Ethernet(eth).SetEtherType(packet.EtherTypeIPv4)
	return append(append(b, eth...), ip...)
}

// superframe is a TSO superframe from pod p as its kernel writes it: one
// TCP packet of payload bytes with gso_size mss and a partial checksum.
func superframe(p *fakePod, dst string, payload, mss int) []byte {
	ip := ipSpec{src: p.ip.String(), dst: dst, proto: "tcp", payload: payload, df: true}.build()
	tcp := ip[20:]
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(len(tcp))))
	binary.BigEndian.PutUint16(tcp[16:], partial)
	f := podFrame(p, ip)
	packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: ethLen + 40,
		GSOSize: uint16(mss), CsumStart: ethLen + 20, CsumOffset: 16}.Encode(f)
	return f
}

// decoded parses an IPv4 packet and checks its checksums: every packet the
// switch hands to a kernel that wants complete ones must pass.
func decoded(t testing.TB, b []byte) (*layers.IPv4, gopacket.Packet) {
	t.Helper()
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	ip, ok := pkt.NetworkLayer().(*layers.IPv4)
	if !ok {
		t.Fatalf("not IPv4: %v", pkt)
	}
	if packet.Checksum(b[:ip.IHL*4], 0) != 0 {
		t.Errorf("bad IPv4 header checksum")
	}
	if ip.Protocol == layers.IPProtocolTCP || ip.Protocol == layers.IPProtocolUDP {
		if !packet.TransportChecksumValid(packet.IPv4(b)) {
			t.Errorf("bad %s checksum", ip.Protocol)
		}
	}
	return ip, pkt
}

// podRx splits a frame written to pod p into its virtio header and the IPv4
// packet, checking the Ethernet header.
func podRx(t testing.TB, p *fakePod, frame []byte) (packet.VirtioNetHdr, []byte) {
	t.Helper()
	var h packet.VirtioNetHdr
	if p.dev.offload {
		if err := h.Decode(frame); err != nil {
			t.Fatal(err)
		}
		frame = frame[vnetLen:]
	}
	eth := packet.Ethernet(frame)
	if eth.Dst() != p.mac || eth.Src() != packet.GatewayMAC || eth.EtherType() != packet.EtherTypeIPv4 {
		t.Errorf("frame to %s: Ethernet %s → %s type %#x, want gateway → %s IPv4", p.dev.name, eth.Src(), eth.Dst(), eth.EtherType(), p.mac)
	}
	return h, frame[ethLen:]
}

// vxlanDatagram wraps inner for VXLAN: header with vni, inner Ethernet
// from the peer's VTEP to ours.
func vxlanDatagram(inner []byte, vni uint32) []byte {
	b := make([]byte, encap.VXLANHeaderLen+ethLen+len(inner))
	eth := packet.Ethernet(b[encap.VXLANHeaderLen:])
	eth.SetDst(vtepSelf)
	eth.SetSrc(vtepPeer)
	eth.SetEtherType(packet.EtherTypeIPv4)
	copy(b[encap.VXLANHeaderLen+ethLen:], inner)
	encap.EncapVXLAN(b, encap.VXLANHeaderLen, vni)
	return b
}

// ipipPacket wraps inner in an outer IPv4 header from src to this node.
func ipipPacket(src netip.Addr, inner []byte) []byte { return ipipPacketTOS(src, 0, inner) }

// ipipPacketTOS is ipipPacket with an outer TOS byte of tos.
func ipipPacketTOS(src netip.Addr, tos uint8, inner []byte) []byte {
	outer := &layers.IPv4{Version: 4, TTL: 64, TOS: tos, Protocol: layers.IPProtocolIPv4, SrcIP: src.AsSlice(), DstIP: nodeSelf.AsSlice()}
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, outer, gopacket.Payload(inner)); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func TestPodToPod(t *testing.T) {
	n := newFakeNet(t)
	udp := ipSpec{src: "10.0.0.1", dst: "10.0.0.2", payload: 100}.build()
	n.a.dev.offer(podFrame(n.a, udp))
	frames, _ := n.b.dev.wait(t, 1)
	h, ip := podRx(t, n.b, frames[0])
	got, _ := decoded(t, ip)
	if got.TTL != 63 || got.SrcIP.String() != "10.0.0.1" || got.DstIP.String() != "10.0.0.2" {
		t.Errorf("pod b got %v → %v TTL %d, want 10.0.0.1 → 10.0.0.2 TTL 63", got.SrcIP, got.DstIP, got.TTL)
	}
	if h != (packet.VirtioNetHdr{}) {
		t.Errorf("complete packet got virtio header %+v, want zero", h)
	}
	if s := n.stats("b"); s.TxFrames != 1 {
		t.Errorf("b TxFrames = %d, want 1", s.TxFrames)
	}
}

// A superframe crosses between offload TAPs whole, its partial checksum
// left for the receiving kernel.
func TestPodToPodSuperframe(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(superframe(n.a, "10.0.0.2", 4000, 1000))
	frames, _ := n.b.dev.wait(t, 1)
	h, ip := podRx(t, n.b, frames[0])
	if h.GSOType != packet.GSOTCPv4 || h.GSOSize != 1000 || h.CsumStart != ethLen+20 || h.CsumOffset != 16 || h.Flags != packet.VirtioNetHdrFNeedsCsum {
		t.Errorf("virtio header %+v, want the sender's (GSO TCPv4, size 1000, csum at 34+16)", h)
	}
	if len(ip) != 20+20+4000 {
		t.Errorf("superframe of %d bytes, want %d", len(ip), 4040)
	}
}

// Toward a plain TAP a superframe is segmented, each segment complete.
func TestPodToPlainPodSegments(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(superframe(n.a, "10.0.0.3", 4000, 1000))
	frames, _ := n.c.dev.wait(t, 4)
	var seq uint32
	for i, f := range frames {
		_, ip := podRx(t, n.c, f)
		_, pkt := decoded(t, ip)
		tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if len(tcp.Payload) != 1000 {
			t.Errorf("segment %d: %d payload bytes, want 1000", i, len(tcp.Payload))
		}
		if i > 0 && tcp.Seq != seq+1000 {
			t.Errorf("segment %d: seq %d, want %d", i, tcp.Seq, seq+1000)
		}
		seq = tcp.Seq
	}
}

// A plain pod's frames reach an offload pod with a zero virtio header.
func TestPlainPodToPod(t *testing.T) {
	n := newFakeNet(t)
	n.c.dev.offer(podFrame(n.c, ipSpec{src: "10.0.0.3", dst: "10.0.0.1", payload: 10}.build()))
	frames, _ := n.a.dev.wait(t, 1)
	h, ip := podRx(t, n.a, frames[0])
	decoded(t, ip)
	if h != (packet.VirtioNetHdr{}) {
		t.Errorf("virtio header %+v, want zero", h)
	}
}

func TestPodToHost(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(superframe(n.a, "172.16.0.1", 3000, 1000))
	pkts, _ := n.host.wait(t, 3)
	for _, p := range pkts {
		ip, _ := decoded(t, p)
		if ip.DstIP.String() != "172.16.0.1" || ip.TTL != 63 {
			t.Errorf("host got %v TTL %d", ip.DstIP, ip.TTL)
		}
	}
}

// A frame the host TUN refuses is counted as an egress error and the
// others of its batch as sent, bytes and all.
func TestHostEgressPartlyRefused(t *testing.T) {
	n := newFakeNet(t)
	var frames [][]byte
	for _, size := range []int{10, 20, 30} {
		frames = append(frames, podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "172.16.0.1", proto: "icmp", payload: size}.build()))
	}
	refused := len(frames[1]) - ethLen - vnetLen // pod a reads virtio headers
	n.host.mu.Lock()
	n.host.refuseLen = refused
	n.host.mu.Unlock()
	n.a.dev.offer(frames...)
	n.waitDrop(t, "host", DropEgressError, 0)
	pkts, _ := n.host.wait(t, 2)
	st := n.stats("host")
	if st.TxFrames != 2 || st.TxBytes != uint64(len(pkts[0])+len(pkts[1])) || st.Drops[DropEgressError.String()] != 1 {
		t.Fatalf("host port: tx %d frames %d bytes, drops %v; want 2 frames of %d bytes and one egress error",
			st.TxFrames, st.TxBytes, st.Drops, len(pkts[0])+len(pkts[1]))
	}
}

func TestPodToIPIP(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(superframe(n.a, "10.0.1.5", 3000, 1000))
	pkts, dsts := n.ipip.wait(t, 3)
	for i, p := range pkts {
		ip, _ := decoded(t, p)
		if ip.DstIP.String() != "10.0.1.5" || dsts[i] != nodeIPIP {
			t.Errorf("ipip sent %v to node %v, want 10.0.1.5 to %v", ip.DstIP, dsts[i], nodeIPIP)
		}
	}
}

// A superframe of more segments than the scratch holds (a pod with a
// small MTU sends 64 KiB at MSS 900: 73 segments) is cut in rounds, every
// byte in order.
func TestPodToIPIPSmallMSS(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(superframe(n.a, "10.0.1.5", 65000, 900))
	pkts, _ := n.ipip.wait(t, 73)
	var seq uint32
	for i, p := range pkts {
		_, pk := decoded(t, p)
		tcp := pk.TransportLayer().(*layers.TCP)
		if i > 0 && tcp.Seq != seq {
			t.Fatalf("segment %d: seq %d, want %d", i, tcp.Seq, seq)
		}
		seq = tcp.Seq + uint32(len(tcp.Payload))
		if want := min(900, 65000-900*i); len(tcp.Payload) != want {
			t.Fatalf("segment %d: %d bytes, want %d", i, len(tcp.Payload), want)
		}
	}
	if d := n.stats("a").Drops; len(d) != 0 {
		t.Errorf("pod a dropped %v", d)
	}
}

func TestPodToVXLAN(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "10.0.2.9", payload: 200}.build()))
	pkts, dsts := n.vx.wait(t, 1)
	if want := netip.AddrPortFrom(nodeVXLAN, encap.VXLANPort); dsts[0] != want {
		t.Errorf("VXLAN datagram to %v, want %v", dsts[0], want)
	}
	v := encap.VXLAN(pkts[0])
	if !v.HasVNI() || v.VNI() != encap.DefaultVNI {
		t.Errorf("VXLAN header %x, want I flag and VNI %d", pkts[0][:8], encap.DefaultVNI)
	}
	eth := packet.Ethernet(v.Payload())
	if eth.Dst() != vtepPeer || eth.Src() != vtepSelf {
		t.Errorf("inner Ethernet %s → %s, want %s → %s", eth.Src(), eth.Dst(), vtepSelf, vtepPeer)
	}
	ip, _ := decoded(t, eth.Payload())
	if ip.DstIP.String() != "10.0.2.9" || ip.TTL != 63 {
		t.Errorf("inner %v TTL %d", ip.DstIP, ip.TTL)
	}
}

// NAT takes a pod's superframe whole, its partial checksum as the pod's
// kernel left it (the netstack trusts it): one packet, not MSS segments.
func TestPodToNAT(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(superframe(n.a, "198.51.100.7", 2000, 1000))
	pkts, _ := n.nat.wait(t, 1)
	ip := packet.IPv4(pkts[0])
	tcp := packet.TCP(ip.Payload())
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(ip)-20)))
	if len(ip) != 2040 || ip.TTL() != 63 || packet.Checksum(ip[:20], 0) != 0 || tcp.Checksum() != partial {
		t.Errorf("NAT got %d bytes, TTL %d, TCP checksum %#x; want the 2040-byte superframe, TTL 63, a valid IP header and the partial checksum %#x",
			len(ip), ip.TTL(), tcp.Checksum(), partial)
	}
	if got := n.stats("a").NATPackets; got != 1 {
		t.Errorf("NATPackets = %d, want 1", got)
	}
}

// A burst of one flow's datagrams from a pod reaches NAT as one UDP
// superframe with its segment size, for one UDP_SEGMENT send.
func TestPodUDPToNATCoalesced(t *testing.T) {
	n := newFakeNet(t)
	n.a.dev.offer(udpBurst(n.a, "198.51.100.7", 5, 64)...)
	pkts, aux := n.nat.wait(t, 1)
	if ip := packet.IPv4(pkts[0]); len(ip) != 28+5*64 || aux[0] != 64 {
		t.Fatalf("NAT got %d bytes with gsoSize %v, want one %d-byte superframe with gsoSize 64", len(ip), aux[0], 28+5*64)
	}
	time.Sleep(20 * time.Millisecond)
	if got := n.nat.count(); got != 1 {
		t.Errorf("NAT got %d packets, want 1", got)
	}
}

func TestHostToPod(t *testing.T) {
	n := newFakeNet(t)
	n.host.offer(ipSpec{src: "172.16.0.1", dst: "10.0.0.3", payload: 50}.build())
	frames, _ := n.c.dev.wait(t, 1)
	_, ip := podRx(t, n.c, frames[0])
	decoded(t, ip)
}

// Segments from the host arrive one by one; toward an offload pod they
// leave merged (GRO) as one superframe.
func TestHostToPodCoalesced(t *testing.T) {
	n := newFakeNet(t)
	var segs [][]byte
	for i := range 4 {
		segs = append(segs, ipSpec{src: "172.16.0.1", dst: "10.0.0.1", proto: "tcp", payload: 1000, seq: uint32(1000 * i), df: true}.build())
	}
	n.host.offer(segs...) // one read takes them all
	frames, _ := n.a.dev.wait(t, 1)
	time.Sleep(20 * time.Millisecond)
	if got := n.a.dev.count(); got != 1 {
		t.Fatalf("4 in-order segments written as %d frames, want 1 superframe", got)
	}
	h, ip := podRx(t, n.a, frames[0])
	if h.GSOType != packet.GSOTCPv4 || h.GSOSize != 1000 || len(ip) != 40+4000 {
		t.Errorf("frame of %d bytes with virtio header %+v, want a 4040-byte GSO superframe of 1000-byte segments", len(ip), h)
	}
}

func TestHostToTunnels(t *testing.T) {
	n := newFakeNet(t)
	n.host.offer(ipSpec{src: "172.16.0.1", dst: "10.0.1.7", payload: 10}.build())
	n.host.offer(ipSpec{src: "172.16.0.1", dst: "10.0.2.7", payload: 10}.build())
	n.ipip.wait(t, 1)
	n.vx.wait(t, 1)
}

func TestIPIPToPodAndHost(t *testing.T) {
	n := newFakeNet(t)
	n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.0.2", payload: 30}.build()))
	frames, _ := n.b.dev.wait(t, 1)
	_, ip := podRx(t, n.b, frames[0])
	decoded(t, ip)
	n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "172.16.0.1", payload: 30}.build()))
	n.host.wait(t, 1)
}

// groSuperpacket is what a raw socket receives when the underlay's GRO
// merged an inner TCP flow: one packet of payload bytes starting at seq,
// lengths for the whole, and only the pseudo-header sum in the TCP
// checksum.
func groSuperpacket(dst string, seq uint32, payload int) []byte {
	ip := ipSpec{src: "10.0.1.5", dst: dst, proto: "tcp", payload: payload, df: true, seq: seq}.build()
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(len(ip)-20)))
	binary.BigEndian.PutUint16(ip[20+16:], partial)
	return ip
}

// A superpacket that GRO merged on the underlay (IP-in-IP) travels on as
// a superframe to a pod with offloads, segments of the tunnel's inner MTU
// (1480 − 40 bytes of headers) otherwise; segments the switch itself
// holds for coalescing leave before it, in order.
func TestIPIPSuperpacketToPods(t *testing.T) {
	n := newFakeNet(t)
	before := n.stats("ipip").GSOFrames
	n.ipip.offer(
		ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.0.2", proto: "tcp", payload: 1000, df: true, seq: 0}.build()),
		ipipPacket(nodeIPIP, groSuperpacket("10.0.0.2", 1000, 4000)))
	frames, _ := n.b.dev.wait(t, 2)
	var seqs []uint32
	for _, f := range frames {
		_, ip := podRx(t, n.b, f)
		seqs = append(seqs, packet.TCP(ip[20:]).Seq())
	}
	if seqs[0] != 0 || seqs[1] != 1000 {
		t.Errorf("pod b got sequence numbers %v, want [0 1000]: the held segment first", seqs)
	}
	h, ip := podRx(t, n.b, frames[1])
	if h.GSOType != packet.GSOTCPv4 || h.GSOSize != 1440 || h.Flags != packet.VirtioNetHdrFNeedsCsum ||
		h.CsumStart != ethLen+20 || h.CsumOffset != 16 || len(ip) != 4040 {
		t.Errorf("superpacket to pod b: header %+v, %d bytes; want GSO TCPv4 size 1440 with a partial checksum, 4040 bytes", h, len(ip))
	}
	if got := n.stats("ipip").GSOFrames - before; got != 1 {
		t.Errorf("ipip port counted %d superframes received, want 1", got)
	}

	n.ipip.offer(ipipPacket(nodeIPIP, groSuperpacket("10.0.0.3", 0, 4000)))
	frames, _ = n.c.dev.wait(t, 3)
	next := uint32(0)
	for i, f := range frames {
		_, ip := podRx(t, n.c, f)
		_, pkt := decoded(t, ip)
		tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		want := min(1440, 4000-int(next))
		if tcp.Seq != next || len(tcp.Payload) != want {
			t.Errorf("segment %d to plain pod c: seq %d with %d bytes, want seq %d with %d", i, tcp.Seq, len(tcp.Payload), next, want)
		}
		next += uint32(len(tcp.Payload))
	}
}

// A large TCP packet with a complete checksum was reassembled from outer
// fragments, not merged: it is delivered as it is, with no offload
// metadata that would have the pod's kernel overwrite its checksum.
func TestIPIPReassembledNotSuperframe(t *testing.T) {
	n := newFakeNet(t)
	n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.0.2", proto: "tcp", payload: 3000}.build()))
	frames, _ := n.b.dev.wait(t, 1)
	h, ip := podRx(t, n.b, frames[0])
	if h != (packet.VirtioNetHdr{}) || len(ip) != 3040 {
		t.Errorf("reassembled packet to pod b: header %+v, %d bytes; want no offload metadata, 3040 bytes", h, len(ip))
	}
	decoded(t, ip)
}

func TestVXLANToPodAndHost(t *testing.T) {
	n := newFakeNet(t)
	n.vx.offer(nodeVXLAN, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.3", payload: 30}.build(), encap.DefaultVNI))
	frames, _ := n.c.dev.wait(t, 1)
	_, ip := podRx(t, n.c, frames[0])
	decoded(t, ip)
	n.vx.offer(nodeVXLAN, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "172.16.0.1", payload: 30}.build(), encap.DefaultVNI))
	n.host.wait(t, 1)
}

// A Linux VXLAN peer on a veth underlay sends inner packets whose
// checksum holds only the pseudo-header sum: completed, then delivered.
func TestVXLANPartialChecksumRepaired(t *testing.T) {
	n := newFakeNet(t)
	inner := ipSpec{src: "10.0.2.5", dst: "10.0.0.3", proto: "tcp", payload: 100}.build()
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, [4]byte(inner[12:16]), [4]byte(inner[16:20]), uint16(len(inner)-20)))
	binary.BigEndian.PutUint16(inner[20+16:], partial)
	n.vx.offer(nodeVXLAN, vxlanDatagram(inner, encap.DefaultVNI))
	frames, _ := n.c.dev.wait(t, 1)
	_, ip := podRx(t, n.c, frames[0])
	decoded(t, ip)
}

// Proxy ARP: any question gets the gateway MAC, except the pod's own
// address (duplicate address detection).
func TestProxyARP(t *testing.T) {
	n := newFakeNet(t)
	arp := func(target string) []byte {
		b := gopacket.NewSerializeBuffer()
		eth := &layers.Ethernet{SrcMAC: n.c.mac[:], DstMAC: packet.BroadcastMAC[:], EthernetType: layers.EthernetTypeARP}
		a := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: n.c.mac[:], SourceProtAddress: n.c.ip.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: netip.MustParseAddr(target).AsSlice()}
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{}, eth, a); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	n.c.dev.offer(arp("10.0.0.3")) // DAD: no answer
	n.c.dev.offer(arp("169.254.1.1"))
	frames, _ := n.c.dev.wait(t, 1)
	pkt := gopacket.NewPacket(frames[0], layers.LayerTypeEthernet, gopacket.Default)
	a, ok := pkt.Layer(layers.LayerTypeARP).(*layers.ARP)
	if !ok || a.Operation != layers.ARPReply || packet.MAC(a.SourceHwAddress) != packet.GatewayMAC ||
		netip.AddrFrom4([4]byte(a.SourceProtAddress)).String() != "169.254.1.1" {
		t.Fatalf("ARP answer %v, want a reply: 169.254.1.1 is-at the gateway MAC", pkt)
	}
	time.Sleep(20 * time.Millisecond)
	if got := n.c.dev.count(); got != 1 {
		t.Errorf("%d ARP answers, want 1 (none to the DAD probe)", got)
	}
}

// A packet from another node whose TTL runs out here is answered with
// ICMP time-exceeded back through the tunnel, from this node's address, so
// traceroute across the overlay names this node.
func TestTunnelTTLExceededAnswered(t *testing.T) {
	n := newFakeNet(t)
	n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.0.2", ttl: 1, proto: "udp", payload: 8}.build()))
	n.waitDrop(t, "ipip", DropTTLExceeded, 0)
	pkts, dsts := n.ipip.wait(t, 1)
	ip, pkt := decoded(t, pkts[0])
	icmp, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || icmp.TypeCode.Type() != layers.ICMPv4TypeTimeExceeded || dsts[0] != nodeIPIP ||
		ip.SrcIP.String() != nodeSelf.String() || ip.DstIP.String() != "10.0.1.5" {
		t.Fatalf("answer %v to node %v, want ICMP time exceeded %v → 10.0.1.5 via %v", pkt, dsts[0], nodeSelf, nodeIPIP)
	}
}

// dropCase sends something that must be dropped on port for reason.
type dropCase struct {
	name   string
	port   string
	reason DropReason
	send   func(n *fakeNet)
	// icmp, when set, is the ICMP type the sender must get back.
	icmp *layers.ICMPv4TypeCode
}

func icmpTC(typ, code uint8) *layers.ICMPv4TypeCode {
	tc := layers.CreateICMPv4TypeCode(typ, code)
	return &tc
}

func dropCases() []dropCase {
	udpA := func(dst string) []byte { return ipSpec{src: "10.0.0.1", dst: dst, payload: 20}.build() }
	ethOnly := func(n *fakeNet, ethType uint16, payload []byte) []byte {
		f := podFrame(n.a, payload)
		packet.Ethernet(f[vnetLen:]).SetEtherType(ethType)
		return f
	}
	return []dropCase{
		{name: "runt frame", port: "c", reason: DropTooShort, send: func(n *fakeNet) { n.c.dev.offer([]byte{1, 2, 3}) }},
		{name: "no virtio header", port: "a", reason: DropBadVirtioHeader, send: func(n *fakeNet) { n.a.dev.offer([]byte{1, 2, 3}) }},
		{name: "partial checksum inside the IP header", port: "a", reason: DropBadVirtioHeader, send: func(n *fakeNet) {
			f := podFrame(n.a, udpA("10.0.0.2"))
			packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, CsumStart: ethLen + 2}.Encode(f)
			n.a.dev.offer(f)
		}},
		{name: "UDP superframe", port: "a", reason: DropBadGSO, send: func(n *fakeNet) {
			f := podFrame(n.a, udpA("10.0.0.2"))
			packet.VirtioNetHdr{GSOType: packet.GSOTCPv4, GSOSize: 100}.Encode(f)
			n.a.dev.offer(f)
		}},
		{name: "ethertype", port: "a", reason: DropUnknownEtherType, send: func(n *fakeNet) { n.a.dev.offer(ethOnly(n, 0x88cc, make([]byte, 40))) }},
		{name: "ipv6", port: "a", reason: DropIPv6, send: func(n *fakeNet) { n.a.dev.offer(ethOnly(n, packet.EtherTypeIPv6, make([]byte, 40))) }},
		{name: "version", port: "a", reason: DropBadIPVersion, send: func(n *fakeNet) {
			b := udpA("10.0.0.2")
			b[0] = 0x55
			n.a.dev.offer(podFrame(n.a, b))
		}},
		{name: "ihl", port: "a", reason: DropBadIHL, send: func(n *fakeNet) {
			b := udpA("10.0.0.2")
			b[0] = 0x43
			n.a.dev.offer(podFrame(n.a, b))
		}},
		{name: "total length", port: "a", reason: DropBadTotalLength, send: func(n *fakeNet) {
			b := udpA("10.0.0.2")
			binary.BigEndian.PutUint16(b[2:], 9000)
			n.a.dev.offer(podFrame(n.a, b))
		}},
		{name: "arp", port: "a", reason: DropBadARP, send: func(n *fakeNet) { n.a.dev.offer(ethOnly(n, packet.EtherTypeARP, make([]byte, 28))) }},
		{name: "spoofed", port: "a", reason: DropSpoofedSource, send: func(n *fakeNet) {
			n.a.dev.offer(podFrame(n.a, ipSpec{src: "10.0.0.9", dst: "10.0.0.2"}.build()))
		}},
		{name: "ttl from pod", port: "a", reason: DropTTLExceeded, icmp: icmpTC(11, 0), send: func(n *fakeNet) {
			n.a.dev.offer(podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "10.0.0.2", ttl: 1}.build()))
		}},
		{name: "blackhole", port: "a", reason: DropBlackhole, send: func(n *fakeNet) { n.a.dev.offer(podFrame(n.a, udpA("10.0.4.1"))) }},
		{name: "no encapsulation", port: "a", reason: DropRemoteUnsupported, send: func(n *fakeNet) { n.a.dev.offer(podFrame(n.a, udpA("10.0.3.1"))) }},
		{name: "port gone", port: "a", reason: DropPortGone, send: func(n *fakeNet) { n.a.dev.offer(podFrame(n.a, udpA("10.0.5.5"))) }},
		{name: "egress refuses", port: "a", reason: DropEgressError, send: func(n *fakeNet) {
			n.b.dev.setFail(true)
			n.a.dev.offer(podFrame(n.a, udpA("10.0.0.2")))
		}},
		{name: "too big for the tunnel", port: "a", reason: DropFragNeeded, icmp: icmpTC(3, 4), send: func(n *fakeNet) {
			n.a.dev.offer(podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "10.0.1.1", df: true, payload: 1480}.build()))
		}},
		{name: "superframe too big for the tunnel", port: "a", reason: DropFragNeeded, icmp: icmpTC(3, 4), send: func(n *fakeNet) {
			// Segments of 20+20+1460 bytes; IP-in-IP carries 1480.
			n.a.dev.offer(superframe(n.a, "10.0.1.1", 3000, 1460))
		}},
		{name: "stranger over ipip", port: "ipip", reason: DropUnknownSource, send: func(n *fakeNet) {
			n.ipip.offer(ipipPacket(stranger, ipSpec{src: "10.0.1.5", dst: "10.0.0.2"}.build()))
		}},
		{name: "stranger over vxlan", port: "vxlan", reason: DropUnknownSource, send: func(n *fakeNet) {
			n.vx.offer(stranger, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.2"}.build(), encap.DefaultVNI))
		}},
		{name: "not ipip", port: "ipip", reason: DropBadOuter, send: func(n *fakeNet) {
			n.ipip.offer(ipSpec{src: nodeIPIP.String(), dst: "172.16.0.1"}.build())
		}},
		{name: "bad inner", port: "ipip", reason: DropBadInner, send: func(n *fakeNet) {
			n.ipip.offer(ipipPacket(nodeIPIP, []byte{0x45, 0, 0, 99, 0, 0}))
		}},
		{name: "transit", port: "ipip", reason: DropNoTransit, send: func(n *fakeNet) {
			n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.2.5"}.build()))
		}},
		{name: "no route to the pool", port: "a", reason: DropNoRoute, icmp: icmpTC(3, 0), send: func(n *fakeNet) {
			n.a.dev.offer(podFrame(n.a, udpA("10.0.7.7")))
		}},
		{name: "nat not allowed", port: "d", reason: DropNATNotAllowed, icmp: icmpTC(3, 13), send: func(n *fakeNet) {
			n.d.dev.offer(podFrame(n.d, ipSpec{src: "10.5.0.1", dst: "198.51.100.1"}.build()))
		}},
		{name: "nat unavailable", port: "a", reason: DropNATUnavailable, icmp: icmpTC(3, 0), send: func(n *fakeNet) {
			n.s.SetNAT(NATConfig{})
			n.a.dev.offer(podFrame(n.a, udpA("198.51.100.1")))
		}},
		{name: "inner checksum", port: "vxlan", reason: DropBadInnerChecksum, send: func(n *fakeNet) {
			inner := ipSpec{src: "10.0.2.5", dst: "10.0.0.2", proto: "tcp", payload: 10}.build()
			inner[len(inner)-1] ^= 0xff
			n.vx.offer(nodeVXLAN, vxlanDatagram(inner, encap.DefaultVNI))
		}},
		// What a node sends through the tunnel may reach this node, not
		// what this node's kernel would route on.
		{name: "transit through the host over vxlan", port: "vxlan", reason: DropNoTransit, send: func(n *fakeNet) {
			n.vx.offer(nodeVXLAN, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.6.7"}.build(), encap.DefaultVNI))
		}},
		{name: "transit through the host over ipip", port: "ipip", reason: DropNoTransit, send: func(n *fakeNet) {
			n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.6.7"}.build()))
		}},
		// A stranger's datagram is refused for its sender before its
		// bytes are checked.
		{name: "inner checksum from a stranger", port: "vxlan", reason: DropUnknownSource, send: func(n *fakeNet) {
			inner := ipSpec{src: "10.0.2.5", dst: "10.0.0.2", proto: "tcp", payload: 10}.build()
			inner[len(inner)-1] ^= 0xff
			n.vx.offer(netip.MustParseAddr("192.0.2.99"), vxlanDatagram(inner, encap.DefaultVNI))
		}},
		{name: "other vni", port: "vxlan", reason: DropWrongVNI, send: func(n *fakeNet) {
			n.vx.offer(nodeVXLAN, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.2"}.build(), 77))
		}},
		{name: "another node's pod over ipip", port: "ipip", reason: DropForeignInnerSource, send: func(n *fakeNet) {
			n.ipip.offer(ipipPacket(nodeIPIP, ipSpec{src: "10.0.2.5", dst: "10.0.0.2"}.build()))
		}},
		{name: "outside source over vxlan", port: "vxlan", reason: DropForeignInnerSource, send: func(n *fakeNet) {
			n.vx.offer(nodeVXLAN, vxlanDatagram(ipSpec{src: "203.0.113.9", dst: "10.0.0.2"}.build(), encap.DefaultVNI))
		}},
		// The underlay marked congestion on a packet whose transport
		// cannot take the mark (RFC 6040: drop it).
		{name: "ce over not-ect over vxlan", port: "vxlan", reason: DropECNNotECT, send: func(n *fakeNet) {
			n.vx.offerTOS(nodeVXLAN, packet.ECNCE, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.2"}.build(), encap.DefaultVNI))
		}},
		{name: "ce over not-ect over ipip", port: "ipip", reason: DropECNNotECT, send: func(n *fakeNet) {
			n.ipip.offer(ipipPacketTOS(nodeIPIP, 0xb8|packet.ECNCE, ipSpec{src: "10.0.1.5", dst: "10.0.0.2"}.build()))
		}},
		{name: "ce over not-ect from a stranger", port: "vxlan", reason: DropUnknownSource, send: func(n *fakeNet) {
			n.vx.offerTOS(netip.MustParseAddr("192.0.2.99"), packet.ECNCE, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.2"}.build(), encap.DefaultVNI))
		}},
		{name: "host loop", port: "host", reason: DropNoRoute, send: func(n *fakeNet) {
			n.host.offer(ipSpec{src: "172.16.0.1", dst: "172.16.0.1"}.build())
		}},
		{name: "ttl from host", port: "host", reason: DropTTLExceeded, send: func(n *fakeNet) {
			n.host.offer(ipSpec{src: "172.16.0.1", dst: "10.0.0.1", ttl: 1}.build())
		}},
	}
}

// TestDrops sends each kind of bad or refused packet and checks it is
// counted under its reason on the port it came in on, nothing is
// delivered, and the pod gets the ICMP error the case asks for.
func TestDrops(t *testing.T) {
	for _, tc := range dropCases() {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNet(t)
			tc.send(n)
			n.waitDrop(t, tc.port, tc.reason, 0)
			if tc.icmp != nil {
				src := n.a
				if tc.port == "d" {
					src = n.d
				}
				frames, _ := src.dev.wait(t, 1)
				_, ip := podRx(t, src, frames[0])
				_, pkt := decoded(t, ip)
				icmp, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if !ok || icmp.TypeCode != *tc.icmp {
					t.Fatalf("sender got %v, want ICMP %v", pkt, *tc.icmp)
				}
				if ip4 := pkt.NetworkLayer().(*layers.IPv4); ip4.SrcIP.String() != GatewayIP.String() {
					t.Errorf("ICMP error from %v, want the gateway %v", ip4.SrcIP, GatewayIP)
				}
			}
			time.Sleep(10 * time.Millisecond)
			delivered := n.b.dev.count() + n.c.dev.count() + n.nat.count()
			if tc.port != "host" {
				delivered += n.host.count()
			}
			if tc.icmp == nil {
				delivered += n.a.dev.count() + n.d.dev.count()
			}
			if delivered != 0 {
				t.Errorf("%d packets delivered, want none", delivered)
			}
		})
	}
}

// TestInnerSourceCheckedPerPacket sends one tunnel batch from a known
// node in which a packet from a pod behind it is followed by one claiming
// another node's pod and one from the first pod again, then a batch with
// the first pod's packet from its node and from another known node: the
// reverse-path check remembers a source it accepted, and must not let
// the others through on the strength of it.
func TestInnerSourceCheckedPerPacket(t *testing.T) {
	n := newFakeNet(t)
	ok := ipSpec{src: "10.0.1.5", dst: "10.0.0.2"}.build()
	spoofed := ipSpec{src: "10.0.2.5", dst: "10.0.0.2"}.build()
	n.ipip.offer(ipipPacket(nodeIPIP, ok), ipipPacket(nodeIPIP, spoofed), ipipPacket(nodeIPIP, ok))
	n.waitRx(t, "ipip", 3)
	if got := n.b.dev.count(); got != 2 {
		t.Errorf("pod b got %d packets, want the 2 from the pod behind the node", got)
	}
	if got := n.stats("ipip").Drops[DropForeignInnerSource.String()]; got != 1 {
		t.Errorf("%d packets dropped as %s, want 1", got, DropForeignInnerSource)
	}

	// The same source from another known node, right after it was
	// accepted from its own: the remembered pair is source and node.
	n.ipip.offer(ipipPacket(nodeIPIP, ok), ipipPacket(nodeVXLAN, ok))
	n.waitRx(t, "ipip", 5)
	if got := n.b.dev.count(); got != 3 {
		t.Errorf("pod b got %d packets, want 3: the copy from the other node must be dropped", got)
	}
	if got := n.stats("ipip").Drops[DropForeignInnerSource.String()]; got != 2 {
		t.Errorf("%d packets dropped as %s, want 2", got, DropForeignInnerSource)
	}
}

// TestEveryDropReasonTested keeps TestDrops complete: each reason the
// switch counts has a case. queue-full is the kernel's count, not the
// switch's, and takes real TAPs: TestQueueFullCounted has it.
func TestEveryDropReasonTested(t *testing.T) {
	seen := map[DropReason]bool{DropQueueFull: true}
	for _, tc := range dropCases() {
		seen[tc.reason] = true
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		if !seen[r] {
			t.Errorf("drop reason %s has no case in dropCases", r)
		}
	}
}

// TestInject delivers NAT's replies to pods and counts what it cannot.
func TestInject(t *testing.T) {
	n := newFakeNet(t)
	n.s.Inject(ipSpec{src: "198.51.100.7", dst: "10.0.0.3", payload: 10}.build(), packet.VirtioNetHdr{})
	frames, _ := n.c.dev.wait(t, 1)
	_, ip := podRx(t, n.c, frames[0])
	decoded(t, ip)
	n.s.Inject(ipSpec{src: "198.51.100.7", dst: "10.0.1.1"}.build(), packet.VirtioNetHdr{})
	if got := n.stats("host").Drops[DropNoRoute.String()]; got != 1 {
		t.Errorf("host no-route drops = %d, want 1 (an injected packet for no local pod)", got)
	}
}

// injectedSuperframe is what NAT's netstack hands Inject for a download
// to a pod at dst: 3000 bytes of TCP in 1000-byte segments, with the
// pseudo-header sum in the checksum field.
func injectedSuperframe(dst string) ([]byte, packet.VirtioNetHdr) {
	return injectedSuperframeOf(dst, 3000, 1000)
}

func injectedSuperframeOf(dst string, payload, mss int) ([]byte, packet.VirtioNetHdr) {
	ip := ipSpec{src: "198.51.100.7", dst: dst, proto: "tcp", payload: payload, flags: "PA"}.build()
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(len(ip)-20)))
	binary.BigEndian.PutUint16(ip[36:], partial)
	return ip, packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4,
		GSOSize: uint16(mss), HdrLen: 40, CsumStart: 20, CsumOffset: 16}
}

// NAT's netstack hands the switch TCP superframes with partial checksums:
// an offload pod takes one as it is, a plain pod gets complete segments.
func TestInjectSuperframe(t *testing.T) {
	n := newFakeNet(t)
	build := injectedSuperframe
	ip, hdr := build("10.0.0.1")
	n.s.Inject(ip, hdr)
	frames, _ := n.a.dev.wait(t, 1)
	h, got := podRx(t, n.a, frames[0])
	if want := toL2(hdr); h != want || !bytes.Equal(got, ip) {
		t.Errorf("offload pod got %d bytes with %+v, want the %d-byte superframe with %+v", len(got), h, len(ip), want)
	}

	ip, hdr = build("10.0.0.3")
	n.s.Inject(ip, hdr)
	frames, _ = n.c.dev.wait(t, 3)
	for i, f := range frames {
		_, seg := podRx(t, n.c, f)
		if len(seg) != 1040 {
			t.Errorf("segment %d: %d bytes, want 1040", i, len(seg))
		}
		decoded(t, seg)
	}
	// More segments than one round of scratch (a pod with a small MSS).
	ip, hdr = injectedSuperframeOf("10.0.0.3", 40000, 500)
	n.s.Inject(ip, hdr)
	frames, _ = n.c.dev.wait(t, 3+80)
	for i, f := range frames[3:] {
		if _, seg := podRx(t, n.c, f); len(seg) != 540 {
			t.Fatalf("small-MSS segment %d: %d bytes, want 540", i, len(seg))
		} else {
			decoded(t, seg)
		}
	}
	// With the ECN bit (its head has CWR, as a kernel's GRO marks what
	// NAT's packet path reads): taken whole, and cut for the other pod.
	ip, hdr = build("10.0.0.1")
	hdr.GSOType |= packet.GSOECN
	n.s.Inject(ip, hdr)
	frames, _ = n.a.dev.wait(t, 2)
	if h, got := podRx(t, n.a, frames[1]); h != toL2(hdr) || !bytes.Equal(got, ip) {
		t.Errorf("offload pod got %d bytes with %+v for an ECN superframe, want it whole with %+v", len(got), h, toL2(hdr))
	}
	ip, hdr = build("10.0.0.3")
	hdr.GSOType |= packet.GSOECN
	n.s.Inject(ip, hdr)
	frames, _ = n.c.dev.wait(t, 3+80+3)
	for i, f := range frames[3+80:] {
		_, seg := podRx(t, n.c, f)
		if len(seg) != 1040 {
			t.Errorf("ECN superframe's segment %d: %d bytes, want 1040", i, len(seg))
		}
		decoded(t, seg)
	}
	if d := n.stats("host").Drops; len(d) != 0 {
		t.Errorf("host port dropped %v", d)
	}
	// A GSO type NAT never sends is refused, not written.
	ip, hdr = build("10.0.0.1")
	hdr.GSOType = packet.GSOUDPL4
	n.s.Inject(ip, hdr)
	if got := n.stats("host").Drops[DropBadGSO.String()]; got != 1 {
		t.Errorf("bad-gso drops on the host port = %d, want 1", got)
	}
}

// InjectInPlace writes the headers into the room its caller left and
// sends the packet from there; with too little room it copies, as Inject
// does, and leaves the caller's bytes alone.
func TestInjectInPlace(t *testing.T) {
	n := newFakeNet(t)
	ip, hdr := injectedSuperframe("10.0.0.1")
	buf := append(make([]byte, packet.Headroom), ip...)
	n.s.InjectInPlace(buf, packet.Headroom, hdr)
	frames, _ := n.a.dev.wait(t, 1)
	if h, got := podRx(t, n.a, frames[0]); h != toL2(hdr) || !bytes.Equal(got, ip) {
		t.Errorf("in place: pod got %d bytes with %+v, want the %d-byte superframe with %+v", len(got), h, len(ip), toL2(hdr))
	}
	eth := packet.Ethernet(buf[packet.Headroom-ethLen : packet.Headroom])
	if eth.Dst() != n.a.mac || eth.EtherType() != packet.EtherTypeIPv4 {
		t.Errorf("in place: no Ethernet header in the room before the packet (% x): it was copied", eth)
	}

	short := append(make([]byte, 16), ip...)
	before := append([]byte(nil), short...)
	n.s.InjectInPlace(short, 16, hdr)
	frames, _ = n.a.dev.wait(t, 2)
	if _, got := podRx(t, n.a, frames[1]); !bytes.Equal(got, ip) {
		t.Errorf("16 bytes of room: pod got %d bytes, want the superframe", len(got))
	}
	if !bytes.Equal(short, before) {
		t.Errorf("16 bytes of room: the caller's buffer was written to")
	}

	// A buffer that runs on past the packet, beyond 64 KiB: the packet
	// is what its total length says.
	long := append(append(make([]byte, packet.Headroom), ip...), make([]byte, 70000)...)
	n.s.InjectInPlace(long, packet.Headroom, hdr)
	frames, _ = n.a.dev.wait(t, 3)
	if _, got := podRx(t, n.a, frames[2]); !bytes.Equal(got, ip) {
		t.Errorf("in a long buffer: pod got %d bytes, want the superframe", len(got))
	}
	// A bad header is counted under its own reason.
	bad := append([]byte(nil), ip...)
	bad[0] = 0x44 // IHL 4
	n.s.InjectInPlace(bad, 0, packet.VirtioNetHdr{})
	n.waitDrop(t, "host", DropBadIHL, 0)
}

// NAT's replies to a UDP flow can be a UDP superframe (the host socket
// read them coalesced): a pod whose TAP takes them gets it whole, another
// the datagrams, each complete.
func TestInjectUDPSuperframe(t *testing.T) {
	n := newFakeNet(t)
	e := n.addUSOPod(t)
	buildN := func(dst string, count int) ([]byte, packet.VirtioNetHdr) {
		ip := ipSpec{src: "198.51.100.7", dst: dst, payload: count * 100}.build()
		partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoUDP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(len(ip)-20)))
		binary.BigEndian.PutUint16(ip[26:], partial)
		return ip, packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOUDPL4,
			GSOSize: 100, HdrLen: 28, CsumStart: 20, CsumOffset: 6}
	}
	build := func(dst string) ([]byte, packet.VirtioNetHdr) { return buildN(dst, 3) }
	ip, hdr := build("10.0.0.9")
	n.s.Inject(ip, hdr)
	frames, _ := e.dev.wait(t, 1)
	if h, got := podRx(t, e, frames[0]); h != toL2(hdr) || !bytes.Equal(got, ip) {
		t.Errorf("USO pod got %d bytes with %+v, want the superframe whole", len(got), h)
	}
	ip, hdr = build("10.0.0.2") // offloads, but no USO
	n.s.Inject(ip, hdr)
	frames, _ = n.b.dev.wait(t, 3)
	for i, f := range frames {
		if h, seg := podRx(t, n.b, f); h.GSOType != packet.GSONone || len(seg) != 128 {
			t.Errorf("datagram %d: %d bytes with %+v, want 128 bytes, no GSO", i, len(seg), h)
		} else {
			decoded(t, seg)
		}
	}
	// 100 datagrams (a sender's GSO of up to 128, kept whole by UDP_GRO):
	// more than one round of scratch.
	ip, hdr = buildN("10.0.0.2", 100)
	n.s.Inject(ip, hdr)
	frames, _ = n.b.dev.wait(t, 3+100)
	for i, f := range frames[3:] {
		if _, seg := podRx(t, n.b, f); len(seg) != 128 {
			t.Fatalf("datagram %d of 100: %d bytes, want 128", i, len(seg))
		}
	}
	if d := n.stats("host").Drops; len(d) != 0 {
		t.Errorf("host port dropped %v", d)
	}
}

// A connection that came in from outside the cluster through the node is
// answered through the node, not through NAT; a connection the pod opens
// to the same host still goes through NAT.
func TestInboundAnswersSkipNAT(t *testing.T) {
	n := newFakeNet(t)
	in := ipSpec{src: "198.51.100.7", dst: "10.0.0.1", proto: "tcp", flags: "S", payload: 0}.build()
	binary.BigEndian.PutUint16(in[20:], 5555) // remote port
	binary.BigEndian.PutUint16(in[22:], 80)   // pod port
	fixTransport(in)
	n.host.offer(in)
	n.a.dev.wait(t, 1)

	answer := ipSpec{src: "10.0.0.1", dst: "198.51.100.7", proto: "tcp", payload: 0}.build()
	binary.BigEndian.PutUint16(answer[20:], 80)
	binary.BigEndian.PutUint16(answer[22:], 5555)
	fixTransport(answer)
	n.a.dev.offer(podFrame(n.a, answer))
	pkts, _ := n.host.wait(t, 1)
	if ip, _ := decoded(t, pkts[0]); ip.DstIP.String() != "198.51.100.7" {
		t.Fatalf("host got %v, want the answer to 198.51.100.7", ip.DstIP)
	}
	if n.nat.count() != 0 {
		t.Fatalf("the answer went to NAT")
	}
	own := ipSpec{src: "10.0.0.1", dst: "198.51.100.7", proto: "tcp", flags: "S"}.build() // ports 40000 → 80
	n.a.dev.offer(podFrame(n.a, own))
	n.nat.wait(t, 1)
}

// The same for UDP, toward a host port that takes UDP superframes: the
// pod's answers, held back to be merged, still leave through the node
// and not through NAT.
func TestInboundUDPAnswersSkipNAT(t *testing.T) {
	n := newFakeNetHost(t, true)
	in := ipSpec{src: "198.51.100.7", dst: "10.0.0.1", payload: 10}.build()
	binary.BigEndian.PutUint16(in[20:], 5555) // remote port
	binary.BigEndian.PutUint16(in[22:], 53)   // pod port
	fixTransport(in)
	n.host.offer(append(make([]byte, vnetLen), in...))
	n.a.dev.wait(t, 1)

	var answers [][]byte
	for _, f := range udpBurst(n.a, "198.51.100.7", 3, 64) {
		binary.BigEndian.PutUint16(f[vnetLen+ethLen+20:], 53)
		binary.BigEndian.PutUint16(f[vnetLen+ethLen+22:], 5555)
		answers = append(answers, f)
	}
	n.a.dev.offer(answers...)
	pkts, _ := n.host.wait(t, 1)
	ip := packet.IPv4(pkts[0])
	if ip.Dst() != netip.MustParseAddr("198.51.100.7") || ip.Protocol() != packet.ProtoUDP {
		t.Fatalf("host got %v proto %d, want the UDP answers to 198.51.100.7", ip.Dst(), ip.Protocol())
	}
	if n.nat.count() != 0 {
		t.Fatalf("an answer went to NAT")
	}
	if d := n.stats("a").Drops; len(d) != 0 {
		t.Fatalf("pod a dropped %v", d)
	}
}

// fixTransport recomputes a TCP/UDP checksum after a test edited ports.
func fixTransport(b []byte) {
	ip := packet.IPv4(b)
	off := 16
	if ip.Protocol() == packet.ProtoUDP {
		off = 6
	}
	binary.BigEndian.PutUint16(b[20+off:], 0)
	binary.BigEndian.PutUint16(b[20+off:], packet.TransportChecksum(ip))
}

// A detached tunnel's routes drop (no egress) and its reader stops; the
// encapsulation can be attached again.
func TestDetachTunnel(t *testing.T) {
	n := newFakeNet(t)
	if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.vx.closed:
	default:
		t.Fatal("the VXLAN conn is still open after DetachTunnel")
	}
	for _, p := range n.s.Stats() {
		if p.Kind == "underlay" && p.Device == "vxlan" {
			t.Fatalf("port list still has the detached tunnel: %+v", p)
		}
	}
	before := n.stats("a").Drops[DropRemoteUnsupported.String()]
	n.a.dev.offer(podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "10.0.2.9", payload: 20}.build()))
	n.waitDrop(t, "a", DropRemoteUnsupported, before)
	if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	vx := newFakeVXLAN()
	if err := n.s.AttachVXLAN(VXLANConfig{Conn: vx, MTU: 1500, LocalMAC: vtepSelf, LocalAddr: nodeSelf}); err != nil {
		t.Fatalf("attach again: %v", err)
	}
	n.a.dev.offer(podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "10.0.2.9", payload: 20}.build()))
	vx.wait(t, 1)
}

// udpBurst is n datagrams of one flow from pod p to dst as p's kernel
// writes them to an offload TAP: partial UDP checksums (NEEDS_CSUM).
func udpBurst(p *fakePod, dst string, n, size int) [][]byte {
	var frames [][]byte
	for range n {
		ip := ipSpec{src: p.ip.String(), dst: dst, payload: size}.build()
		udp := ip[20:]
		partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoUDP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(len(udp))))
		binary.BigEndian.PutUint16(udp[6:], partial)
		f := podFrame(p, ip)
		if p.dev.offload {
			packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, CsumStart: ethLen + 20, CsumOffset: 6}.Encode(f)
		}
		frames = append(frames, f)
	}
	return frames
}

// addUSOPod adds pod e, 10.0.0.9, on a TAP that takes UDP superframes,
// with its route.
func (n *fakeNet) addUSOPod(t testing.TB) *fakePod {
	t.Helper()
	e := &fakePod{dev: newFakePodDev("e", true), ip: netip.MustParseAddr("10.0.0.9"), mac: packet.MAC{2, 0, 0, 0, 0, 9}}
	e.dev.uso = true
	var err error
	if e.port, err = n.s.AddPodPort(PodPort{Name: "e", IP: e.ip, MAC: e.mac, Dev: e.dev}); err != nil {
		t.Fatal(err)
	}
	routes := append(n.s.Routes().Routes(), router.Route{Prefix: netip.PrefixFrom(e.ip, 32), Kind: router.KindLocalPod, Port: e.port, Dev: "e"})
	next, err := router.NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	n.s.SetRoutes(next)
	return e
}

// Datagrams of one flow read in one batch reach a TAP that takes UDP
// superframes as one GSO_UDP_L4 frame, from a pod (partial checksums) and
// from the host (complete ones); a TAP without USO gets them one by one.
func TestUDPCoalesced(t *testing.T) {
	n := newFakeNet(t)
	e := n.addUSOPod(t)

	check := func(frame []byte, want int) {
		t.Helper()
		h, ip := podRx(t, e, frame)
		wantHdr := packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOUDPL4,
			HdrLen: ethLen + 28, GSOSize: 64, CsumStart: ethLen + 20, CsumOffset: 6}
		if h != wantHdr || len(ip) != 28+want*64 {
			t.Fatalf("frame of %d bytes with %+v, want %d bytes with %+v", len(ip), h, 28+want*64, wantHdr)
		}
		if err := packet.CompleteChecksum(ip, packet.VirtioNetHdr{Flags: h.Flags, CsumStart: 20, CsumOffset: 6}); err != nil {
			t.Fatal(err)
		}
		decoded(t, ip) // both checksums good once the kernel completes the UDP one
	}

	n.a.dev.offer(udpBurst(n.a, "10.0.0.9", 4, 64)...)
	frames, _ := e.dev.wait(t, 1)
	check(frames[0], 4)

	var fromHost [][]byte
	for range 3 {
		fromHost = append(fromHost, ipSpec{src: "172.16.0.1", dst: "10.0.0.9", payload: 64}.build())
	}
	n.host.offer(fromHost...)
	frames, _ = e.dev.wait(t, 2)
	check(frames[1], 3)

	n.a.dev.offer(udpBurst(n.a, "10.0.0.2", 4, 64)...)
	frames, _ = n.b.dev.wait(t, 4)
	for _, f := range frames {
		if h, ip := podRx(t, n.b, f); h.GSOType != packet.GSONone || len(ip) != 28+64 {
			t.Errorf("to a TAP without USO: frame of %d bytes with %+v, want single datagrams", len(ip), h)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if got := e.dev.count(); got != 2 {
		t.Errorf("USO pod got %d frames, want 2", got)
	}
}

// A flow leaves from one VXLAN sender socket (one outer source port),
// whatever port it came in by and however long its packets are: the
// hash reads the inner Ethernet and IP headers only. From the host port
// the bytes before the IP header are the TUN's, not an Ethernet header,
// so the header must be written before it is hashed.
func TestVXLANSenderPerFlow(t *testing.T) {
	for _, from := range []string{"pod", "host", "host with offload"} {
		t.Run(from, func(t *testing.T) {
			n := newFakeNetHost(t, from == "host with offload")
			if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
				t.Fatal(err)
			}
			senders := make([]*fakeVXLAN, 4)
			conns := make([]VXLANConn, len(senders))
			for i := range senders {
				senders[i] = newFakeVXLAN()
				conns[i] = senders[i]
			}
			if err := n.s.AttachVXLAN(VXLANConfig{Conn: n.vx, Senders: conns, MTU: 1500, LocalMAC: vtepSelf, LocalAddr: nodeSelf}); err != nil {
				t.Fatal(err)
			}
			const pkts = 12
			src := "172.16.0.1"
			if from == "pod" {
				src = n.a.ip.String()
			}
			for i := range pkts {
				ip := ipSpec{src: src, dst: "10.0.2.9", proto: "tcp", flags: "A", seq: uint32(i * 1000), payload: 10 + 37*i}.build()
				switch from {
				case "pod":
					n.a.dev.offer(podFrame(n.a, ip))
				case "host":
					n.host.offer(ip)
				default: // a complete packet: a zero virtio header
					n.host.offer(append(make([]byte, vnetLen), ip...))
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			var got []int
			for {
				got = got[:0]
				total := 0
				for _, s := range senders {
					s.mu.Lock()
					got = append(got, len(s.pkts))
					total += len(s.pkts)
					s.mu.Unlock()
				}
				if total == pkts {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("datagrams per sender %v, want %d in all", got, pkts)
				}
				time.Sleep(time.Millisecond)
			}
			for i, c := range got {
				if c != 0 && c != pkts {
					t.Fatalf("one flow's %d datagrams spread over senders: %v", pkts, got)
				}
				if c == pkts {
					// In the order they came, by sequence number.
					for j, p := range senders[i].pkts {
						ip := packet.IPv4(packet.Ethernet(encap.VXLAN(p).Payload()).Payload())
						if seq := packet.TCP(ip.Payload()).Seq(); seq != uint32(j*1000) {
							t.Fatalf("datagram %d has sequence %d, want %d", j, seq, j*1000)
						}
					}
				}
			}
		})
	}
}

// An inbound flow is kept alive by the pod's answers, not by a trace
// asking whether a packet would be one (Trace changes nothing).
func TestInboundRefresh(t *testing.T) {
	var flows inboundFlows
	in := packet.IPv4(ipSpec{src: "198.51.100.7", dst: "10.0.0.1", proto: "tcp"}.build())
	out := packet.IPv4(ipSpec{src: "10.0.0.1", dst: "198.51.100.7", proto: "tcp"}.build())
	// ipSpec's TCP ports are fixed; swap them for the answer.
	tcp := packet.TCP(out.Payload())
	sp, dp := tcp.SrcPort(), tcp.DstPort()
	tcp.SetSrcPort(dp)
	tcp.SetDstPort(sp)
	t0 := time.Unix(1_700_000_000, 0)
	flows.record(in, t0)
	late := t0.Add(inboundIdle - time.Second)
	if !flows.isReply(out, late, false) {
		t.Fatal("the answer is not recognised")
	}
	if flows.isReply(out, t0.Add(inboundIdle+time.Second), false) {
		t.Fatal("a question without refresh kept the flow alive")
	}
	flows.record(in, t0)
	flows.isReply(out, late, true)
	if !flows.isReply(out, t0.Add(inboundIdle+time.Second), false) {
		t.Fatal("an answer did not keep the flow alive")
	}
}

// A VXLAN tunnel with several receive sockets reads each with a reader of
// its own, takes every datagram's sender from the socket it came in on,
// and counts what each reader read; detaching it stops every reader.
func TestVXLANReceivers(t *testing.T) {
	n := newFakeNet(t)
	if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
		t.Fatal(err)
	}
	first, second := newFakeVXLAN(), newFakeVXLAN()
	for _, bad := range [][]VXLANConn{{nil}, {first}, {second, second}} {
		if err := n.s.AttachVXLAN(VXLANConfig{Conn: first, Receivers: bad, MTU: 1500}); err == nil {
			t.Fatalf("AttachVXLAN with receivers %v beside Conn: got nil error", bad)
		}
	}
	if err := n.s.AttachVXLAN(VXLANConfig{Conn: first, Receivers: []VXLANConn{second}, MTU: 1500, LocalMAC: vtepSelf, LocalAddr: nodeSelf}); err != nil {
		t.Fatal(err)
	}
	toC := func() []byte {
		return vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.3", payload: 30}.build(), encap.DefaultVNI)
	}
	first.offer(nodeVXLAN, toC())
	n.c.dev.wait(t, 1)
	// The first socket's last sender was a node; this one's is not.
	before := n.stats("vxlan").Drops[DropUnknownSource.String()]
	second.offer(netip.MustParseAddr("192.0.2.99"), toC())
	n.waitDrop(t, "vxlan", DropUnknownSource, before)
	second.offer(nodeVXLAN, toC())
	n.c.dev.wait(t, 2)
	if got := n.stats("vxlan").ReaderRxFrames; !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("frames per reader %v, want [1 2]", got)
	}
	done := make(chan error, 1)
	go func() { done <- n.s.DetachTunnel(router.EncapVXLAN) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DetachTunnel did not return: a reader still runs")
	}
	for i, c := range []*fakeVXLAN{first, second} {
		if _, err := c.ReadBatch(make([][]byte, 1), make([]int, 1), 0); !errors.Is(err, os.ErrClosed) {
			t.Errorf("receiver %d after detach: read error %v, want closed", i, err)
		}
	}
}

// hostUDPSuperframe is what the host TUN reads on a kernel with USO for a
// UDP_SEGMENT send (or a burst forwarded whole) from src to dst: a
// virtio header and one GSO_UDP_L4 superframe of `datagrams` payloads of
// size bytes and a last one of tail bytes. Payload byte i is byte(i).
func hostUDPSuperframe(src, dst string, datagrams, size, tail int) []byte {
	ip := ipSpec{src: src, dst: dst, payload: datagrams*size + tail}.build()
	h := packet.AsUDPSuperframe(packet.IPv4(ip), size)
	b := make([]byte, vnetLen, vnetLen+len(ip))
	h.Encode(b)
	return append(b, ip...)
}

// A UDP superframe the node sends is cut into its datagrams, each
// complete with a valid checksum, for every egress that cannot take it
// whole: a plain pod, an offload pod without USO, IP-in-IP, VXLAN.
// A pod, which may not send UDP superframes, has one refused.
func TestHostUDPSuperframeCut(t *testing.T) {
	n := newFakeNetHost(t, true)
	const datagrams, size, tail = 3, 1000, 500
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.0.3", datagrams, size, tail))
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.0.2", datagrams, size, tail))
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.1.7", datagrams, size, tail))
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.2.7", datagrams, size, tail))

	check := func(where string, ips [][]byte) {
		t.Helper()
		if len(ips) != datagrams+1 {
			t.Fatalf("%s: %d packets, want %d datagrams", where, len(ips), datagrams+1)
		}
		for k, b := range ips {
			ip, pkt := decoded(t, b)
			want := size
			if k == datagrams {
				want = tail
			}
			udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if !ok || len(udp.Payload) != want || int(ip.Length) != 28+want {
				t.Fatalf("%s: datagram %d: %d bytes of payload, IP length %d; want %d", where, k, len(udp.Payload), ip.Length, want)
			}
			for j, c := range udp.Payload {
				if c != byte(k*size+j) {
					t.Fatalf("%s: datagram %d: payload byte %d is %d, want %d", where, k, j, c, byte(k*size+j))
				}
			}
		}
	}
	for _, p := range []*fakePod{n.c, n.b} {
		frames, _ := p.dev.wait(t, datagrams+1)
		var ips [][]byte
		for _, f := range frames {
			h, ip := podRx(t, p, f)
			if h.GSOType != packet.GSONone {
				t.Fatalf("pod %s got a superframe (%+v) it cannot take", p.dev.name, h)
			}
			ips = append(ips, ip)
		}
		check("pod "+p.dev.name, ips)
	}
	ipip, _ := n.ipip.wait(t, datagrams+1) // inner packets: the conn adds the outer header
	check("IP-in-IP", ipip)
	vx, _ := n.vx.wait(t, datagrams+1)
	var inner [][]byte
	for _, d := range vx {
		inner = append(inner, d[encap.VXLANHeaderLen+ethLen:])
	}
	check("VXLAN", inner)
	if h := n.stats("host"); h.GSOFrames != 4 || len(h.Drops) != 0 {
		t.Errorf("host port: %d superframes read, drops %v; want 4 and none", h.GSOFrames, h.Drops)
	}

	// To a blackhole it is one drop, not one per datagram.
	before := n.stats("host").Drops[DropBlackhole.String()]
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.4.9", datagrams, size, tail))
	n.waitDrop(t, "host", DropBlackhole, before)
	n.waitRx(t, "host", 5)
	if got := n.stats("host").Drops[DropBlackhole.String()]; got != before+1 {
		t.Errorf("a UDP superframe to a blackhole counted %d drops, want 1", got-before)
	}

	// The same superframe from a pod is refused: pods' TAPs hand over no
	// UDP superframes, so one is forged.
	f := hostUDPSuperframe("10.0.0.1", "10.0.0.3", datagrams, size, tail)
	var h packet.VirtioNetHdr
	h.Decode(f)
	h.HdrLen += ethLen
	h.CsumStart += ethLen
	frame := podFrame(n.a, f[vnetLen:])
	h.Encode(frame)
	before = n.stats("a").Drops[DropBadGSO.String()]
	n.a.dev.offer(frame)
	n.waitDrop(t, "a", DropBadGSO, before)
}

// A congestion mark the underlay put on the outer header reaches the pod
// in the inner one when the pod's transport does ECN, and an outer ECT(1)
// turns an inner ECT(0) into ECT(1) (RFC 6040, as Linux tunnels
// decapsulate); other outer ECN values change nothing.
func TestTunnelECNToPod(t *testing.T) {
	n := newFakeNet(t)
	i := 0 // frames pod b has had
	for _, tc := range []struct {
		name              string
		via               string
		outer, inner, got uint8
	}{
		{"vxlan CE over ECT(0)", "vxlan", packet.ECNCE, 0x28 | packet.ECNECT0, 0x28 | packet.ECNCE},
		{"ipip CE over ECT(1)", "ipip", 0xb8 | packet.ECNCE, packet.ECNECT1, packet.ECNCE},
		{"vxlan CE over CE", "vxlan", packet.ECNCE, packet.ECNCE, packet.ECNCE},
		{"ipip ECT(0) over Not-ECT", "ipip", packet.ECNECT0, 0x10, 0x10},
		{"vxlan ECT(1) over ECT(0)", "vxlan", packet.ECNECT1, 0x28 | packet.ECNECT0, 0x28 | packet.ECNECT1},
		{"ipip ECT(0) over ECT(1)", "ipip", packet.ECNECT0, packet.ECNECT1, packet.ECNECT1},
	} {
		i++
		if tc.via == "vxlan" {
			n.vx.offerTOS(nodeVXLAN, tc.outer, vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.2", tos: tc.inner, payload: 20}.build(), encap.DefaultVNI))
		} else {
			n.ipip.offer(ipipPacketTOS(nodeIPIP, tc.outer, ipSpec{src: "10.0.1.5", dst: "10.0.0.2", tos: tc.inner, payload: 20}.build()))
		}
		frames, _ := n.b.dev.wait(t, i)
		_, ip := podRx(t, n.b, frames[i-1])
		got, _ := decoded(t, ip) // checks the header checksum too
		if got.TOS != tc.got {
			t.Errorf("%s: pod got TOS %#02x, want %#02x", tc.name, got.TOS, tc.got)
		}
	}
	// The marks a router set are counted where they came in.
	if v, i := n.stats("vxlan").ECNCE, n.stats("ipip").ECNCE; v != 2 || i != 1 {
		t.Errorf("ECNCE: vxlan %d, ipip %d; want 2 and 1", v, i)
	}
}

// A UDP superframe is taken only as a kernel makes one: a partial
// checksum in the UDP header's own field, a UDP length covering the
// whole, at most 128 datagrams. Anything else from a port that reads UDP
// superframes (here the host's; a pod's TAP, where a VM writes its own
// virtio headers, is checked the same way) is dropped as bad-gso, and
// nothing of it is forwarded.
func TestUDPSuperframeChecked(t *testing.T) {
	n := newFakeNetHost(t, true)
	forge := func(datagrams, size, tail int, change func(h *packet.VirtioNetHdr, ip []byte)) []byte {
		f := hostUDPSuperframe("172.16.0.1", "10.0.0.3", datagrams, size, tail)
		var h packet.VirtioNetHdr
		h.Decode(f)
		change(&h, f[vnetLen:])
		h.Encode(f)
		return f
	}
	bad := map[string][]byte{
		"no partial checksum":       forge(3, 1000, 500, func(h *packet.VirtioNetHdr, _ []byte) { h.Flags = 0 }),
		"checksum start elsewhere":  forge(3, 1000, 500, func(h *packet.VirtioNetHdr, _ []byte) { h.CsumStart += 2 }),
		"checksum field elsewhere":  forge(3, 1000, 500, func(h *packet.VirtioNetHdr, _ []byte) { h.CsumOffset = 16 }),
		"UDP length of one segment": forge(3, 1000, 500, func(_ *packet.VirtioNetHdr, ip []byte) { binary.BigEndian.PutUint16(ip[24:], 1008) }),
		"129 datagrams":             forge(129, 1, 0, func(*packet.VirtioNetHdr, []byte) {}),
	}
	for name, f := range bad {
		before := n.stats("host").Drops[DropBadGSO.String()]
		n.host.offer(f)
		n.waitDrop(t, "host", DropBadGSO, before)
		t.Logf("%s: refused", name)
	}
	// 128 datagrams of one byte, then a plain superframe: both go
	// through, cut for the plain pod c, and nothing of the refused ones
	// came before them.
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.0.3", 128, 1, 0))
	n.host.offer(hostUDPSuperframe("172.16.0.1", "10.0.0.3", 3, 1000, 500))
	frames, _ := n.c.dev.wait(t, 128+4)
	for k, f := range frames {
		_, ip := podRx(t, n.c, f)
		want := 1
		if k >= 128 {
			want = 1000
			if k == 131 {
				want = 500
			}
		}
		if got := len(ip) - 28; got != want {
			t.Fatalf("datagram %d: %d bytes of payload, want %d", k, got, want)
		}
	}
	if got := n.stats("host").Drops[DropBadGSO.String()]; got != uint64(len(bad)) {
		t.Errorf("bad-gso on the host port: %d, want %d", got, len(bad))
	}
}

// A batch that carries a superframe is bulk, however few and small its
// frames: a burst of small datagrams sent with UDP_SEGMENT is one frame.
func TestSmallBatchSuperframe(t *testing.T) {
	buf := make([]byte, packet.Headroom+vnetLen+200)
	bufs, sizes := [][]byte{buf}, []int{vnetLen + 200}
	if !smallBatch(1, bufs, sizes, vnetLen) {
		t.Error("one small plain frame: not small")
	}
	packet.VirtioNetHdr{GSOType: packet.GSOUDPL4, GSOSize: 20}.Encode(buf[packet.Headroom:])
	if smallBatch(1, bufs, sizes, vnetLen) {
		t.Error("one small UDP superframe: small")
	}
	if !smallBatch(1, bufs, sizes, 0) {
		t.Error("a frame without a virtio header: its first bytes were read as one")
	}
}

// A pod's reader starts with podBatchStart buffers and doubles them, up
// to the switch's PodBatch, each time a read comes back full of small
// frames; a batch holding a superframe takes it back to podBatchStart,
// and a full batch of superframes leaves it there.
func TestPodBatchGrows(t *testing.T) {
	n := newFakeNet(t)
	waitBatch := func(p *fakePod, want int) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for p.dev.batch.Load() != int64(want) {
			if time.Now().After(deadline) {
				t.Fatalf("pod %s reads %d frames at a time, want %d", p.dev.name, p.dev.batch.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitBatch(n.a, podBatchStart)
	sent := 0
	for _, want := range []int{16, 32, 64, 64} {
		burst := udpBurst(n.a, "10.0.0.2", int(n.a.dev.batch.Load()), 64)
		n.a.dev.offer(burst...)
		sent += len(burst)
		n.b.dev.wait(t, sent)
		waitBatch(n.a, want)
	}

	n.a.dev.offer(append(udpBurst(n.a, "10.0.0.2", 3, 64), superframe(n.a, "10.0.0.2", 3000, 1000))...)
	sent += 4
	n.b.dev.wait(t, sent)
	waitBatch(n.a, podBatchStart)

	var supers [][]byte
	for range podBatchStart {
		supers = append(supers, superframe(n.d, "10.0.0.2", 3000, 1000))
	}
	n.d.dev.offer(supers...)
	n.b.dev.wait(t, sent+podBatchStart)
	n.d.dev.offer(udpBurst(n.d, "10.0.0.2", 1, 64)...) // the read after the full one has begun
	n.b.dev.wait(t, sent+podBatchStart+1)
	waitBatch(n.d, podBatchStart)
}

// TestTunnelQueueFull: what a tunnel's receive socket says the kernel
// dropped before it was read counts as the tunnel port's queue-full,
// from the moment the tunnel was attached, the sum over its sockets.
func TestTunnelQueueFull(t *testing.T) {
	n := newFakeNet(t)
	full := func(port string) uint64 { return n.stats(port).Drops[DropQueueFull.String()] }
	n.ipip.n.Add(4)
	n.vx.n.Add(5)
	if got := full("ipip"); got != 4 {
		t.Errorf("ipip queue-full %d, want 4", got)
	}
	if got := full("vxlan"); got != 5 {
		t.Errorf("vxlan queue-full %d, want 5", got)
	}
	// A tunnel attached again counts from then on: two sockets, one of
	// which had dropped before.
	if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
		t.Fatal(err)
	}
	a, b := newFakeVXLAN(), newFakeVXLAN()
	a.n.Store(100)
	if err := n.s.AttachVXLAN(VXLANConfig{Conn: a, Receivers: []VXLANConn{b}, MTU: 1500, LocalMAC: vtepSelf, LocalAddr: nodeSelf}); err != nil {
		t.Fatal(err)
	}
	a.n.Add(2)
	b.n.Add(3)
	if got := full("vxlan"); got != 5 {
		t.Errorf("vxlan queue-full %d after attaching again, want 5 (2 + 3 since)", got)
	}
}
