package vswitch

import (
	"errors"
	"fmt"
	"net/netip"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// VXLANUnderlay carries VXLAN datagrams between nodes: encap.VXLANConn
// implements it.
type VXLANUnderlay interface {
	// ReadBatch reads UDP payloads (VXLAN header first) into bufs[i][offset:].
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	// Sources are the senders of what the last ReadBatch returned.
	Sources() []netip.Addr
	// WriteBatch sends UDP payload pkts[i] to dsts[i] (UDP GSO when the
	// kernel can).
	WriteBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error)
	BatchSize() int
	Close() error
}

// VXLANConfig describes the VXLAN path to other nodes.
type VXLANConfig struct {
	// Conn is the UDP transport. Required.
	Conn VXLANUnderlay
	// MTU is the underlay's MTU; 0 means 1500.
	MTU int
	// VNI is the cluster's VXLAN network identifier; 0 means 4096.
	VNI uint32
	// Port is the UDP port of other nodes' VTEPs; 0 means 4789.
	Port uint16
	// LocalMAC is this node's VTEP MAC, the inner Ethernet source.
	LocalMAC packet.MAC
	// Senders are extra sockets, each bound to its own source port, that
	// datagrams leave from: a flow's hash picks one (as the kernel picks
	// a source port per flow), so ECMP in the underlay can spread flows.
	// nil: everything leaves from Conn.
	Senders []VXLANUnderlay
}

// maxVXLANSenders bounds VXLANConfig.Senders.
const maxVXLANSenders = 16

// AttachVXLAN makes the switch send VXLAN routes over cfg.Conn and starts
// the reader of what other nodes send that way.
func (s *Switch) AttachVXLAN(cfg VXLANConfig) error {
	if cfg.Conn == nil {
		return errors.New("attach vxlan: Conn is required")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.VNI == 0 {
		cfg.VNI = encap.DefaultVNI
	}
	if cfg.Port == 0 {
		cfg.Port = encap.VXLANPort
	}
	if len(cfg.Senders) > maxVXLANSenders {
		return fmt.Errorf("attach vxlan: %d senders, at most %d", len(cfg.Senders), maxVXLANSenders)
	}
	senders := cfg.Senders
	if len(senders) == 0 {
		senders = []VXLANUnderlay{cfg.Conn}
	}
	p := &port{index: -3, name: "vxlan", kind: kindVXLAN, vx: cfg.Conn, vxSenders: senders, mtu: cfg.MTU, vni: cfg.VNI,
		vxPort: cfg.Port, mac: cfg.LocalMAC, done: make(chan struct{})}
	if !s.vxlan.CompareAndSwap(nil, p) {
		return errors.New("attach vxlan: already attached")
	}
	s.wg.Add(1)
	go s.routineVXLANReader(p)
	return nil
}

// routineVXLANReader decapsulates VXLAN from other nodes and delivers the
// inner packets. AttachVXLAN starts it; it exits when the conn closes.
func (s *Switch) routineVXLANReader(u *port) {
	defer s.wg.Done()
	defer close(u.done)
	s.readLoop(u, u.vx.BatchSize(),
		func(bufs [][]byte, sizes []int) (int, error) { return u.vx.ReadBatch(bufs, sizes, packet.Headroom) },
		func(f *forwarder, i int, buf []byte, size int) {
			f.fromVXLAN(u, u.vx.Sources()[i], buf, packet.Headroom, size)
		})
}

// fromVXLAN handles one VXLAN payload buf[off:off+size] sent by src.
func (f *forwarder) fromVXLAN(u *port, src netip.Addr, buf []byte, off, size int) {
	eth, reason := encap.DecapVXLAN(buf[off:off+size], u.vni)
	if reason != encap.DecapOK {
		u.c.drop(decapDropReason(reason))
		return
	}
	if !f.nodes[src] {
		u.c.drop(DropUnknownSource)
		return
	}
	if eth.EtherType() != packet.EtherTypeIPv4 {
		u.c.drop(DropUnknownEtherType)
		return
	}
	inner, perr := packet.ParseIPv4Frame(eth)
	if perr != packet.ParseOK {
		u.c.drop(DropBadInner)
		return
	}
	if !repairPartialChecksum(inner) {
		u.c.drop(DropBadInnerChecksum)
		return
	}
	ipOff := off + encap.VXLANHeaderLen + ethLen
	f.deliverInner(u, buf, ipOff, inner)
}

// deliverInner routes a decapsulated IPv4 packet, buf[ipOff:], to a
// local pod or the host.
func (f *forwarder) deliverInner(u *port, buf []byte, ipOff int, inner packet.IPv4) {
	if inner.TTL() <= 1 {
		u.c.drop(DropTTLExceeded)
		return
	}
	r, ok := f.rt.Lookup(inner.Dst())
	if !ok {
		u.c.drop(DropNoRoute)
		return
	}
	switch r.Kind {
	case router.KindLocalPod:
		eg := f.portAt(r.Port)
		if eg == nil {
			u.c.drop(DropPortGone)
			return
		}
		inner.DecrementTTL()
		f.toPodCoalesced(u, eg, buf, ipOff, len(inner))
	case router.KindHost:
		if f.host == nil {
			u.c.drop(DropPortGone)
			return
		}
		inner.DecrementTTL()
		f.queueHost(buf[ipOff-tunOffset : ipOff+len(inner)])
	case router.KindBlackhole:
		u.c.drop(DropBlackhole)
	default:
		u.c.drop(DropNoTransit)
	}
}

// toVXLAN queues the IPv4 packet buf[ip:ip+n] for node r.NextHop in
// VXLAN: inner Ethernet between VTEP MACs and the VXLAN header are
// written in the headroom before the packet. Superframes are split into
// MSS-sized segments, which the UDP socket sends as one GSO batch.
func (f *forwarder) toVXLAN(in *port, buf []byte, ip, n int, hdr packet.VirtioNetHdr, r *router.Route) {
	vx := f.vx
	if vx == nil {
		in.c.drop(DropRemoteUnsupported)
		return
	}
	dst := netip.AddrPortFrom(r.NextHop, vx.vxPort)
	pkt := packet.IPv4(buf[ip : ip+n])
	if hdr.GSOType == packet.GSONone {
		if err := packet.CompleteChecksum(pkt, l3Hdr(hdr)); err != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		if n+encap.VXLANOverhead > vx.mtu && pkt.DontFragment() {
			in.c.drop(DropFragNeeded)
			f.icmpFragNeeded(in, pkt, uint16(vx.mtu-encap.VXLANOverhead))
			return
		}
		f.queueVXLAN(vx, buf, ip, n, r, dst)
		return
	}
	seg := f.borrowSeg()
	if segScratchLen-f.segUsed < maxSegments(pkt, hdr) || f.vxRoom() < segScratchLen {
		f.flushAll()
		seg = f.borrowSeg()
	}
	cnt, err := packet.SegmentTCPv4(pkt, l3Hdr(hdr), seg.bufs[f.segUsed:], seg.sizes[f.segUsed:], packet.Headroom)
	if err != nil {
		in.c.drop(DropBadGSO)
		return
	}
	for i := 0; i < cnt; i++ {
		j := f.segUsed + i
		f.queueVXLAN(vx, seg.bufs[j], packet.Headroom, seg.sizes[j], r, dst)
	}
	f.segUsed += cnt
}

// queueVXLAN frames buf[ip:ip+n] in place and queues it.
func (f *forwarder) queueVXLAN(vx *port, buf []byte, ip, n int, r *router.Route, dst netip.AddrPort) {
	eth := packet.Ethernet(buf[ip-ethLen : ip])
	eth.SetDst(packet.MAC(r.NextHopMAC))
	eth.SetSrc(vx.mac)
	eth.SetEtherType(packet.EtherTypeIPv4)
	q := &f.vxq[int(encap.FlowSourcePort(buf[ip-ethLen:ip+n]))%len(vx.vxSenders)]
	start := encap.EncapVXLAN(buf, ip-ethLen, vx.vni)
	if len(q.pkts) == cap(q.pkts) {
		f.flushVXLAN()
	}
	q.pkts = append(q.pkts, buf[start:ip+n])
	q.dsts = append(q.dsts, dst)
}

// vxQueue holds the datagrams of one batch for one sender socket.
type vxQueue struct {
	pkts [][]byte
	dsts []netip.AddrPort
}

// flushVXLAN sends the queued datagrams, one call per sender socket.
func (f *forwarder) flushVXLAN() {
	for i := range f.vxq {
		q := &f.vxq[i]
		if len(q.pkts) > 0 && f.vx != nil && i < len(f.vx.vxSenders) {
			var bytes int
			for _, b := range q.pkts {
				bytes += len(b)
			}
			sent, err := f.vx.vxSenders[i].WriteBatch(q.pkts, q.dsts)
			f.vx.c.txFrames.Add(uint64(sent))
			f.vx.c.txBytes.Add(uint64(bytes))
			if err != nil || sent < len(q.pkts) {
				for range len(q.pkts) - sent {
					f.vx.c.drop(DropEgressError)
				}
			}
		}
		clear(q.pkts)
		q.pkts = q.pkts[:0]
		q.dsts = q.dsts[:0]
	}
}

// vxRoom is how many datagrams every sender queue can still take.
func (f *forwarder) vxRoom() int {
	room := hostBatchMax
	for i := range f.vxq {
		room = min(room, cap(f.vxq[i].pkts)-len(f.vxq[i].pkts))
	}
	return room
}
