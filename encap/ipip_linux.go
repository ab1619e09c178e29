package encap

import (
	"net/netip"

	"golang.org/x/sys/unix"
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
}

// IPIPConn sends inner IPv4 packets to other nodes inside IP-in-IP and
// receives IP-in-IP packets from them, in batches, on one raw
// IPPROTO_IPIP socket. ReadBatch, Sources, BatchSize, the deadlines and
// Close come from the batched datagram core (see docs/encap.md).
//
// The socket does not use IP_HDRINCL: on send the kernel builds the outer
// header from the destination and its routing table (protocol 4, TTL from
// net.ipv4.ip_default_ttl, TOS 0, outer source from Local or the route), so
// the caller passes the inner packet alone. On receive the raw socket
// delivers the outer header too; take it apart with DecapIPIP and check
// the outer source against the node set.
//
// Outer DF: the socket sets IP_MTU_DISCOVER to IP_PMTUDISC_DONT, so outer
// packets leave with DF clear and the kernel fragments those larger than
// the route's MTU (the receiving kernel reassembles them before the raw
// socket sees them). Path MTU is enforced one level up instead: the switch
// answers an inner packet that has DF set and is larger than underlay MTU
// − IPIPOverhead with ICMP fragmentation-needed (packet.BuildICMPError), as
// a kernel tunnel would. The price is that a path MTU smaller than the
// local link's is never learned; the underlay fragments instead of
// dropping. The simpler alternative, copying the inner DF into the outer
// header, would need IP_HDRINCL and our own outer header.
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
}

// ListenIPIP opens a raw IP-in-IP socket in the calling thread's network
// namespace (use netnsutil.Do to open it elsewhere). It needs CAP_NET_RAW.
func ListenIPIP(cfg IPIPConfig) (*IPIPConn, error) {
	c := &IPIPConn{local: cfg.Local}
	err := c.open(socketSpec{
		name: "ipip", typ: unix.SOCK_RAW, proto: unix.IPPROTO_IPIP,
		local: cfg.Local, batch: cfg.BatchSize, buffer: cfg.SocketBuffer,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Local returns the address the socket is bound to, or the zero Addr.
func (c *IPIPConn) Local() netip.Addr { return c.local }

// WriteBatch sends each inner IPv4 packet pkts[i] to the node dsts[i]
// inside IP-in-IP; the kernel adds the outer header. It sends in sendmmsg
// calls of up to BatchSize() packets, waits for buffer space when the
// socket is full, and returns how many packets the kernel accepted. A
// packet the kernel refuses (no route to its node, too big, an empty
// packet, a non-IPv4 destination) is skipped and its error joined into the
// returned error; the rest are still sent. After Close it returns
// os.ErrClosed.
//
// It allocates nothing unless a packet is refused. len(dsts) must be at
// least len(pkts).
func (c *IPIPConn) WriteBatch(pkts [][]byte, dsts []netip.Addr) (int, error) {
	return c.writeToAddrs(pkts, dsts)
}
