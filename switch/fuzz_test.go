package vswitch

import (
	"encoding/binary"
	"testing"

	"podnet/encap"
	"podnet/internal/packet"
)

// FuzzForward feeds arbitrary bytes to each ingress's classify function,
// end to end through forward, shape and the egresses (in-memory ports):
// whatever a pod, the host or another node sends, the switch must not
// panic, and everything it writes must be a whole IPv4 packet (pods:
// inside an Ethernet frame) whose header it could parse. Its VXLAN
// tunnel sends superframes whole: each one it hands over must be one a
// kernel can segment again.
func FuzzForward(f *testing.F) {
	n, sf := newWholeNet(f)
	pod := func(ip []byte) []byte { return podFrame(n.a, ip) }
	udp := ipSpec{src: "10.0.0.1", dst: "10.0.0.2", payload: 20}.build()
	f.Add(uint8(0), pod(udp))
	f.Add(uint8(0), superframe(n.a, "10.0.1.5", 3000, 1000))
	f.Add(uint8(0), superframe(n.a, "10.0.2.5", 3000, 1000))
	f.Add(uint8(0), superframe(n.a, "198.51.100.1", 2000, 500))
	f.Add(uint8(1), ipSpec{src: "172.16.0.1", dst: "10.0.0.1", proto: "tcp", payload: 100}.build())
	f.Add(uint8(2), ipipPacket(nodeIPIP, ipSpec{src: "10.0.1.5", dst: "10.0.0.2", ttl: 1}.build()))
	f.Add(uint8(3), vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.3", proto: "tcp", payload: 10}.build(), encap.DefaultVNI))
	// The host port's offload TUN: a virtio header, then a superframe.
	hostSuper := superframe(&fakePod{dev: &fakePodDev{offload: true}, ip: nodeSelf}, "10.0.0.2", 3000, 1000)
	hostSuper = append(hostSuper[:vnetLen:vnetLen], hostSuper[vnetLen+ethLen:]...)
	packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}.Encode(hostSuper)
	f.Add(uint8(4), hostSuper)
	// A UDP superframe from the node (USO): to a plain pod, an offload
	// pod, over IP-in-IP and VXLAN; each is cut into its datagrams.
	for _, dst := range []string{"10.0.0.3", "10.0.0.1", "10.0.1.5", "10.0.2.5"} {
		f.Add(uint8(4), hostUDPSuperframe("172.16.0.1", dst, 3, 700, 100))
	}

	n.s.mu.Lock()
	a, host := n.s.att.pods[n.a.port], n.s.att.host
	ipip, vx := n.s.att.tunnels[1], n.s.att.tunnels[2]
	ipipRx, vxRx := ipip.t.Receivers()[0], vx.t.Receivers()[0]
	// The same host device, read as the offload TUN reads on a kernel
	// with USO (virtio header first, UDP superframes too), on a lane of
	// its own.
	hostOffload := &hostPort{dev: host.dev, offload: true, uso: true, lane: n.s.newLaneIDLocked()}
	n.s.mu.Unlock()
	fw := newForwarder(n.s)
	buf := make([]byte, packet.BufferSize)
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		if len(data) > packet.BufferSize-packet.Headroom {
			return
		}
		for _, s := range []*fakeSink{&n.a.dev.fakeSink, &n.b.dev.fakeSink, &n.c.dev.fakeSink, &n.d.dev.fakeSink, &n.host.fakeSink, &n.ipip.fakeSink, &n.vx.fakeSink, &n.nat.fakeSink} {
			s.reset()
		}
		sf.reset()
		clear(buf)
		size := copy(buf[packet.Headroom:], data)
		fw.begin()
		switch which % 5 {
		case 0:
			fw.fromPod(a, buf, packet.Headroom, size)
		case 1:
			fw.fromHost(host, buf, packet.Headroom, size)
		case 2:
			fw.fromTunnel(ipip, ipipRx, 0, buf, packet.Headroom, size)
		case 3:
			n.vx.srcs = append(n.vx.srcs[:0], nodeVXLAN)
			n.vx.toss = append(n.vx.toss[:0], uint8(which/5)) // any outer ECN
			fw.fromTunnel(vx, vxRx, 0, buf, packet.Headroom, size)
		case 4:
			fw.fromHost(hostOffload, buf, packet.Headroom, size)
		}
		fw.end()
		for _, p := range []*fakePod{n.a, n.b, n.c, n.d} {
			for _, fr := range p.dev.snapshot() {
				if p.dev.offload {
					fr = fr[vnetLen:]
				}
				checkIPv4(t, fr[ethLen:])
			}
		}
		for _, s := range []*fakeSink{&n.host.fakeSink, &n.ipip.fakeSink, &n.nat.fakeSink} {
			for _, pkt := range s.snapshot() {
				checkIPv4(t, pkt)
			}
		}
		for _, d := range n.vx.snapshot() {
			checkIPv4(t, d[encap.VXLANHeaderLen+ethLen:])
		}
		sf.mu.Lock()
		defer sf.mu.Unlock()
		for i, inner := range sf.inners {
			if len(inner) > encap.MaxVXLANTapInner || !encap.WholeTCPSuperframe(inner, sf.gsos[i]) {
				t.Fatalf("sent whole a superframe of %d bytes with %+v that a kernel cannot segment", len(inner), sf.gsos[i])
			}
		}
	})
}

// checkIPv4 fails unless b is exactly one IPv4 packet with a sane header.
func checkIPv4(t *testing.T, b []byte) {
	t.Helper()
	if len(b) < 20 || b[0]>>4 != 4 {
		t.Fatalf("wrote something that is not IPv4: % x", b[:min(len(b), 24)])
	}
	if tl := int(binary.BigEndian.Uint16(b[2:])); tl != len(b) {
		t.Fatalf("wrote an IPv4 packet of %d bytes whose total length says %d", len(b), tl)
	}
}
