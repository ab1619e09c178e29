package encap

import (
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// An IPIPTap sends TCP superframes as IP-in-IP without cutting them up.
//
// No virtio-net header asks for IP-in-IP segmentation, and a raw socket
// has none either, so without it every superframe leaves as ~45
// datagrams, each through the whole IP output path. An IPIPTap writes
// the superframe with its outer IPv4 header into a TAP of the node's own
// as an ordinary TCPv4 superframe (virtio-net header, Ethernet header to
// the TAP, outer IPv4 header, inner packet), and a small tc program on
// the TAP's ingress (ipipMarking; tap_program_linux.go) makes the kernel
// see it as IP-in-IP: bpf_skb_adjust_room takes the outer header off and
// puts it back with BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, which marks the packet
// as the kernel's own IP-in-IP tunnel does (SKB_GSO_IPXIP4, the inner
// header offsets).
// The kernel then forwards it out of the underlay, and the underlay
// device (tx-ipxip4-segmentation) or the kernel just before it cuts it
// into IP-in-IP packets of the inner MSS, each with its inner TCP
// checksum and its outer length, ID and checksum filled in. A veth
// underlay carries it whole to the next namespace, where a raw socket
// reads it as one packet (DecapIPIP takes it; the switch forwards it as
// a superframe).
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
	if t.prog, err = t.openMarked("ipip tap", name, local, packet.VirtioNetHdrLen, ipipTapOffloadFlags, ipipMarking); err != nil {
		return nil, err
	}
	return t, nil
}

// Frame writes the headers in the IPIPTapHeadroom bytes before buf[ip:],
// which holds the inner IPv4 packet (a superframe whose offload metadata
// is gso, its offsets counted from the inner IPv4 header), and returns
// the frame to Send; the outer destination is dst. ok is false if the
// packet cannot go this way (send it segmented instead): too little
// headroom, dst not IPv4, too big for one outer packet, or not a TCPv4
// superframe as a kernel writes one (WholeTCPSuperframe); the header
// length the kernel copies into each segment is taken from the packet,
// not gso.
func (t *IPIPTap) Frame(buf []byte, ip int, dst netip.Addr, gso packet.VirtioNetHdr) (frame []byte, ok bool) {
	if ip < IPIPTapHeadroom || len(buf)-ip < packet.IPv4MinHeaderLen+packet.TCPMinHeaderLen || !dst.Is4() {
		return nil, false
	}
	in := packet.IPv4(buf[ip:])
	inner, ihl := len(in), in.HeaderLen()
	if inner > MaxIPIPTapInner || !WholeTCPSuperframe(in, gso) {
		return nil, false
	}
	hdrLen := ihl + packet.TCP(in[ihl:]).DataOffset()
	segs := (inner - hdrLen + int(gso.GSOSize) - 1) / int(gso.GSOSize)
	f := buf[ip-IPIPTapHeadroom:]
	const innerNH = packet.EthernetHeaderLen + packet.IPv4MinHeaderLen // virtio offsets count from the Ethernet header
	packet.VirtioNetHdr{
		Flags:      packet.VirtioNetHdrFNeedsCsum,
		GSOType:    gso.GSOType,
		HdrLen:     uint16(innerNH + hdrLen),
		GSOSize:    gso.GSOSize,
		CsumStart:  uint16(innerNH + ihl),
		CsumOffset: tcpChecksumOffset,
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
