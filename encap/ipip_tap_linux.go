package encap

import (
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// An IPIPTap sends TCP superframes, and UDP ones where the kernel knows
// USO, as IP-in-IP without cutting them up.
//
// No virtio-net header asks for IP-in-IP segmentation, and a raw socket
// has none either, so without it every superframe leaves as ~45
// datagrams, each through the whole IP output path. An IPIPTap writes
// the superframe with its outer IPv4 header into a TAP of the node's own
// as an ordinary TCPv4 (or UDP) superframe (virtio-net header, Ethernet
// header to the TAP, outer IPv4 header, inner packet), and a small tc
// program on the TAP's ingress (ipipMarking; tap_program_linux.go) makes
// the kernel see it as IP-in-IP: bpf_skb_adjust_room takes the outer
// header off and puts it back with BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, which
// marks the packet as the kernel's own IP-in-IP tunnel does
// (SKB_GSO_IPXIP4, the inner header offsets).
// The kernel then forwards it out of the underlay, and the underlay
// device (tx-ipxip4-segmentation) or the kernel just before it cuts it
// into IP-in-IP packets of the inner MSS (or datagrams), each with its
// inner checksum and its outer length, ID and checksum filled in. A veth
// underlay carries it whole to the next namespace, where a raw socket
// reads it as one packet (DecapIPIP takes it; the switch forwards it as
// a superframe; a UDP one is marked for that, see Frame).
//
// The TAP, its forwarding checks (Probe, Err) and Send are forwardTap's.
// Opening one needs the bpf(2) system call (CAP_BPF or root), tc's
// clsact qdisc and cls_bpf; where any is missing OpenIPIPTap says so and
// superframes are cut in userspace as before.
type IPIPTap struct {
	forwardTap
	prog           *tapProgram
	ipID           atomic.Uint32
	outerFromInner bool
	// udp: the TAP takes UDP superframes (USO, Linux 6.2+), so Frame
	// does too (WholeUDP).
	udp bool
}

// ipipMarking is the IPIPTap's tc program: the outer IPv4 header taken
// out and put back as IP-in-IP.
var ipipMarking = marking{name: "podnet_ipip_tap", proto: packet.ProtoIPIP, room: packet.IPv4MinHeaderLen,
	flags: bpfFAdjRoomFixedGSO | bpfFAdjRoomEncapL3IP4}

// IPIPTapHeadroom is what Frame writes before the inner IPv4 header: the
// virtio-net header, then Ethernet and outer IPv4 headers.
const IPIPTapHeadroom = packet.VirtioNetHdrLen + packet.EthernetHeaderLen + packet.IPv4MinHeaderLen

// MaxIPIPTapInner is the largest inner IPv4 packet an IP-in-IP superframe
// can carry: the outer total length (16 bits) must cover it too.
const MaxIPIPTapInner = 0xffff - packet.IPv4MinHeaderLen

// ipipTapOffloadFlags: TCPv4 superframes, ECN bit included.
const ipipTapOffloadFlags = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO_ECN

// ipipTapUSOFlags adds UDP superframes (USO, Linux 6.2+; the kernel
// takes TUN_F_USO4 only with TUN_F_USO6). The kernels that know them
// take a GSO_UDP_L4 virtio header on write.
const ipipTapUSOFlags = ipipTapOffloadFlags | unix.TUN_F_USO4 | unix.TUN_F_USO6

// CheckIPIPTap says whether the daemon can send IP-in-IP superframes
// whole here (checkMarked). nil: it can.
func CheckIPIPTap() error {
	return checkMarked(packet.VirtioNetHdrLen, ipipTapOffloadFlags, ipipMarking)
}

// OpenIPIPTap creates the TAP name in the calling thread's network
// namespace, attaches its tc program, brings it up and sets its sysctls.
// local is the outer source of every frame: the node's underlay address,
// which the IP-in-IP socket is bound to. outerFromInner builds the outer
// header as IPIPConfig.OuterFromInner does (DF, and with DF the ID, from
// the inner header); otherwise DF is clear, as the socket sends.
func OpenIPIPTap(name string, local netip.Addr, outerFromInner bool) (*IPIPTap, error) {
	t := &IPIPTap{outerFromInner: outerFromInner}
	var err error
	var used int
	t.prog, used, err = t.openMarked("ipip tap", name, local, packet.VirtioNetHdrLen, ipipMarking, ipipTapUSOFlags, ipipTapOffloadFlags)
	if err != nil {
		return nil, err
	}
	t.udp = used == 0
	return t, nil
}

// WholeUDP says whether Frame takes UDP superframes (see WholeUDPSuperframe).
func (t *IPIPTap) WholeUDP() bool { return t.udp }

// MaxWholeUDPSegments is the most datagrams a UDP superframe sent whole
// may hold: what every kernel's UDP segmentation takes (UDP_MAX_SEGMENTS
// is 64, 128 on newer kernels), and what the receiving switch recognises
// (packet.MarkedUDPSegments).
const MaxWholeUDPSegments = packet.GROMaxSegments

// WholeUDPSuperframe says whether ip, with offload metadata gso (offsets
// from the IPv4 header), is a UDP superframe that can cross IP-in-IP
// whole and be recognised when it arrives so (packet.MarkedUDPSegments):
// a superframe as a kernel makes one (packet.CheckUDPSuperframe), of at
// most MaxWholeUDPSegments datagrams each within mtu, the largest inner
// packet the tunnel carries, and itself larger than mtu. A smaller one is
// sent as its datagrams. ip must be valid and cut to its total length.
func WholeUDPSuperframe(ip packet.IPv4, gso packet.VirtioNetHdr, mtu int) bool {
	if len(ip) <= mtu || packet.CheckUDPSuperframe(ip, gso) != nil || gso.Flags&packet.VirtioNetHdrFNeedsCsum == 0 {
		return false
	}
	hdrLen := ip.HeaderLen() + packet.UDPHeaderLen
	size := int(gso.GSOSize)
	return hdrLen+size <= mtu && (len(ip)-hdrLen+size-1)/size <= MaxWholeUDPSegments
}

// Frame writes the headers in the IPIPTapHeadroom bytes before buf[ip:],
// which holds the inner IPv4 packet (a superframe whose offload metadata
// is gso, its offsets counted from the inner IPv4 header), and returns
// the frame to Send; the outer destination is dst. ok is false if the
// packet cannot go this way (send it segmented instead): too little
// headroom, dst not IPv4, too big for one outer packet, or neither a
// TCPv4 superframe as a kernel writes one (WholeTCPSuperframe) nor, where
// the TAP takes them, a UDP superframe that may cross whole
// (WholeUDPSuperframe within mtu, the tunnel's inner MTU); the header
// length the kernel copies into each segment is taken from the packet,
// not gso. A UDP superframe's length field and checksum are rewritten
// for the receiver (packet.MarkUDPSegments).
func (t *IPIPTap) Frame(buf []byte, ip int, dst netip.Addr, gso packet.VirtioNetHdr, mtu int) (frame []byte, ok bool) {
	if ip < IPIPTapHeadroom || len(buf)-ip < packet.IPv4MinHeaderLen+packet.UDPHeaderLen || !dst.Is4() {
		return nil, false
	}
	in := packet.IPv4(buf[ip:])
	inner, ihl := len(in), in.HeaderLen()
	if inner > MaxIPIPTapInner {
		return nil, false
	}
	var hdrLen int
	csumOffset := uint16(tcpChecksumOffset)
	switch {
	case WholeTCPSuperframe(in, gso):
		hdrLen = ihl + packet.TCP(in[ihl:]).DataOffset()
	case t.udp && WholeUDPSuperframe(in, gso, mtu):
		hdrLen, csumOffset = ihl+packet.UDPHeaderLen, udpChecksumOffset
		packet.MarkUDPSegments(in, int(gso.GSOSize))
	default:
		return nil, false
	}
	segs := (inner - hdrLen + int(gso.GSOSize) - 1) / int(gso.GSOSize)
	f := buf[ip-IPIPTapHeadroom:]
	const innerNH = packet.EthernetHeaderLen + packet.IPv4MinHeaderLen // virtio offsets count from the Ethernet header
	packet.VirtioNetHdr{
		Flags:      packet.VirtioNetHdrFNeedsCsum,
		GSOType:    gso.GSOType,
		HdrLen:     uint16(innerNH + hdrLen),
		GSOSize:    gso.GSOSize,
		CsumStart:  uint16(innerNH + ihl),
		CsumOffset: csumOffset,
	}.Encode(f)

	// The kernel numbers the segments' outer IDs from this one on, as it
	// numbers the inner ones: with outerFromInner and DF the two run in
	// step (see IPIPConfig.OuterFromInner), otherwise each superframe
	// takes a superframe's worth of IDs.
	df := t.outerFromInner && in.DontFragment()
	id := in.ID()
	if !df {
		id = uint16(t.ipID.Add(uint32(segs)) - uint32(segs))
	}
	// The kernel copies the outer header, ECN field included, into
	// every segment, as its own tunnels' segments share one.
	t.writeOuterIPv4(f, packet.ProtoIPIP, packet.TunnelECN(in.TOS()), dst.As4(), id, df)
	return f, true
}
