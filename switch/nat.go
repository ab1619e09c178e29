package vswitch

import (
	"net/netip"

	"podnet/internal/packet"
	"podnet/router"
)

// NATHandler translates packets from pods to the world outside the
// cluster (package nat). HandleOffload takes the packet buf[off:], whose
// offload metadata is hdr (offsets counted from the IPv4 header: a
// partial checksum, a TCP superframe, a UDP one); the off bytes before it
// are free for headers, and the packet itself may be rewritten. It
// copies what it keeps.
type NATHandler interface {
	HandleOffload(buf []byte, off int, hdr packet.VirtioNetHdr)
}

// NATConfig is the switch's view of NAT outgoing, published as a whole.
type NATConfig struct {
	// Handler takes the packets; nil: NAT is unavailable.
	Handler NATHandler
	// Allowed lists the pools whose pods may use NAT (natOutgoing true).
	Allowed []netip.Prefix
	// Pools lists every pool, disabled ones too: a destination inside one
	// is in the cluster, never NATed (Calico's rule: natOutgoing applies to
	// destinations outside all IP pools).
	Pools []netip.Prefix
}

// SetNAT publishes a new NAT configuration.
func (s *Switch) SetNAT(c NATConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.att.nat = &natEgress{cfg: c}
	s.recompileLocked()
}

// natEgress is where routes of kind nat send: the NAT handler, for pods
// of pools that allow it.
type natEgress struct{ cfg NATConfig }

func (e *natEgress) kind() egressKind { return egressNAT }

// caps: NAT takes a pod's TSO superframe whole, partial checksum and
// all: its netstack treats it as one large TCP segment and, like a NIC
// driver's stack, trusts the checksums of what the node's own pods send
// (package nat). Cutting it into MSS segments first cost one netstack
// pass per segment, most of NAT's CPU. A burst of one flow's UDP
// datagrams is merged for it, and leaves the host socket in one
// UDP_SEGMENT send instead of one send each.
func (e *natEgress) caps() egressCaps {
	return egressCaps{superframes: true, partialChecksums: true, coalesce: true, coalesceUDP: true}
}

// admit sends answers to connections that came in from outside back
// through the node (see inboundFlows), and refuses, with an ICMP error the
// pod can see, what NAT must not take.
func (e *natEgress) admit(f *forwarder, in ingress, ip packet.IPv4, h *hop) (*hop, bool) {
	c := &e.cfg
	if f.fib.hostHop != nil && f.s.inbound.isReply(ip, f.now, f.dry == nil) {
		return f.fib.hostHop, true
	}
	switch {
	case c.Handler == nil:
		in.stats().drop(DropNATUnavailable)
		f.icmpError(in, ip, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable, 0)
		return nil, false
	case containsAddr(c.Pools, ip.Dst()):
		// Inside the cluster but not routed: not NAT's business.
		in.stats().drop(DropNoRoute)
		f.icmpError(in, ip, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable, 0)
		return nil, false
	case !containsAddr(c.Allowed, ip.Src()):
		in.stats().drop(DropNATNotAllowed)
		f.icmpError(in, ip, packet.ICMPDestUnreachable, packet.ICMPAdminProhibited, 0)
		return nil, false
	}
	return h, true
}

func (e *natEgress) send(_ *forwarder, in ingress, p packetRef, _ *hop) {
	e.cfg.Handler.HandleOffload(p.buf[:p.ip+p.n], p.ip, p.gso)
	in.stats().natPackets.Add(1)
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Inject delivers a packet NAT (or another local source) produced: an
// IPv4 packet for a local pod, with its offload metadata (hdr, offsets
// counted from the IP header; zero for a complete packet): a partial
// checksum, a TCP superframe or a UDP one (GSO_UDP_L4). A pod that takes
// it gets it as it is; for one that does not, it is completed or cut into
// segments here. Inject copies pkt; safe for concurrent use. Packets for
// anything but a local pod are dropped and counted on the host port.
func (s *Switch) Inject(pkt []byte, hdr packet.VirtioNetHdr) { s.InjectInPlace(pkt, 0, hdr) }

// InjectInPlace is Inject for the packet buf[off:] whose sender leaves
// the off bytes before it free: with at least packet.Headroom of them,
// the Ethernet and virtio-net headers are written there and the packet
// goes out without a copy (a download through NAT is one copy lighter).
// buf is the switch's until InjectInPlace returns.
func (s *Switch) InjectInPlace(buf []byte, off int, hdr packet.VirtioNetHdr) {
	var in ingress = &s.noHost
	if h := s.host.Load(); h != nil {
		in = h
	}
	ip := packet.IPv4(buf[off:])
	if perr := ip.Validate(); perr != packet.ParseOK {
		in.stats().drop(ipDropReason(perr))
		return
	}
	ip = ip[:ip.TotalLen()] // the buffer may run on past the packet
	if len(ip) > packet.MaxFrameLen-ethLen {
		in.stats().drop(DropBadTotalLength)
		return
	}
	if !injectable(hdr, ip) {
		in.stats().drop(DropBadGSO)
		return
	}
	h, ok := s.fib.Load().lookup(ip.Dst())
	if !ok || h.eg.kind() != egressPod {
		in.stats().drop(DropNoRoute)
		return
	}
	if !h.eg.caps().takes(hdr) {
		s.injectSegments(in, ip, hdr, h)
		return
	}
	if off >= packet.Headroom {
		h.eg.send(nil, in, packetRef{buf: buf, ip: off, n: len(ip), gso: hdr}, h)
		return
	}
	b := s.injectPool.Get()
	defer s.injectPool.Put(b)
	n := copy(b[packet.Headroom:], ip)
	h.eg.send(nil, in, packetRef{buf: b[:], ip: packet.Headroom, n: n, gso: hdr}, h)
}

// injectable says whether hdr is offload metadata Inject can honour for
// ip: a partial checksum inside the transport header, a TCP superframe of
// TCP (with the ECN bit too: its head has CWR, as a kernel's GRO marks
// one), a UDP superframe of UDP.
func injectable(hdr packet.VirtioNetHdr, ip packet.IPv4) bool {
	if !csumInTransport(hdr, 0, ip) {
		return false
	}
	switch hdr.GSOType &^ packet.GSOECN {
	case packet.GSONone:
		return hdr.GSOType == packet.GSONone
	case packet.GSOTCPv4:
		return ip.Protocol() == packet.ProtoTCP
	case packet.GSOUDPL4:
		return ip.Protocol() == packet.ProtoUDP && hdr.GSOType == packet.GSOUDPL4
	}
	return false
}

// takes says whether an egress with caps c takes a packet with offload
// metadata hdr as it is.
func (c egressCaps) takes(hdr packet.VirtioNetHdr) bool {
	switch hdr.GSOType &^ packet.GSOECN {
	case packet.GSOTCPv4:
		return c.superframes && c.maxSuperframe == 0 // a limit: cut it (injected packets are for pods)
	case packet.GSOUDPL4:
		return c.coalesceUDP
	}
	return c.partialChecksums || hdr.Flags&packet.VirtioNetHdrFNeedsCsum == 0
}

// injectSegments sends an injected superframe, or a packet with a partial
// checksum, as complete packets to a pod that does not take it.
func (s *Switch) injectSegments(in ingress, ip packet.IPv4, hdr packet.VirtioNetHdr, h *hop) {
	seg := s.segPool.Get().(*segScratch)
	defer s.segPool.Put(seg)
	for first := 0; ; {
		segment := packet.SegmentTCPv4From // also completes a lone packet's partial checksum
		if hdr.GSOType == packet.GSOUDPL4 {
			segment = packet.SegmentUDPv4From
		}
		cnt, total, err := segment(ip, hdr, first, seg.bufs, seg.sizes, packet.Headroom)
		if err != nil {
			in.stats().drop(DropBadGSO)
			return
		}
		for i := range cnt {
			h.eg.send(nil, in, packetRef{buf: seg.bufs[i], ip: packet.Headroom, n: seg.sizes[i]}, h)
		}
		if first += cnt; first == total {
			return
		}
	}
}

// countOnly stands in as the ingress of injected packets when no host
// port is attached: their drops are counted, nowhere shown.
type countOnly struct{ c counters }

func (c *countOnly) stats() *counters                                      { return &c.c }
func (c *countOnly) mayReach(egressKind, *router.Route) (bool, DropReason) { return true, 0 }
func (c *countOnly) segmented() bool                                       { return false }
func (c *countOnly) reply() egress                                         { return nil }
func (c *countOnly) icmpSource() [4]byte                                   { return GatewayIP.As4() }
