package vswitch

import (
	"net/netip"

	"podnet/internal/packet"
	"podnet/router"
)

// Buffer layout of every frame slot (pod ports read at offset
// packet.Headroom):
//
//	[0 ........ Headroom) [virtio-net hdr, 10 B if offload] [Ethernet 14 B] [IPv4 ...]
//
// The headroom lets the switch prepend headers in place: a virtio header
// for an offload port when the frame came from a plain one, an Ethernet
// header for frames from the host TUN, and later the outer headers of
// IP-in-IP and VXLAN.
const (
	vnetLen = packet.VirtioNetHdrLen
	ethLen  = packet.EthernetHeaderLen
	// tunOffset is where IP packets start in buffers handed to the host TUN:
	// wireguard-go's tun needs at least a virtio header's room in front.
	tunOffset = 16
	// hostBatchMax bounds the packets collected for one TUN write.
	hostBatchMax = 128
	// icmpScratchLen holds one generated ICMP error with its L2 headers.
	icmpScratchLen = packet.Headroom + vnetLen + ethLen + 576
)

// segScratch holds buffers that TSO superframes are split into. Each is a
// full buffer because the TUN write coalesces segments back (GRO) in place
// and needs the room.
type segScratch struct {
	bufs  [][]byte
	sizes []int
}

const segScratchLen = 64 // a 64 KiB superframe at MSS ≥ 1024 fits

func newSegScratch() *segScratch {
	s := &segScratch{bufs: make([][]byte, segScratchLen), sizes: make([]int, segScratchLen)}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, packet.BufferSize)
	}
	return s
}

// forwarder is the per-reader-goroutine state: scratch buffers allocated
// once and reused for every batch.
type forwarder struct {
	s     *Switch
	rt    *router.Table
	ports []*port
	host  *port
	under *port
	vx    *port
	nodes NodeSet
	nat   *NATConfig

	icmp    []byte   // scratch for ARP replies and ICMP errors
	icmpVec [][]byte // one-element vector for writing icmp to the TUN

	hostBufs [][]byte // packets queued for the host TUN this batch

	remotePkts [][]byte     // inner packets queued for other nodes
	remoteDsts []netip.Addr // and their nodes

	vxq []vxQueue // VXLAN datagrams queued for other nodes, per sender socket

	gro     *packet.GRO // segments bound for pods, coalesced per flow
	groIn   *port       // the port the held segments came in on
	groEmit func(buf []byte, off, n int, hdr packet.VirtioNetHdr)

	seg     *segScratch
	segUsed int
}

func newForwarder(s *Switch) *forwarder {
	f := &forwarder{
		s:          s,
		icmp:       make([]byte, icmpScratchLen),
		icmpVec:    make([][]byte, 1),
		hostBufs:   make([][]byte, 0, hostBatchMax),
		remotePkts: make([][]byte, 0, hostBatchMax),
		remoteDsts: make([]netip.Addr, 0, hostBatchMax),

		gro: packet.NewGRO(groMax),
	}
	f.groEmit = f.emitGRO // a method value made once: no allocation per flush
	return f
}

// begin loads the snapshots for one batch.
func (f *forwarder) begin() {
	f.rt = f.s.routes.Load()
	f.ports = *f.s.ports.Load()
	f.host = f.s.host.Load()
	f.under = f.s.underlay.Load()
	f.vx = f.s.vxlan.Load()
	if f.vx != nil && len(f.vxq) < len(f.vx.vxSenders) {
		// Once per reader: queues for the VXLAN sender sockets.
		f.vxq = make([]vxQueue, len(f.vx.vxSenders))
		for i := range f.vxq {
			f.vxq[i] = vxQueue{pkts: make([][]byte, 0, hostBatchMax), dsts: make([]netip.AddrPort, 0, hostBatchMax)}
		}
	}
	f.nat = f.s.nat.Load()
	if n := f.s.nodes.Load(); n != nil {
		f.nodes = *n
	} else {
		f.nodes = nil
	}
}

// end flushes what the batch queued for the host and other nodes.
func (f *forwarder) end() {
	f.flushAll()
	f.rt, f.ports, f.host, f.under, f.vx, f.nodes, f.nat = nil, nil, nil, nil, nil, nil, nil
}

// routinePodReader forwards frames a pod sends. AddPodPort starts it; it
// exits when the port's device is closed (RemovePort, Close) and then
// closes p.done.
func (s *Switch) routinePodReader(p *port) {
	defer s.wg.Done()
	defer close(p.done)
	s.readLoop(p, s.podBatch,
		func(bufs [][]byte, sizes []int) (int, error) { return p.dev.Read(bufs, sizes, packet.Headroom) },
		func(f *forwarder, _ int, buf []byte, size int) { f.fromPod(p, buf, packet.Headroom, size) })
}

// fromPod handles one frame read from pod port in: buf[off:off+size] is
// the frame, with its virtio header first when in.offload.
func (f *forwarder) fromPod(in *port, buf []byte, off, size int) {
	var hdr packet.VirtioNetHdr
	l2 := off
	if in.offload {
		if size < vnetLen {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		if err := hdr.Decode(buf[off:]); err != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		l2 += vnetLen
	}
	end := off + size
	if end-l2 < ethLen {
		in.c.drop(DropTooShort)
		return
	}
	eth := packet.Ethernet(buf[l2:end])
	switch eth.EtherType() {
	case packet.EtherTypeARP:
		f.arp(in, eth)
		return
	case packet.EtherTypeIPv4:
	case packet.EtherTypeIPv6:
		in.c.drop(DropIPv6)
		return
	default:
		in.c.drop(DropUnknownEtherType)
		return
	}
	ip, perr := packet.ParseIPv4Frame(eth)
	if perr != packet.ParseOK {
		in.c.drop(ipDropReason(perr))
		return
	}
	if hdr.GSOType != packet.GSONone {
		in.c.gsoFrames.Add(1)
		if hdr.GSOType&^packet.GSOECN != packet.GSOTCPv4 || ip.Protocol() != packet.ProtoTCP {
			in.c.drop(DropBadGSO)
			return
		}
	}
	if ip.SrcBytes() != in.ip4 {
		in.c.drop(DropSpoofedSource)
		return
	}
	if ip.TTL() <= 1 {
		in.c.drop(DropTTLExceeded)
		f.icmpToPod(in, ip, packet.ICMPTimeExceeded, packet.ICMPTTLExceeded)
		return
	}
	r, ok := f.rt.Lookup(ip.Dst())
	if !ok {
		in.c.drop(DropNoRoute)
		f.icmpToPod(in, ip, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable)
		return
	}
	switch r.Kind {
	case router.KindLocalPod:
		eg := f.portAt(r.Port)
		if eg == nil {
			in.c.drop(DropPortGone)
			return
		}
		ip.DecrementTTL()
		eth.SetDst(eg.mac)
		eth.SetSrc(packet.GatewayMAC)
		f.toPod(in, eg, buf, off, l2, end, hdr)
	case router.KindHost:
		if f.host == nil {
			in.c.drop(DropPortGone)
			return
		}
		ip.DecrementTTL()
		f.toHost(in, buf, l2+ethLen, len(ip), hdr)
	case router.KindRemote:
		ip.DecrementTTL()
		if r.Encap == router.EncapVXLAN {
			f.toVXLAN(in, buf, l2+ethLen, len(ip), hdr, r)
		} else {
			f.toRemote(in, buf, l2+ethLen, len(ip), hdr, r.NextHop)
		}
	case router.KindNAT:
		ip.DecrementTTL()
		f.toNAT(in, buf, l2+ethLen, len(ip), hdr)
	case router.KindBlackhole:
		in.c.drop(DropBlackhole)
	default:
		in.c.drop(DropRemoteUnsupported)
	}
}

func (f *forwarder) portAt(i int) *port {
	if i < 0 || i >= len(f.ports) {
		return nil
	}
	return f.ports[i]
}

func ipDropReason(e packet.ParseError) DropReason {
	switch e {
	case packet.ErrBadVersion:
		return DropBadIPVersion
	case packet.ErrBadIHL:
		return DropBadIHL
	case packet.ErrBadTotalLength:
		return DropBadTotalLength
	default:
		return DropTooShort
	}
}

// toPod writes a frame to pod port eg. buf[l2:end] is the Ethernet frame,
// already rewritten; buf[off:l2] its virtio header when in.offload.
func (f *forwarder) toPod(in, eg *port, buf []byte, off, l2, end int, hdr packet.VirtioNetHdr) {
	var err error
	switch {
	case in.offload && eg.offload:
		// Both sides speak virtio headers: a TSO superframe with its partial
		// checksum goes through unchanged and the pod's kernel takes it as is.
		err = eg.dev.WriteOne(buf[off:end])
	case !in.offload && eg.offload:
		// Plain frames are complete; prepend an all-zero header (no GSO, no
		// checksum work) in the headroom.
		clear(buf[l2-vnetLen : l2])
		err = eg.dev.WriteOne(buf[l2-vnetLen : end])
	case in.offload && !eg.offload:
		// A plain TAP takes only complete MTU-sized frames.
		f.toPlainPod(in, eg, buf, l2, end, hdr)
		return
	default:
		err = eg.dev.WriteOne(buf[l2:end])
	}
	f.countTx(in, eg, err, end-l2)
}

func (f *forwarder) countTx(in, eg *port, err error, n int) {
	if err != nil {
		in.c.drop(DropEgressError)
		return
	}
	eg.c.txFrames.Add(1)
	eg.c.txBytes.Add(uint64(n))
}

// toPlainPod segments a superframe (or completes a partial checksum) for a
// port without offloads and writes each resulting frame.
func (f *forwarder) toPlainPod(in, eg *port, buf []byte, l2, end int, hdr packet.VirtioNetHdr) {
	ipStart := l2 + ethLen
	if hdr.GSOType == packet.GSONone {
		if err := packet.CompleteChecksum(buf[ipStart:end], l3Hdr(hdr)); err != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		f.countTx(in, eg, eg.dev.WriteOne(buf[l2:end]), end-l2)
		return
	}
	// Segments go into the unused part of the batch's scratch and are
	// written at once, so the slots stay free for the host queue.
	seg := f.borrowSeg()
	if segScratchLen-f.segUsed < maxSegments(buf[ipStart:end], hdr) {
		f.flushAll()
		seg = f.borrowSeg()
	}
	bufs, sizes := seg.bufs[f.segUsed:], seg.sizes[f.segUsed:]
	n, err := packet.SegmentTCPv4(buf[ipStart:end], l3Hdr(hdr), bufs, sizes, packet.Headroom)
	if err != nil {
		in.c.drop(DropBadGSO)
		return
	}
	ethHdr := buf[l2:ipStart]
	for i := 0; i < n; i++ {
		b := bufs[i]
		copy(b[packet.Headroom-ethLen:], ethHdr)
		frame := b[packet.Headroom-ethLen : packet.Headroom+sizes[i]]
		f.countTx(in, eg, eg.dev.WriteOne(frame), len(frame))
	}
}

// l3Hdr converts a virtio header whose offsets count from the Ethernet
// header into one counting from the IP header, as package packet wants.
func l3Hdr(h packet.VirtioNetHdr) packet.VirtioNetHdr {
	if h.CsumStart >= ethLen {
		h.CsumStart -= ethLen
	}
	if h.HdrLen >= ethLen {
		h.HdrLen -= ethLen
	}
	return h
}

// toHost queues the IPv4 packet buf[ip:ip+n] for the host TUN. Superframes
// are split into segments (the TUN write coalesces them again) and partial
// checksums completed: the TUN side wants plain packets.
func (f *forwarder) toHost(in *port, buf []byte, ip, n int, hdr packet.VirtioNetHdr) {
	pkt := buf[ip : ip+n]
	if hdr.GSOType == packet.GSONone {
		if err := packet.CompleteChecksum(pkt, l3Hdr(hdr)); err != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		// The TUN writes its own virtio header in the bytes before the
		// packet: the Ethernet header we no longer need.
		f.queueHost(buf[ip-tunOffset : ip+n])
		return
	}
	seg := f.borrowSeg()
	if segScratchLen-f.segUsed < maxSegments(pkt, hdr) || cap(f.hostBufs)-len(f.hostBufs) < segScratchLen {
		f.flushAll()
		seg = f.borrowSeg()
	}
	cnt, err := packet.SegmentTCPv4(pkt, l3Hdr(hdr), seg.bufs[f.segUsed:], seg.sizes[f.segUsed:], tunOffset)
	if err != nil {
		in.c.drop(DropBadGSO)
		return
	}
	for i := 0; i < cnt; i++ {
		j := f.segUsed + i
		f.hostBufs = append(f.hostBufs, seg.bufs[j][:tunOffset+seg.sizes[j]])
	}
	f.segUsed += cnt
}

// maxSegments bounds how many segments pkt splits into.
func maxSegments(pkt []byte, hdr packet.VirtioNetHdr) int {
	if hdr.GSOSize == 0 {
		return 1
	}
	return len(pkt)/int(hdr.GSOSize) + 1
}

func (f *forwarder) borrowSeg() *segScratch {
	if f.seg == nil {
		f.seg = f.s.segPool.Get().(*segScratch)
		f.segUsed = 0
	}
	return f.seg
}

func (f *forwarder) returnSeg() {
	if f.seg != nil {
		f.s.segPool.Put(f.seg)
		f.seg, f.segUsed = nil, 0
	}
}

// flushHost writes the queued packets to the host TUN in one call.
func (f *forwarder) flushHost() {
	if len(f.hostBufs) > 0 && f.host != nil {
		var bytes int
		for _, b := range f.hostBufs {
			bytes += len(b) - tunOffset
		}
		if _, err := f.host.tun.Write(f.hostBufs, tunOffset); err != nil {
			f.host.c.drop(DropEgressError)
		} else {
			f.host.c.txFrames.Add(uint64(len(f.hostBufs)))
			f.host.c.txBytes.Add(uint64(bytes))
		}
	}
	clear(f.hostBufs)
	f.hostBufs = f.hostBufs[:0]
}

// flushAll sends everything queued and frees the segment scratch the
// queues pointed into.
func (f *forwarder) flushAll() {
	f.flushGRO()
	f.flushVXLAN()
	f.flushRemote()
	f.flushHost()
	f.returnSeg()
}

// icmpToPod sends an ICMP error about ip back to pod port p.
func (f *forwarder) icmpToPod(p *port, ip packet.IPv4, typ, code uint8) {
	l3 := packet.Headroom + vnetLen + ethLen
	n := packet.BuildICMPError(f.icmp[l3:], ip, typ, code, 0, GatewayIP.As4(), 64)
	if n == 0 {
		return
	}
	f.writeL3ToPod(p, l3, n)
	p.c.icmpErrors.Add(1)
}

// writeL3ToPod frames the IPv4 packet f.icmp[l3:l3+n] for pod p and
// writes it.
func (f *forwarder) writeL3ToPod(p *port, l3, n int) {
	eth := packet.Ethernet(f.icmp[l3-ethLen : l3])
	eth.SetDst(p.mac)
	eth.SetSrc(packet.GatewayMAC)
	eth.SetEtherType(packet.EtherTypeIPv4)
	start := l3 - ethLen
	if p.offload {
		start -= vnetLen
		clear(f.icmp[start : start+vnetLen])
	}
	if err := p.dev.WriteOne(f.icmp[start : l3+n]); err == nil {
		p.c.txFrames.Add(1)
		p.c.txBytes.Add(uint64(l3 + n - start))
	}
}

// arp answers ARP requests from a pod with the gateway MAC, whatever
// address they ask for (proxy ARP, as Calico does on its veths): every
// destination is reached through the switch. Requests for the pod's own
// address (duplicate address detection) get no answer.
func (f *forwarder) arp(in *port, eth packet.Ethernet) {
	a, perr := packet.ParseARPFrame(eth)
	if perr != packet.ParseOK {
		in.c.drop(DropBadARP)
		return
	}
	if a.Op() != packet.ARPRequest || a.TargetIP() == in.ip {
		return // replies and probes need nothing from us
	}
	start := packet.Headroom
	l2 := start
	if in.offload {
		l2 += vnetLen
		clear(f.icmp[start:l2])
	}
	n := packet.BuildARPReply(f.icmp[l2:], a, packet.GatewayMAC)
	if n == 0 {
		return
	}
	if err := in.dev.WriteOne(f.icmp[start : l2+n]); err == nil {
		in.c.arpReplies.Add(1)
		in.c.txFrames.Add(1)
		in.c.txBytes.Add(uint64(l2 + n - start))
	}
}
