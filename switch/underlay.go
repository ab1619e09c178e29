package vswitch

import (
	"errors"
	"net/netip"

	"podnet/encap"
	"podnet/internal/packet"
)

// Underlay carries inner IPv4 packets between nodes: the IP-in-IP raw
// socket (encap.IPIPConn) implements it.
type Underlay interface {
	// ReadBatch reads encapsulated packets (outer header first) into
	// bufs[i][offset:].
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	// WriteBatch sends inner packet pkts[i] to node dsts[i].
	WriteBatch(pkts [][]byte, dsts []netip.Addr) (int, error)
	BatchSize() int
	Close() error
}

// UnderlayConfig describes the path to other nodes.
type UnderlayConfig struct {
	// Conn is the IP-in-IP transport. Required.
	Conn Underlay
	// MTU is the underlay interface's MTU; inner packets longer than
	// MTU − encap.IPIPOverhead with DF set are answered with ICMP
	// fragmentation-needed. 0 means 1500.
	MTU int
}

// NodeSet is the immutable set of node addresses the switch accepts
// encapsulated packets from.
type NodeSet map[netip.Addr]bool

// SetNodes publishes the set of known node addresses: decapsulated
// packets from any other source are dropped ("unknown-source").
func (s *Switch) SetNodes(n NodeSet) { s.nodes.Store(&n) }

// AttachUnderlay makes the switch send remote routes over cfg.Conn and
// starts the reader of what other nodes send.
func (s *Switch) AttachUnderlay(cfg UnderlayConfig) error {
	if cfg.Conn == nil {
		return errors.New("attach underlay: Conn is required")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	p := &port{index: -2, name: "underlay", kind: kindUnderlay, under: cfg.Conn, mtu: cfg.MTU, done: make(chan struct{})}
	if !s.underlay.CompareAndSwap(nil, p) {
		return errors.New("attach underlay: already attached")
	}
	s.wg.Add(1)
	go s.routineUnderlayReader(p)
	return nil
}

// routineUnderlayReader decapsulates what other nodes send and delivers
// it. AttachUnderlay starts it; it exits when the conn is closed (Close).
func (s *Switch) routineUnderlayReader(u *port) {
	defer s.wg.Done()
	defer close(u.done)
	s.readLoop(u, u.under.BatchSize(),
		func(bufs [][]byte, sizes []int) (int, error) { return u.under.ReadBatch(bufs, sizes, packet.Headroom) },
		func(f *forwarder, _ int, buf []byte, size int) { f.fromUnderlay(u, buf, packet.Headroom, size) })
}

// fromUnderlay handles one IP-in-IP packet buf[off:off+size].
func (f *forwarder) fromUnderlay(u *port, buf []byte, off, size int) {
	outer, inner, reason := encap.DecapIPIP(buf[off : off+size])
	if reason != encap.DecapOK {
		u.c.drop(decapDropReason(reason))
		return
	}
	if !f.nodes[outer.Src()] {
		u.c.drop(DropUnknownSource)
		return
	}
	f.deliverInner(u, buf, off+outer.HeaderLen(), inner)
}

func decapDropReason(r encap.DecapError) DropReason {
	switch r {
	case encap.DecapWrongVNI:
		return DropWrongVNI
	case encap.DecapTruncatedOuter, encap.DecapBadOuter, encap.DecapNotIPIP, encap.DecapOuterFragment,
		encap.DecapTruncatedVXLAN, encap.DecapBadVXLANFlags:
		return DropBadOuter
	default:
		return DropBadInner
	}
}

// l3ToPod frames the complete IPv4 packet buf[ip:ip+n] for pod port eg in
// the headroom before it and writes it.
func (f *forwarder) l3ToPod(in, eg *port, buf []byte, ip, n int) {
	eth := packet.Ethernet(buf[ip-ethLen : ip])
	eth.SetDst(eg.mac)
	eth.SetSrc(packet.GatewayMAC)
	eth.SetEtherType(packet.EtherTypeIPv4)
	start := ip - ethLen
	if eg.offload {
		start -= vnetLen
		clear(buf[start : ip-ethLen])
	}
	f.countTx(in, eg, eg.dev.WriteOne(buf[start:ip+n]), ip+n-start)
}

// queueHost queues b, an IPv4 packet at b[tunOffset:], for the host TUN.
func (f *forwarder) queueHost(b []byte) {
	if len(f.hostBufs) == cap(f.hostBufs) {
		f.flushHost()
	}
	f.hostBufs = append(f.hostBufs, b)
}

// toRemote queues the IPv4 packet buf[ip:ip+n] for node nextHop over
// IP-in-IP. Superframes are split into segments first (IP-in-IP has no
// segmentation offload on a raw socket) and partial checksums completed.
func (f *forwarder) toRemote(in *port, buf []byte, ip, n int, hdr packet.VirtioNetHdr, nextHop netip.Addr) {
	u := f.under
	if u == nil {
		in.c.drop(DropRemoteUnsupported)
		return
	}
	pkt := packet.IPv4(buf[ip : ip+n])
	if hdr.GSOType == packet.GSONone {
		if err := packet.CompleteChecksum(pkt, l3Hdr(hdr)); err != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		if n+encap.IPIPOverhead > u.mtu {
			if pkt.DontFragment() {
				in.c.drop(DropFragNeeded)
				f.icmpFragNeeded(in, pkt, uint16(u.mtu-encap.IPIPOverhead))
				return
			}
			// Without DF the kernel fragments the outer packet.
		}
		f.queueRemote(pkt, nextHop)
		return
	}
	seg := f.borrowSeg()
	if segScratchLen-f.segUsed < maxSegments(pkt, hdr) || cap(f.remotePkts)-len(f.remotePkts) < segScratchLen {
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
		f.queueRemote(seg.bufs[j][tunOffset:tunOffset+seg.sizes[j]], nextHop)
	}
	f.segUsed += cnt
}

func (f *forwarder) queueRemote(pkt []byte, dst netip.Addr) {
	if len(f.remotePkts) == cap(f.remotePkts) {
		f.flushRemote()
	}
	f.remotePkts = append(f.remotePkts, pkt)
	f.remoteDsts = append(f.remoteDsts, dst)
}

// flushRemote sends what the batch queued for other nodes in one call.
func (f *forwarder) flushRemote() {
	if len(f.remotePkts) > 0 && f.under != nil {
		var bytes int
		for _, b := range f.remotePkts {
			bytes += len(b)
		}
		sent, err := f.under.under.WriteBatch(f.remotePkts, f.remoteDsts)
		f.under.c.txFrames.Add(uint64(sent))
		f.under.c.txBytes.Add(uint64(bytes))
		if err != nil || sent < len(f.remotePkts) {
			for range len(f.remotePkts) - sent {
				f.under.c.drop(DropEgressError)
			}
		}
	}
	clear(f.remotePkts)
	f.remotePkts = f.remotePkts[:0]
	f.remoteDsts = f.remoteDsts[:0]
}

// icmpFragNeeded tells pod port p that pkt does not fit the tunnel.
func (f *forwarder) icmpFragNeeded(p *port, pkt packet.IPv4, mtu uint16) {
	l3 := packet.Headroom + vnetLen + ethLen
	n := packet.BuildICMPError(f.icmp[l3:], pkt, packet.ICMPDestUnreachable, packet.ICMPFragmentationNeeded, mtu, GatewayIP.As4(), 64)
	if n == 0 {
		return
	}
	if p.kind == kindHost {
		f.icmpVec[0] = f.icmp[l3-tunOffset : l3+n]
		if _, err := p.tun.Write(f.icmpVec, tunOffset); err == nil {
			p.c.icmpErrors.Add(1)
		}
		f.icmpVec[0] = nil
		return
	}
	f.writeL3ToPod(p, l3, n)
	p.c.icmpErrors.Add(1)
}
