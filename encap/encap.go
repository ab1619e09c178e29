// Package encap carries pod packets between nodes: it takes outer
// encapsulation headers off packets that arrive from the underlay (IP-in-IP,
// IP protocol 4, RFC 2003; VXLAN, UDP 4789, RFC 7348) and moves inner
// packets to other nodes over batched underlay sockets.
//
// Decapsulation and encapsulation are pure logic on []byte views
// (DecapIPIP, DecapVXLAN, EncapVXLAN) and make no syscalls. The transports
// (IPIPConn, VXLANConn) live in *_linux.go files and are thin: each embeds
// the batched datagram core (conn*_linux.go), which moves batches with
// recvmmsg/sendmmsg, uses UDP GSO/GRO where the socket is UDP, turns a
// closed socket's errors into os.ErrClosed and allocates nothing per
// packet. docs/encap.md shows the layering and what adding an
// encapsulation takes.
//
// What this package does not do: decide whether an outer source is one of
// the cluster's nodes. A raw IPPROTO_IPIP socket receives every IP-in-IP
// packet addressed to the namespace, and a VXLAN socket every datagram to
// its port, from anyone, so the caller (the switch) must check outer.Src()
// (VXLANConn.Sources()) against its node set before it forwards an inner
// packet, or any host that can reach the underlay could inject packets
// with arbitrary pod source addresses.
package encap

// Specification constants.
const (
	// IPIPOverhead is what IP-in-IP adds to an inner packet: one outer IPv4
	// header without options (RFC 2003 §3.1). Pods on IPIP routes get an
	// MTU of underlay MTU − IPIPOverhead.
	IPIPOverhead = 20
)

// Implementation constants.
const (
	// DefaultBatchSize is the number of packets one ReadBatch or one
	// sendmmsg moves when IPIPConfig.BatchSize is zero; it matches the
	// switch's batch and wireguard-go's IdealBatchSize order of magnitude.
	DefaultBatchSize = 64

	// DefaultSocketBuffer is the receive and send buffer asked for when
	// IPIPConfig.SocketBuffer is zero, in bytes. The kernel's default
	// (~208 KiB) holds fewer than 100 full-size packets, which one burst
	// from a TSO-splitting pod overflows.
	DefaultSocketBuffer = 4 << 20
)
