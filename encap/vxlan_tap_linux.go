package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// A VXLANTap sends TCP superframes as VXLAN without cutting them up: it
// writes each one, outer Ethernet, IPv4 and UDP headers included, into a
// TAP of the node's own with a virtio-net header that asks for UDP-tunnel
// segmentation (Linux 6.17+, TUN_F_UDP_TUNNEL_GSO). The node's kernel
// routes the frame out of the underlay like a packet it forwards, and the
// underlay device, or the kernel just before it, cuts it into VXLAN
// datagrams of the inner MSS, each with the inner TCP checksum filled in.
// A veth underlay carries the superframe whole to the next namespace, as it
// does the kernel's own VXLAN device's; a receiver then reads it as one
// datagram (see VXLANConn about superframes).
//
// Without it every superframe is segmented in userspace (a copy and a
// checksum per segment) and sent with UDP GSO.
//
// Before Linux 6.17, OpenVXLANTapMarked gets the same result another way,
// as IPIPTap does for IP-in-IP: each frame goes in as a plain TCPv4
// superframe, and a tc program on the TAP marks it as VXLAN (vxlanMarking)
// before the kernel forwards it. The outer UDP checksum is then zero.
//
// The TAP, its forwarding checks (Probe, Err) and Send are forwardTap's.
type VXLANTap struct {
	forwardTap
	udpCsum bool        // the kernel fills in the outer UDP checksum of each segment
	prog    *tapProgram // the marking program; nil: UDP-tunnel virtio headers
	ipID    atomic.Uint32
}

// vxlanMarking is the tc program of a VXLANTap opened with
// OpenVXLANTapMarked: the outer IPv4, UDP (to port) and VXLAN headers and
// the inner Ethernet header taken out and put back as a UDP tunnel whose
// inner packets are Ethernet frames, as the kernel's VXLAN device marks
// its packets (SKB_GSO_UDP_TUNNEL).
func vxlanMarking(port uint16) marking {
	const innerEth = packet.EthernetHeaderLen
	return marking{name: "podnet_vx_tap", proto: packet.ProtoUDP, dport: port,
		room:  packet.IPv4MinHeaderLen + udpHeaderLen + VXLANHeaderLen + innerEth,
		flags: bpfFAdjRoomFixedGSO | bpfFAdjRoomEncapL3IP4 | bpfFAdjRoomEncapL4UDP | bpfFAdjRoomEncapL2Eth | innerEth<<bpfAdjRoomEncapL2Shift}
}

// vxlanTapMarkedOffloadFlags: a marked VXLANTap takes plain TCPv4
// superframes.
const vxlanTapMarkedOffloadFlags = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO_ECN

// VXLANTapHeadroom is what Frame writes before the VXLAN header: the
// tunnel virtio-net header, then Ethernet, IPv4 and UDP headers.
const VXLANTapHeadroom = vnetTunnelHdrLen + packet.EthernetHeaderLen + packet.IPv4MinHeaderLen + udpHeaderLen

// MaxVXLANTapInner is the largest inner IPv4 packet a VXLAN superframe can
// carry: the outer IPv4 total length (16 bits) must cover it and the
// outer headers.
const MaxVXLANTapInner = 0xffff - packet.IPv4MinHeaderLen - udpHeaderLen - VXLANHeaderLen - packet.EthernetHeaderLen

const (
	udpHeaderLen = 8
	// vnetTunnelHdrLen is sizeof(struct virtio_net_hdr_v1_hash_tunnel):
	// the 12-byte v1 header, 8 bytes of hash report (unused), then the
	// outer transport and inner network header offsets.
	vnetTunnelHdrLen = 24

	tunFUDPTunnelGSO     = 0x080 // TUN_F_UDP_TUNNEL_GSO (linux/if_tun.h, 6.17), not in x/sys yet
	tunFUDPTunnelGSOCsum = 0x100 // TUN_F_UDP_TUNNEL_GSO_CSUM: with the outer UDP checksum
	gsoUDPTunnelIPv4     = 0x20  // VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4
	vnetFUDPTunnelCsum   = 0x08  // VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM
	vxlanTapOffloadFlags = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | tunFUDPTunnelGSO
)

// ErrNoUDPTunnelGSO means the kernel's TUN driver cannot take UDP-tunnel
// superframes (Linux before 6.17).
var ErrNoUDPTunnelGSO = errors.New("the kernel's TAP driver has no UDP-tunnel segmentation (TUN_F_UDP_TUNNEL_GSO, Linux 6.17+)")

// CheckUDPTunnelGSO says whether this kernel's TAPs take UDP-tunnel
// superframes: it makes a TAP for a moment (the kernel names it
// "pncheck<N>"; it goes away when the check closes it) and asks. nil:
// they do; ErrNoUDPTunnelGSO: they do not.
func CheckUDPTunnelGSO() error {
	fd, _, err := openTunnelTap("pncheck%d", 0)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// openTunnelTap creates a TAP with the tunnel virtio-net header in the
// calling thread's namespace and asks for UDP-tunnel segmentation, with
// the outer UDP checksum if the kernel has it (udpCsum). extra adds TUN
// flags (IFF_TUN_EXCL).
func openTunnelTap(name string, extra uint16) (fd int, udpCsum bool, err error) {
	// With the outer UDP checksum if the kernel can: receivers' GRO
	// merges no datagrams whose checksum is zero.
	fd, _, used, err := openTap(name, extra, vnetTunnelHdrLen, vxlanTapOffloadFlags|tunFUDPTunnelGSOCsum, vxlanTapOffloadFlags)
	if errors.Is(err, errOffloadRefused) {
		return -1, false, ErrNoUDPTunnelGSO
	}
	return fd, used == 0, err
}

// OpenVXLANTap creates the TAP name in the calling thread's network
// namespace, brings it up and sets its sysctls. local is the outer source
// of every frame: the node's underlay address, which the VXLAN socket is
// bound to.
func OpenVXLANTap(name string, local netip.Addr) (*VXLANTap, error) {
	if err := checkLocal("vxlan tap", name, local); err != nil {
		return nil, err
	}
	fd, udpCsum, err := openTunnelTap(name, unix.IFF_TUN_EXCL)
	if err != nil {
		return nil, fmt.Errorf("vxlan tap %q: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	t := &VXLANTap{udpCsum: udpCsum}
	if err := t.init("vxlan tap", name, fd, local, vnetTunnelHdrLen); err != nil {
		return nil, err
	}
	ok = true
	return t, nil
}

// OpenVXLANTapMarked is OpenVXLANTap for kernels whose TAPs take no
// UDP-tunnel superframes (before Linux 6.17): a tc program on the TAP
// marks each frame to UDP port port as VXLAN (vxlanMarking). It needs
// what IPIPTap needs: bpf(2), tc's clsact qdisc and cls_bpf.
func OpenVXLANTapMarked(name string, local netip.Addr, port uint16) (*VXLANTap, error) {
	if port == 0 {
		// The program would take every UDP frame for VXLAN.
		return nil, fmt.Errorf("vxlan tap %q: no VXLAN port", name)
	}
	t := &VXLANTap{}
	var err error
	if t.prog, _, err = t.openMarked("vxlan tap", name, local, vnetTunnelHdrLen, vxlanMarking(port), vxlanTapMarkedOffloadFlags); err != nil {
		return nil, err
	}
	return t, nil
}

// CheckVXLANTapMarked says whether OpenVXLANTapMarked can work here
// (checkMarked). nil: it can.
func CheckVXLANTapMarked() error {
	return checkMarked(vnetTunnelHdrLen, vxlanTapMarkedOffloadFlags, vxlanMarking(VXLANPort))
}

// Marked says whether the TAP's frames are marked by a tc program
// (OpenVXLANTapMarked) rather than by their virtio-net headers.
func (t *VXLANTap) Marked() bool { return t.prog != nil }

// Frame writes the outer headers in the VXLANTapHeadroom bytes before
// buf[start:], which holds a VXLAN header, the inner Ethernet header and
// the inner IPv4 packet (a superframe whose offload metadata is gso, its
// offsets counted from the inner IPv4 header), and returns the frame to
// Send. The outer destination is dst, the outer source port srcPort (the
// port the same flow's other datagrams leave from, so the underlay sees
// one flow). ok is false if the packet cannot go this way (send it
// segmented instead): too little headroom, dst not IPv4, too big for one
// outer packet, or not a TCPv4 superframe as a kernel writes one (a
// partial checksum in the TCP header, a segment size); the header length
// the kernel copies into each segment is taken from the packet, not gso.
func (t *VXLANTap) Frame(buf []byte, start int, dst netip.AddrPort, srcPort uint16, gso packet.VirtioNetHdr) (frame []byte, ok bool) {
	const innerIP = VXLANHeaderLen + packet.EthernetHeaderLen
	if start < VXLANTapHeadroom || len(buf)-start < innerIP+packet.IPv4MinHeaderLen+packet.TCPMinHeaderLen || !dst.Addr().Is4() {
		return nil, false
	}
	in := packet.IPv4(buf[start+innerIP:])
	inner, ihl := len(in), in.HeaderLen()
	if inner > MaxVXLANTapInner || !WholeTCPSuperframe(in, gso) {
		return nil, false
	}
	hdrLen := ihl + packet.TCP(in[ihl:]).DataOffset()
	segs := (inner - hdrLen + int(gso.GSOSize) - 1) / int(gso.GSOSize)
	f := buf[start-VXLANTapHeadroom:]
	const (
		outerEth = vnetTunnelHdrLen
		outerIP  = outerEth + packet.EthernetHeaderLen
		outerUDP = outerIP + packet.IPv4MinHeaderLen
		vxlan    = outerUDP + udpHeaderLen
		innerNH  = vxlan + innerIP - outerEth // virtio offsets count from the Ethernet header
	)
	h := f[:vnetTunnelHdrLen]
	clear(h)
	h[0] = packet.VirtioNetHdrFNeedsCsum
	if t.udpCsum {
		h[0] |= vnetFUDPTunnelCsum
	}
	h[1] = gso.GSOType
	binary.LittleEndian.PutUint16(h[2:], uint16(innerNH+hdrLen))
	binary.LittleEndian.PutUint16(h[4:], gso.GSOSize)
	binary.LittleEndian.PutUint16(h[6:], uint16(innerNH+ihl))
	binary.LittleEndian.PutUint16(h[8:], tcpChecksumOffset)
	if t.prog == nil {
		// The UDP-tunnel header; a marked TAP's frame is plain TCPv4
		// here, with the same offsets, and its program does the rest.
		h[1] |= gsoUDPTunnelIPv4
		binary.LittleEndian.PutUint16(h[20:], outerUDP-outerEth)
		binary.LittleEndian.PutUint16(h[22:], innerNH)
	}

	// The kernel numbers the segments from this ID on (DF is clear).
	id := uint16(t.ipID.Add(uint32(segs)) - uint32(segs))
	d := dst.Addr().As4()
	u := t.writeOuter(f, d, packet.TunnelECN(in.TOS()), srcPort, dst.Port(), id)
	// With udpCsum the field holds the pseudo-header sum over the whole,
	// which the kernel adjusts per segment and completes; without, zero
	// (RFC 7348 allows it): the inner TCP checksum covers the payload.
	if t.udpCsum {
		udpLen := uint16(len(f) - outerUDP)
		binary.BigEndian.PutUint16(u[6:], packet.Fold(packet.PseudoHeaderSum(packet.ProtoUDP, t.local, d, udpLen)))
	}
	return f, true
}

// writeOuter writes, after the virtio-net header at the start of frame f,
// the Ethernet header to the TAP's own MAC and the outer IPv4 (from the
// node, TOS tos, DF clear as the VXLAN socket sends, IP ID id) and UDP
// headers (zero checksum), their lengths covering the rest of f, and
// returns the UDP header.
func (t *VXLANTap) writeOuter(f []byte, dst [4]byte, tos uint8, srcPort, dstPort, id uint16) []byte {
	u := f[t.writeOuterIPv4(f, packet.ProtoUDP, tos, dst, id, false):][:udpHeaderLen]
	binary.BigEndian.PutUint16(u[0:], srcPort)
	binary.BigEndian.PutUint16(u[2:], dstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(len(f)-(vnetTunnelHdrLen+packet.EthernetHeaderLen+packet.IPv4MinHeaderLen)))
	binary.BigEndian.PutUint16(u[6:], 0)
	return u
}

// Where the checksum sits in a TCP and in a UDP header.
const (
	tcpChecksumOffset = 16
	udpChecksumOffset = 6
)

// WholeTCPSuperframe says whether ip, with offload metadata gso (offsets
// from the IPv4 header), is a TCPv4 superframe as a kernel writes one,
// which the kernel can segment again: TCP, a segment size, and a partial
// checksum at the TCP checksum field. ip must be a valid IPv4 packet.
func WholeTCPSuperframe(ip packet.IPv4, gso packet.VirtioNetHdr) bool {
	ihl := ip.HeaderLen()
	return gso.GSOType&^packet.GSOECN == packet.GSOTCPv4 && gso.GSOSize > 0 &&
		gso.Flags&packet.VirtioNetHdrFNeedsCsum != 0 && ip.Protocol() == packet.ProtoTCP &&
		int(gso.CsumStart) == ihl && gso.CsumOffset == tcpChecksumOffset &&
		len(ip) >= ihl+packet.TCPMinHeaderLen && packet.TCP(ip[ihl:]).DataOffset() >= packet.TCPMinHeaderLen &&
		ihl+packet.TCP(ip[ihl:]).DataOffset() < len(ip)
}
