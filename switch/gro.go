package vswitch

import (
	"encoding/binary"

	"podnet/internal/packet"
)

// Receive coalescing (GRO) toward pod TAPs and podnet0: TCP segments that
// arrive one by one from other nodes or from the host TUN, and UDP
// datagrams from anywhere, are merged per flow into superframes, so the
// receiving kernel takes a burst in one write(2) instead of one per
// packet.

// groMax bounds the packets one batch holds for coalescing: a batch of
// reads never exceeds it.
const groMax = 128

// coalesce offers p to GRO when the egress's caps and the ingress make
// merging worth it, and reports whether GRO took it. A packet GRO refuses
// first has what GRO holds written, so its flow stays in order.
func (f *forwarder) coalesce(in ingress, p packetRef, h *hop, caps egressCaps) bool {
	if p.superframe() {
		// Already merged (a superpacket from a tunnel): keep the order of
		// what is held.
		f.flushGRO()
		return false
	}
	ip := p.ipv4()
	if r, ok := f.route(ip.Dst()); !ok || r != h {
		// emitGRO routes what GRO gives back by its destination, so only
		// a packet going where the FIB sends it may be held: not a pod's
		// answer to an inbound flow, which NAT's admit sent to the host.
		f.flushGRO()
		return false
	}
	opts := packet.GROOpts{Verified: p.verified}
	switch ip.Protocol() {
	case packet.ProtoTCP:
		if !caps.coalesce || !in.segmented() {
			return false
		}
	case packet.ProtoUDP:
		if !caps.coalesceUDP && !caps.groUDP {
			return false
		}
		opts.UDP = true
	default:
		return false
	}
	if p.partialChecksum() {
		// GRO trusts a partial checksum only where the kernel puts it.
		if !standardPartial(ip, p.gso) {
			f.flushGRO()
			return false
		}
		opts.Partial = true
	}
	if f.gro.AddWith(p.buf, p.ip, p.n, opts) {
		f.groIn = in
		return true
	}
	f.flushGRO() // the table is full
	return false
}

// standardPartial says whether a partial checksum starts right after the
// IPv4 header at the protocol's checksum field, as every kernel sends it.
func standardPartial(ip packet.IPv4, h packet.VirtioNetHdr) bool {
	if int(h.CsumStart) != ip.HeaderLen() {
		return false
	}
	switch ip.Protocol() {
	case packet.ProtoTCP:
		return h.CsumOffset == 16
	case packet.ProtoUDP:
		return h.CsumOffset == 6
	}
	return false
}

// flushGRO writes what GRO holds. Cutting what GRO gives back (emitGRO)
// may write out the lanes to make room (segment), which calls it again:
// that inner call does nothing, and the flush goes on.
func (f *forwarder) flushGRO() {
	if f.groIn == nil || f.groFlushing {
		return
	}
	f.groFlushing = true
	f.gro.Flush(f.groEmit)
	f.groFlushing = false
	f.groIn = nil
}

// emitGRO sends one packet GRO produced, a superframe with its offload
// metadata or a lone segment, to the egress its route resolves to (the
// batch's FIB snapshot resolves it as when it was taken). A superframe
// the egress does not take whole leaves as its datagrams: a tunnel's UDP
// one within its MTU, or any once the tunnel's whole-superframe path has
// stopped, which may happen during the batch's own flushes.
func (f *forwarder) emitGRO(buf []byte, off, n int, hdr packet.VirtioNetHdr) {
	in := f.groIn
	h, ok := f.route(packet.IPv4(buf[off : off+n]).Dst())
	if !ok {
		in.stats().drop(DropNoRoute)
		return
	}
	p := packetRef{buf: buf, ip: off, n: n, gso: hdr}
	if p.superframe() && !h.eg.caps().takesWhole(p) {
		f.segment(in, p, h)
		return
	}
	h.eg.send(f, in, p, h)
}

// repairPartialChecksum completes a TCP or UDP checksum that a sender
// left partial: a Linux VXLAN peer on a veth underlay sends inner packets
// whose checksum field holds only the pseudo-header sum (the offload that
// would have finished it never ran). It reports false for a checksum that
// is simply wrong.
func repairPartialChecksum(ip packet.IPv4) bool {
	proto := ip.Protocol()
	if (proto != packet.ProtoTCP && proto != packet.ProtoUDP) || ip.IsFragment() {
		return true
	}
	if packet.TransportChecksumValid(ip) {
		return true
	}
	p := ip.Payload()
	off := 16 // TCP checksum
	if proto == packet.ProtoUDP {
		off = 6
	}
	if len(p) < off+2 {
		return false
	}
	partial := packet.Fold(packet.PseudoHeaderSum(proto, ip.SrcBytes(), ip.DstBytes(), uint16(len(p))))
	if binary.BigEndian.Uint16(p[off:]) != partial {
		return false
	}
	binary.BigEndian.PutUint16(p[off:], packet.TransportChecksum(ip))
	return true
}
