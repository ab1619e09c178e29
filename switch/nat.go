package vswitch

import (
	"net/netip"

	"podnet/internal/packet"
	"podnet/router"
)

// NATHandler translates packets from pods to the world outside the
// cluster (package nat). Handle copies what it keeps.
type NATHandler interface {
	Handle(pkt []byte)
}

// NATConfig is the switch's view of NAT outgoing, published as a whole.
type NATConfig struct {
	// Handler takes the packets; nil: NAT is unavailable.
	Handler NATHandler
	// Allowed lists the pools whose pods may use NAT (natOutgoing true).
	Allowed []netip.Prefix
	// Pools lists every pool, disabled ones too: a destination inside one
	// is in the cluster, never NATed (calico.md §4).
	Pools []netip.Prefix
}

// SetNAT publishes a new NAT configuration.
func (s *Switch) SetNAT(c NATConfig) { s.nat.Store(&c) }

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// toNAT hands the IPv4 packet buf[ip:ip+n] from port in to NAT outgoing,
// or refuses it with an ICMP error the pod can see.
func (f *forwarder) toNAT(in *port, buf []byte, ip, n int, hdr packet.VirtioNetHdr) {
	pkt := packet.IPv4(buf[ip : ip+n])
	c := f.nat
	switch {
	case c == nil || c.Handler == nil:
		in.c.drop(DropNATUnavailable)
		f.icmpBack(in, pkt, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable)
		return
	case containsAddr(c.Pools, pkt.Dst()):
		// Inside the cluster but not routed: not NAT's business.
		in.c.drop(DropNoRoute)
		f.icmpBack(in, pkt, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable)
		return
	case !containsAddr(c.Allowed, pkt.Src()):
		in.c.drop(DropNATNotAllowed)
		f.icmpBack(in, pkt, packet.ICMPDestUnreachable, packet.ICMPAdminProhibited)
		return
	}
	if hdr.GSOType == packet.GSONone {
		if err := packet.CompleteChecksum(pkt, l3Hdr(hdr)); err != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		c.Handler.Handle(pkt)
		in.c.natPackets.Add(1)
		return
	}
	seg := f.borrowSeg()
	if segScratchLen-f.segUsed < maxSegments(pkt, hdr) {
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
		c.Handler.Handle(seg.bufs[j][packet.Headroom : packet.Headroom+seg.sizes[j]])
	}
	in.c.natPackets.Add(uint64(cnt))
}

// icmpBack sends an ICMP error about pkt to the port it came from.
func (f *forwarder) icmpBack(p *port, pkt packet.IPv4, typ, code uint8) {
	if p.kind == kindPod {
		f.icmpToPod(p, pkt, typ, code)
	}
}

// Inject delivers a packet NAT (or another local source) produced: an
// IPv4 packet for a local pod. It copies pkt; safe for concurrent use.
// Packets for anything but a local pod are dropped and counted on the
// host port.
func (s *Switch) Inject(pkt []byte) {
	ip := packet.IPv4(pkt)
	h := s.host.Load()
	if ip.Validate() != packet.ParseOK || len(pkt) > packet.MaxFrameLen-ethLen {
		if h != nil {
			h.c.drop(DropBadIPVersion)
		}
		return
	}
	r, ok := s.routes.Load().Lookup(ip.Dst())
	var eg *port
	if ok && r.Kind == router.KindLocalPod {
		if ports := *s.ports.Load(); r.Port >= 0 && r.Port < len(ports) {
			eg = ports[r.Port]
		}
	}
	if eg == nil {
		if h != nil {
			h.c.drop(DropNoRoute)
		}
		return
	}
	b := s.injectPool.Get()
	defer s.injectPool.Put(b)
	off := packet.Headroom
	n := copy(b[off:], pkt)
	eth := packet.Ethernet(b[off-ethLen : off])
	eth.SetDst(eg.mac)
	eth.SetSrc(packet.GatewayMAC)
	eth.SetEtherType(packet.EtherTypeIPv4)
	start := off - ethLen
	if eg.offload {
		start -= vnetLen
		clear(b[start : off-ethLen])
	}
	if err := eg.dev.WriteOne(b[start : off+n]); err == nil {
		eg.c.txFrames.Add(1)
		eg.c.txBytes.Add(uint64(off + n - start))
	}
}
