package vswitch

import (
	"encoding/binary"

	"podnet/internal/packet"
	"podnet/router"
)

// Receive coalescing (GRO) toward pod TAPs: segments that arrive one by
// one from other nodes or from the host TUN are merged per TCP flow into
// superframes, so the pod's kernel takes a burst in one write(2) instead
// of one per 1.4 KB segment.

// groMax bounds the packets one batch holds for coalescing: a batch of
// reads never exceeds it.
const groMax = 128

// toPodCoalesced delivers the complete IPv4 packet buf[ip:ip+n] to pod
// port eg, through the batch's GRO when eg takes superframes.
func (f *forwarder) toPodCoalesced(in, eg *port, buf []byte, ip, n int) {
	if eg.offload && f.gro.Add(buf, ip, n) {
		f.groIn = in
		return
	}
	// Not TCP (or the table is full): keep the order of what is pending.
	f.flushGRO()
	f.l3ToPod(in, eg, buf, ip, n)
}

// flushGRO writes what GRO holds.
func (f *forwarder) flushGRO() {
	f.gro.Flush(f.groEmit)
	f.groIn = nil
}

// emitGRO writes one packet GRO produced: a superframe with its virtio
// header, or a lone segment as it came.
func (f *forwarder) emitGRO(buf []byte, off, n int, hdr packet.VirtioNetHdr) {
	in := f.groIn
	ip := packet.IPv4(buf[off : off+n])
	r, ok := f.rt.Lookup(ip.Dst())
	if !ok || r.Kind != router.KindLocalPod {
		in.c.drop(DropNoRoute)
		return
	}
	eg := f.portAt(r.Port)
	if eg == nil {
		in.c.drop(DropPortGone)
		return
	}
	eth := packet.Ethernet(buf[off-ethLen : off])
	eth.SetDst(eg.mac)
	eth.SetSrc(packet.GatewayMAC)
	eth.SetEtherType(packet.EtherTypeIPv4)
	start := off - ethLen - vnetLen
	if hdr.GSOType != packet.GSONone || hdr.Flags != 0 {
		// GRO counts offsets from the IP header; the TAP from Ethernet.
		hdr.CsumStart += ethLen
		hdr.HdrLen += ethLen
		hdr.Encode(buf[start : start+vnetLen])
	} else {
		clear(buf[start : start+vnetLen])
	}
	f.countTx(in, eg, eg.dev.WriteOne(buf[start:off+n]), off+n-start)
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
