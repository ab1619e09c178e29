package vswitch

import (
	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// The switch moves packets from ingresses (the ports it reads: pod TAPs,
// the host TUN, tunnels) to egresses (where a route sends them: a pod
// port, the host port, a tunnel, NAT, or a drop). Every reader runs the
// same steps (forward.go):
//
//	read a batch → classify (ingress-specific checks) → TTL → FIB lookup
//	→ shape to the egress's caps (segment, complete checksums, MTU)
//	→ egress.send → ... → end of batch: flush the lanes that hold packets
//
// Offload is handled in exactly one place, shape, from what the egress
// declares in egressCaps.

// packetRef is one IPv4 packet in a reader's buffer: buf[ip:ip+n]. At
// least packet.Headroom bytes of buf lie before ip, so an egress can write
// its own headers (virtio and Ethernet for pods, outer headers for
// tunnels, the TUN's virtio header) in place.
type packetRef struct {
	buf   []byte
	ip, n int
	// gso is the packet's offload metadata, with offsets counted from the
	// IP header: GSOType TCPv4 for a TSO superframe, Flags NeedsCsum for a
	// partial transport checksum. Zero for a complete packet.
	gso packet.VirtioNetHdr
	// verified: the transport checksum was checked on the way in
	// (VXLAN's decap does), or computed by shape, so GRO need not sum it
	// again.
	verified bool
}

func (p packetRef) ipv4() packet.IPv4 { return packet.IPv4(p.buf[p.ip : p.ip+p.n]) }

func (p packetRef) superframe() bool { return p.gso.GSOType != packet.GSONone }

func (p packetRef) partialChecksum() bool {
	return p.gso.Flags&packet.VirtioNetHdrFNeedsCsum != 0
}

// egressKind says what an egress is, for the ingress rules (mayReach).
type egressKind uint8

const (
	egressPod egressKind = iota
	egressHost
	egressTunnel
	egressNAT
	egressDrop
)

// egressCaps is what an egress accepts; shape makes every packet fit.
type egressCaps struct {
	// superframes: takes a TSO superframe whole (a pod TAP with virtio
	// headers). Otherwise superframes are segmented first.
	superframes bool
	// partialChecksums: takes a transport checksum left partial (the
	// receiving kernel completes it). Otherwise shape completes it.
	partialChecksums bool
	// coalesce: segments that arrive one by one are worth merging into
	// superframes for it (GRO); only with superframes.
	coalesce bool
	// coalesceUDP: it also takes UDP superframes (GSO_UDP_L4), so GRO
	// merges the datagrams of a flow for it, from any ingress. A tunnel
	// (maxSuperframe set) takes only those that may cross it whole
	// (encap.WholeUDPSuperframe); GRO's smaller ones leave cut again.
	coalesceUDP bool
	// groUDP: GRO merges UDP for it even while it takes no superframes:
	// a tunnel that can take UDP ones, whose whole-superframe path may
	// stop at any moment (superframeGate), so that a flow's datagrams
	// take one way through the switch and keep their order.
	groUDP bool
	// maxSuperframe, if not 0, limits the superframes it takes whole to
	// those of at most this many bytes that a kernel can segment again
	// (encap.WholeTCPSuperframe); others are segmented first.
	maxSuperframe int
	// innerMTU is the largest IPv4 packet the egress carries whole; a
	// bigger one with DF set is answered with ICMP fragmentation-needed.
	// 0: no limit here.
	innerMTU int
}

// takesWhole says whether superframe p goes to an egress with c whole.
func (c egressCaps) takesWhole(p packetRef) bool {
	if !c.superframes {
		return false
	}
	if p.gso.GSOType == packet.GSOUDPL4 {
		// A device with USO takes any; IP-in-IP through a TAP with USO
		// those larger than its MTU.
		if !c.coalesceUDP {
			return false
		}
		return c.maxSuperframe == 0 || p.n <= c.maxSuperframe && encap.WholeUDPSuperframe(p.ipv4(), p.gso, c.innerMTU)
	}
	return c.maxSuperframe == 0 || p.n <= c.maxSuperframe && encap.WholeTCPSuperframe(p.ipv4(), p.gso)
}

// merges says whether GRO runs for the egress: for TCP and UDP where
// coalesce is set, for UDP alone at a tunnel that can take UDP
// superframes.
func (c egressCaps) merges() bool {
	return c.coalesce || c.groUDP
}

// egress is where a route sends packets.
type egress interface {
	kind() egressKind
	caps() egressCaps
	// send takes one packet already shaped to caps, for the route of h. It
	// writes it now or holds it in f's lane until f flushes. A refusal is
	// counted on in.
	send(f *forwarder, in ingress, p packetRef, h *hop)
}

// admitter is an egress with a policy to apply before any shaping (NAT
// outgoing: which pools may use it, and which packets are answers that go
// back routed). admit returns the hop to use instead, or false after
// counting and answering a refusal.
type admitter interface {
	admit(f *forwarder, in ingress, ip packet.IPv4, h *hop) (*hop, bool)
}

// lane is one reader's queue toward a batching egress (the host TUN, a
// tunnel). The forwarder flushes every lane that holds packets at the end
// of each batch, and earlier when scratch space runs out.
type lane interface {
	flush()
}

// batcher is an egress that queues in lanes. Its lane ID is unique in the
// switch (laneIDs), so a forwarder keeps its lanes in a slice.
type batcher interface {
	laneID() int
	newLane() lane
}

// ingress is a port the switch reads.
type ingress interface {
	stats() *counters
	// mayReach says whether packets from this ingress may leave through an
	// egress of kind k by route r, and the drop reason when not.
	mayReach(k egressKind, r *router.Route) (bool, DropReason)
	// segmented: TCP arrives as separate segments (from the host stack
	// or another node), so TCP GRO pays off. Pods send TSO superframes;
	// UDP is merged from every ingress (egressCaps.coalesceUDP).
	segmented() bool
	// reply is the egress that reaches the ingress's sender directly (a
	// pod's own port, the host port); nil: route replies by the FIB.
	reply() egress
	// icmpSource is the source address of ICMP errors about its packets.
	icmpSource() [4]byte
}

// hop is a FIB entry: the route and the egress it resolves to.
type hop struct {
	eg egress
	r  *router.Route
}

// dropEgress drops what reaches it, counted under reason: blackhole
// routes, and routes whose egress is not attached.
type dropEgress struct{ reason DropReason }

func (d *dropEgress) kind() egressKind { return egressDrop }

// caps: it takes everything whole, UDP superframes too, so that a
// dropped superframe is one drop and costs no cutting.
func (d *dropEgress) caps() egressCaps {
	return egressCaps{superframes: true, partialChecksums: true, coalesceUDP: true}
}
func (d *dropEgress) send(_ *forwarder, in ingress, _ packetRef, _ *hop) { in.stats().drop(d.reason) }

var (
	dropBlackhole   = &dropEgress{DropBlackhole}
	dropPortGone    = &dropEgress{DropPortGone}
	dropUnsupported = &dropEgress{DropRemoteUnsupported}
)
