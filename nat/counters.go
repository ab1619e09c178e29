package nat

import (
	"sync/atomic"
)

// DropReason is why NAT dropped a packet or refused a flow. Its String is
// the key in Stats.Drops, so the names are stable.
type DropReason uint8

const (
	// DropMalformed: the IPv4 or transport header is truncated or its
	// lengths are inconsistent.
	DropMalformed DropReason = iota
	// DropBadDestination: a destination no packet from a pod may reach
	// through the node: loopback, 0/8, multicast, broadcast or class E.
	// The kernel's MASQUERADE path treats these as martians; here they
	// would reach the node's own local services through host sockets.
	DropBadDestination
	// DropUnsupportedProtocol: neither TCP, UDP nor ICMP.
	DropUnsupportedProtocol
	// DropUnsupportedICMP: an ICMP message other than an echo request
	// (pods' own errors and other queries are not translated).
	DropUnsupportedICMP
	// DropFragment: a fragmented UDP or ICMP datagram. Only TCP goes
	// through the netstack, which reassembles; host datagram sockets
	// need the whole datagram.
	DropFragment
	// DropTableFull: a new flow while the table holds MaxEntries.
	DropTableFull
	// DropPortsExhausted: no free local port in PortMin..PortMax.
	DropPortsExhausted
	// DropSocket: opening or binding a host socket failed for another
	// reason (EMFILE, EACCES for ping sockets, ...).
	DropSocket
	// DropDialRefused: the remote refused a TCP connection; the pod got
	// a RST.
	DropDialRefused
	// DropDialUnreachable: the remote was unreachable or did not answer
	// in time; the pod got an ICMP host unreachable.
	DropDialUnreachable
	// DropDialError: a TCP dial failed for another reason; the pod got a
	// RST.
	DropDialError
	// DropEndpoint: the netstack could not complete the handshake with
	// the pod after the remote accepted.
	DropEndpoint
	// DropSend: a host socket refused a datagram (send buffer full,
	// pending error).
	DropSend
	// DropClosed: a packet arrived after Close.
	DropClosed
	// DropNetstackOut: the netstack produced something that is not a
	// valid IPv4 packet (never expected; counted, not delivered).
	DropNetstackOut
	// DropTruncated: a host socket read more than one IPv4 packet holds:
	// UDP replies the kernel merged past 64 KiB (only where the node's GRO
	// limit was raised above that). The read is lost.
	DropTruncated
	// DropICMPError: a host socket reported an ICMP error that could not
	// be turned into an error for the pod (quote too short, forbidden by
	// RFC 1812 §4.3.2.7).
	DropICMPError
	// DropDialsPending: a pod's connection request while it already has
	// Config.MaxDialsPerPod dials waiting for their remotes; the SYN is
	// ignored and the pod retries it, as when a listen queue is full.
	DropDialsPending
	// DropNoFlow: a packet steered to the packet path's TAP for a port
	// whose connection is gone, or from another remote than the
	// connection's.
	DropNoFlow
	// DropQueueFull: a reply the tc program steered into the packet
	// path's TAP while its queue was full, because NAT had not read the
	// ones before it yet; the kernel dropped it (the TAP's tx_dropped
	// since the path was set up).
	DropQueueFull

	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropMalformed:           "malformed",
	DropBadDestination:      "bad-destination",
	DropUnsupportedProtocol: "unsupported-protocol",
	DropUnsupportedICMP:     "unsupported-icmp",
	DropFragment:            "fragment",
	DropTableFull:           "table-full",
	DropPortsExhausted:      "ports-exhausted",
	DropSocket:              "socket-error",
	DropDialRefused:         "dial-refused",
	DropDialUnreachable:     "dial-unreachable",
	DropDialError:           "dial-error",
	DropEndpoint:            "endpoint-error",
	DropSend:                "send-error",
	DropClosed:              "closed",
	DropNetstackOut:         "netstack-invalid",
	DropTruncated:           "truncated",
	DropICMPError:           "icmp-error-untranslatable",
	DropDialsPending:        "dials-pending",
	DropNoFlow:              "no-flow",
	DropQueueFull:           "queue-full",
}

// String returns the short kebab-case name used in Stats.Drops.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// counters are the per-instance drop and flow counters. They are written
// from Handle and the flow goroutines without locks.
type counters struct {
	drops [numDropReasons]atomic.Uint64
	// conns counts flows ever admitted to the table; packetConns those
	// of them on the packet path.
	conns, packetConns atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.drops[r].Add(1) }

// dropN counts n packets dropped for r at once (the datagrams of a UDP
// superframe).
func (c *counters) dropN(r DropReason, n int) { c.drops[r].Add(uint64(n)) }

// Stats is a snapshot of the NAT's counters.
type Stats struct {
	// Entries is the number of flows in the table, closing ones included.
	Entries int `json:"entries"`
	// ByProto counts Entries by protocol ("tcp", "udp", "icmp").
	ByProto map[string]int `json:"byProto"`
	// Drops counts dropped packets and refused flows by DropReason name.
	// Every reason is present, zero or not.
	Drops map[string]uint64 `json:"drops"`
	// PortsInUse is the number of host TCP and UDP sockets holding a local
	// port.
	PortsInUse int `json:"portsInUse"`
	// PortsTotal is the number of local ports those sockets draw from:
	// PortMax-PortMin+1 (or the kernel's ephemeral range) for each of TCP
	// and UDP.
	PortsTotal int `json:"portsTotal"`
	// ConnsTotal counts flows ever admitted to the table.
	ConnsTotal uint64 `json:"connsTotal"`
	// PacketConnsTotal counts the TCP connections of ConnsTotal that
	// took the packet path.
	PacketConnsTotal uint64 `json:"packetConnsTotal"`
	// TCPPath says how new TCP connections go: "packet" (for remotes
	// routed out of the underlay), or "netstack" and why.
	TCPPath string `json:"tcpPath"`
}
