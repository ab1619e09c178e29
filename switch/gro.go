package vswitch

import (
	"encoding/binary"

	"podnet/internal/packet"
)

// Receive coalescing (GRO) toward pod TAPs: segments that arrive one by
// one from other nodes or from the host TUN are merged per TCP flow into
// superframes, so the pod's kernel takes a burst in one write(2) instead
// of one per 1.4 KB segment.

// groMax bounds the packets one batch holds for coalescing: a batch of
// reads never exceeds it.
const groMax = 128

// flushGRO writes what GRO holds.
// groAdd offers p to GRO, without summing its checksum again when the
// ingress verified it.
func (f *forwarder) groAdd(p packetRef) bool {
	if p.verified {
		return f.gro.AddVerified(p.buf, p.ip, p.n)
	}
	return f.gro.Add(p.buf, p.ip, p.n)
}

func (f *forwarder) flushGRO() {
	if f.groIn == nil {
		return
	}
	f.gro.Flush(f.groEmit)
	f.groIn = nil
}

// emitGRO sends one packet GRO produced, a superframe with its offload
// metadata or a lone segment, to the pod its route resolves to.
func (f *forwarder) emitGRO(buf []byte, off, n int, hdr packet.VirtioNetHdr) {
	in := f.groIn
	h, ok := f.fib.lookup(packet.IPv4(buf[off : off+n]).Dst())
	if !ok || h.eg.kind() != egressPod {
		in.stats().drop(DropNoRoute)
		return
	}
	h.eg.send(f, in, packetRef{buf: buf, ip: off, n: n, gso: hdr}, h)
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
