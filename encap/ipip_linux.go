package encap

import (
	"net/netip"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// IPIPConfig configures ListenIPIP. The zero value is usable.
type IPIPConfig struct {
	// Local, if valid, binds the socket to this underlay IPv4 address: it
	// becomes the outer source of every packet sent, and only IP-in-IP
	// packets addressed to it are received. The zero Addr lets routing pick
	// the outer source per destination and receives IP-in-IP addressed to
	// any address of the namespace.
	Local netip.Addr

	// BatchSize is the most packets one ReadBatch returns and one sendmmsg
	// call carries. Zero means DefaultBatchSize.
	BatchSize int

	// SocketBuffer is the size asked for the socket's receive and send
	// buffers, in bytes. Zero means DefaultSocketBuffer. The FORCE options
	// are tried first (they need CAP_NET_ADMIN and ignore
	// net.core.rmem_max/wmem_max); without the capability the plain options
	// are used and the kernel caps them at the sysctl limits.
	SocketBuffer int

	// OuterFromInner makes the conn build each outer header itself
	// (IP_HDRINCL) instead of the kernel: DF is copied from the inner
	// header (RFC 2003 §3.1), and so is the IP ID when DF is set, so the
	// outer IDs of each inner flow run in step with its inner IDs. The
	// kernel's outer IDs come from one counter per destination, so two
	// flows to the same node interleave them, and receive GRO then merges
	// nothing: Linux 6.18 merges only segments whose outer IDs increment
	// or stay fixed (older kernels skipped that check for outer DF).
	// Without DF the ID is left to the kernel, and a packet too big for
	// the device is sent with the kernel's header instead (a header from
	// the message is never fragmented). False: the kernel builds the
	// header, DF clear, as described on IPIPConn.
	//
	// The price of an outer DF: where the underlay's path MTU is smaller
	// than the local link's, the DF packets that do not fit are dropped
	// on the way, and the ICMP that says so reaches this node, not the
	// pod. Turn it on only where nodes share a link or the path MTU is
	// the link MTU. Routing (policy rules, IPsec selectors) sees packets
	// under a header from the message as protocol 255, not 4.
	OuterFromInner bool
}

// IPIPConn sends inner IPv4 packets to other nodes inside IP-in-IP and
// receives IP-in-IP packets from them, in batches, on raw IPPROTO_IPIP
// sockets: one receives, and a second one sends. ReadBatch, Sources, OuterTOS,
// BatchSize, the read deadline and Close come from the batched datagram
// core (see docs/encap.md).
//
// The sending socket is blocking, which keeps it off Go's netpoller (the
// poller would wake a thread for every datagram sent: see sendTimeout in
// conn_linux.go), and a filter drops the copy of every IP-in-IP packet it
// would otherwise receive.
//
// By default the kernel builds the outer header from the destination and
// its routing table (protocol 4, TTL from net.ipv4.ip_default_ttl, outer
// source from Local or the route), with the ECN field RFC 6040 asks for
// (IPIPOuterECN: the inner one, CE as ECT(0); DSCP 0), given with IP_TOS
// per message. With IPIPConfig.OuterFromInner
// the conn builds it (see there). Either way the caller passes the inner
// packet alone. On receive the raw socket delivers the outer header too;
// take it apart with DecapIPIP and check the outer source against the
// node set.
//
// Outer DF: the sockets set IP_MTU_DISCOVER to IP_PMTUDISC_DONT, so outer
// packets leave with DF clear and the kernel fragments those larger than
// the route's MTU (the receiving kernel reassembles them before the raw
// socket sees them). Path MTU is enforced one level up instead: the switch
// answers an inner packet that has DF set and is larger than underlay MTU
// − IPIPOverhead with ICMP fragmentation-needed (packet.BuildICMPError), as
// a kernel tunnel would. The price is that a path MTU smaller than the
// local link's is never learned; the underlay fragments instead of
// dropping. OuterFromInner copies the inner DF into the outer header
// instead, for packets that fit the device.
//
// Coexistence with the kernel's ipip module: when it is loaded, every
// namespace has a fallback device tunl0. If tunl0 (or another ipip device
// matching the peer) is up in the same namespace, the kernel decapsulates
// the same packets and delivers the inner ones itself as well; if nothing
// matches, it answers each packet with ICMP port unreachable. podnet's node
// namespace should have no up kernel ipip device.
//
// ReadBatch may be called from one goroutine at a time (calls are
// serialised), WriteBatch likewise; a read and a write may run at the same
// time. Close may be called from any goroutine.
type IPIPConn struct {
	batchConn
	local netip.Addr
	ttl   uint8 // outer TTL with OuterFromInner
}

// ListenIPIP opens the raw IP-in-IP sockets in the calling thread's
// network namespace (use netnsutil.Do to open them elsewhere). It needs
// CAP_NET_RAW.
func ListenIPIP(cfg IPIPConfig) (*IPIPConn, error) {
	c := &IPIPConn{local: cfg.Local, ttl: defaultTTL}
	s := socketSpec{
		name: "ipip", typ: unix.SOCK_RAW, proto: unix.IPPROTO_IPIP,
		local: cfg.Local, batch: cfg.BatchSize, buffer: cfg.SocketBuffer,
		sender: true, outerECN: IPIPOuterECN,
	}
	if cfg.OuterFromInner {
		s.header = packet.IPv4MinHeaderLen
	}
	if err := c.open(s); err != nil {
		return nil, err
	}
	if cfg.OuterFromInner {
		// The TTL the kernel would have used (net.ipv4.ip_default_ttl,
		// read once, here).
		c.raw.Control(func(fd uintptr) {
			if ttl, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL); err == nil && ttl > 0 && ttl < 256 {
				c.ttl = uint8(ttl)
			}
		})
		c.buildHeader = c.outerFromInner
	}
	return c, nil
}

// defaultTTL is the outer TTL if the socket's own cannot be read.
const defaultTTL = 64

// outerFromInner writes the outer IPv4 header for inner to dst into
// outer (20 bytes), for IP_HDRINCL: version and IHL, DF and (with DF) the
// ID copied from inner, the TTL, protocol 4, the bound source (zero: the
// kernel picks one by route) and dst. The kernel fills in the total
// length and checksum, and an ID of zero without DF.
func (c *IPIPConn) outerFromInner(outer, inner []byte, dst netip.Addr) {
	o := packet.IPv4(outer)
	clear(o)
	o[0] = 4<<4 | packet.IPv4MinHeaderLen/4 // version, IHL
	if in := packet.IPv4(inner); len(in) >= packet.IPv4MinHeaderLen && in[0]>>4 == 4 && in.DontFragment() {
		o.SetID(in.ID())
		o[6] = packet.IPv4FlagDontFragment << 5 // flags DF, offset 0
	}
	o[8] = c.ttl
	o[9] = packet.ProtoIPIP
	if c.local.IsValid() {
		o.SetSrc(c.local.As4())
	}
	o.SetDst(dst.As4())
}

// Local returns the address the socket is bound to, or the zero Addr.
func (c *IPIPConn) Local() netip.Addr { return c.local }

// WriteBatch sends each inner IPv4 packet pkts[i] to the node dsts[i]
// inside IP-in-IP, with the outer header described on IPIPConn. It sends
// in sendmmsg calls of up to BatchSize() packets, waits for buffer space
// when the socket is full (a second at most: then the rest of the write
// is refused), and returns how many packets the kernel accepted. A packet
// the kernel refuses (no route to its node, too big, an empty packet, a
// non-IPv4 destination) is skipped and its error joined into the returned
// error; the rest are still sent. After Close it returns os.ErrClosed.
//
// It allocates nothing unless a packet is refused. len(dsts) must be at
// least len(pkts).
func (c *IPIPConn) WriteBatch(pkts [][]byte, dsts []netip.Addr) (int, error) {
	return c.writeToAddrs(pkts, dsts)
}
