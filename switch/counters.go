package vswitch

import (
	"errors"
	"fmt"
	"sync/atomic"

	"podnet/internal/queuedrops"
)

// DropReason names why the switch dropped a frame. Every drop increments
// exactly one reason on the port the frame arrived on.
type DropReason uint8

const (
	DropTooShort           DropReason = iota // shorter than an Ethernet header
	DropBadVirtioHeader                      // virtio-net header we cannot honour
	DropBadGSO                               // superframe that cannot be segmented
	DropUnknownEtherType                     // neither IPv4 nor ARP
	DropIPv6                                 // IPv6 is not routed yet
	DropBadIPVersion                         // IP version field is not 4
	DropBadIHL                               // IPv4 header length out of range
	DropBadTotalLength                       // IPv4 total length disagrees with the frame
	DropBadARP                               // ARP that is not Ethernet/IPv4
	DropSpoofedSource                        // source IP is not the pod's
	DropTTLExceeded                          // TTL would reach 0 (ICMP time exceeded sent)
	DropNoRoute                              // no route (ICMP unreachable sent)
	DropBlackhole                            // matched a blackhole route
	DropRemoteUnsupported                    // remote route, encapsulation not available
	DropPortGone                             // route points at a port that was removed
	DropEgressError                          // the egress device refused the frame
	DropFragNeeded                           // DF set and too big for the tunnel (ICMP frag-needed sent)
	DropUnknownSource                        // encapsulated packet from an address that is no node
	DropBadOuter                             // outer header of an encapsulated packet invalid
	DropBadInner                             // inner packet of an encapsulated packet invalid
	DropNoTransit                            // decapsulated packet for another node
	DropNATUnavailable                       // outside the cluster, and NAT outgoing is not running
	DropNATNotAllowed                        // outside the cluster from a pool without natOutgoing (ICMP admin prohibited sent)
	DropBadInnerChecksum                     // decapsulated TCP/UDP with a wrong checksum
	DropWrongVNI                             // VXLAN with another network identifier
	DropForeignInnerSource                   // decapsulated packet whose source the sending node does not route
	DropECNNotECT                            // outer CE over an inner packet that does not do ECN (RFC 6040)
	DropQueueFull                            // the kernel dropped it before the port's reader took it (queueDrops)
	numDropReasons

	// dropNone is what a classifier returns for a packet it accepts.
	dropNone = DropReason(255)
)

var dropNames = [numDropReasons]string{
	"too-short", "bad-virtio-header", "bad-gso", "unknown-ethertype", "ipv6",
	"bad-ip-version", "bad-ihl", "bad-total-length", "bad-arp", "spoofed-source", "ttl-exceeded", "no-route",
	"blackhole", "remote-unsupported", "port-gone", "egress-error",
	"frag-needed", "unknown-source", "bad-outer", "bad-inner", "no-transit",
	"nat-unavailable", "nat-not-allowed", "bad-inner-checksum",
	"wrong-vni", "foreign-inner-source", "ecn-not-ect", "queue-full",
}

var dropExplanations = [numDropReasons]string{
	"the frame is shorter than an Ethernet header",
	"the virtio-net header is missing or asks for something the switch cannot do",
	"a superframe that is not TCP/IPv4 or cannot be segmented",
	"neither IPv4 nor ARP",
	"IPv6 is not routed yet",
	"the IP version field is not 4",
	"the IPv4 header length is out of range",
	"the IPv4 total length disagrees with the frame",
	"ARP that is not Ethernet/IPv4",
	"a pod may only send from its own address",
	"the TTL would reach 0; ICMP time exceeded goes back to the sender",
	"no route, or a destination inside a pool that no node announces; ICMP net unreachable goes back",
	"the route is a blackhole (this node's own block: the address is not in use here)",
	"the route needs an encapsulation this node has not attached",
	"the route points at a pod port that was removed",
	"the egress device refused the packet",
	"DF is set and the packet does not fit the tunnel; ICMP fragmentation-needed goes back with the tunnel MTU",
	"encapsulated packets are accepted only from known nodes",
	"the outer header of an encapsulated packet is invalid",
	"the inner packet of an encapsulated packet is invalid",
	"packets from another node may only go to this node's pods or the node itself",
	"the destination is outside the cluster and NAT outgoing is not running",
	"the destination is outside the cluster and the pod's pool does not have natOutgoing; ICMP administratively prohibited goes back",
	"the inner TCP/UDP checksum is wrong",
	"VXLAN with another network identifier (VNI)",
	"the inner source is not an address the sending node routes (its blocks, borrowed addresses, its own address)",
	"the underlay marked congestion (outer ECN CE) on a packet whose transport does not do ECN: RFC 6040 says drop it, as Linux tunnels do",
	"the kernel dropped it before the switch read it: the queue it waits in (a pod's TAP, podnet0, a tunnel's receive socket) was full, because the switch had not read the ones before it yet (it was busy, or not given a CPU); a tunnel socket also counts here the rare packet whose UDP checksum the kernel refused, and a batch the kernel had merged counts once (docs/performance.md, \"Queue overflows\")",
}

// Explain says in a sentence why packets are dropped for r.
func (r DropReason) Explain() string {
	if r < numDropReasons {
		return dropExplanations[r]
	}
	return r.String()
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("drop(%d)", r)
}

// counters are one port's packet counters. The port's reader adds its rx
// counts once per batch; tx counts are added by whichever reader forwards
// to the port.
type counters struct {
	rxFrames, rxBytes atomic.Uint64
	txFrames, txBytes atomic.Uint64
	arpReplies        atomic.Uint64
	icmpErrors        atomic.Uint64 // ICMP errors the switch generated toward this port
	gsoFrames         atomic.Uint64 // superframes received
	txSuperframes     atomic.Uint64 // superframes sent whole (a tunnel's VXLANSuperframes)
	natPackets        atomic.Uint64 // packets handed to NAT outgoing
	ecnCE             atomic.Uint64 // packets from nodes whose outer header a router marked CE
	polled            atomic.Uint64 // batches of a pod's packets read by polling, not after a wake-up (replies.go)
	drops             [numDropReasons]atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

// addQueueDrops counts in s, as queue-full, what q says the kernel
// dropped before the port's reader took it (queuedrops.Counter: the
// switch never sees those frames). It makes system calls: not for under
// Switch.mu.
func addQueueDrops(s *PortStats, q *queuedrops.Counter) {
	if v := q.Count(); v > 0 {
		s.Drops[DropQueueFull.String()] += v
	}
}

// errNoQueueDrops: the connection under a tunnel's receiver does not
// count its drops.
var errNoQueueDrops = errors.New("no drop count")

// PortStats is a snapshot of one port's counters, as the API shows it.
type PortStats struct {
	Index     int    `json:"index"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Device    string `json:"device"`
	IP        string `json:"ip,omitempty"`
	Offload   bool   `json:"offload"`
	RxFrames  uint64 `json:"rxFrames"`
	RxBytes   uint64 `json:"rxBytes"`
	TxFrames  uint64 `json:"txFrames"`
	TxBytes   uint64 `json:"txBytes"`
	GSOFrames uint64 `json:"gsoFrames"`
	// TxSuperframes counts superframes a tunnel sent whole, for the
	// kernel to segment (VXLAN and IP-in-IP through their TAPs); each is also one of
	// TxFrames.
	TxSuperframes uint64 `json:"txSuperframes,omitempty"`
	ARPReplies    uint64 `json:"arpReplies"`
	ICMPErrors    uint64 `json:"icmpErrors"`
	NATPackets    uint64 `json:"natPackets"`
	// ECNCE counts packets from other nodes whose outer header arrived
	// marked CE (a router on the underlay signalled congestion) and that
	// went on with the mark in their own header (RFC 6040). Those whose
	// transport does not do ECN are dropped instead, as ecn-not-ect.
	ECNCE uint64 `json:"ecnCE,omitempty"`
	// Polled counts batches of this pod's packets read by polling
	// rather than after a wake-up: answers another port's reader took
	// (reply polling) and requests its own reader found before parking.
	Polled uint64            `json:"polled"`
	Drops  map[string]uint64 `json:"drops"`
	// ReaderRxFrames counts, for a port read by several readers (a
	// tunnel with several receive sockets), the frames each received:
	// how the kernel spread the flows. Absent with one reader.
	ReaderRxFrames []uint64 `json:"readerRxFrames,omitempty"`
}

func (c *counters) snapshot() PortStats {
	s := PortStats{
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(),
		TxFrames: c.txFrames.Load(), TxBytes: c.txBytes.Load(),
		GSOFrames: c.gsoFrames.Load(), TxSuperframes: c.txSuperframes.Load(), ARPReplies: c.arpReplies.Load(),
		ICMPErrors: c.icmpErrors.Load(), NATPackets: c.natPackets.Load(), ECNCE: c.ecnCE.Load(),
		Polled: c.polled.Load(), Drops: map[string]uint64{},
	}
	for i := range c.drops {
		if v := c.drops[i].Load(); v > 0 {
			s.Drops[DropReason(i).String()] = v
		}
	}
	return s
}
