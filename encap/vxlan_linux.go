package encap

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// VXLANConfig configures ListenVXLAN. The zero value is usable.
type VXLANConfig struct {
	// Local, if valid, binds the socket to this underlay IPv4 address: it
	// becomes the outer source of every datagram sent, and only datagrams
	// addressed to it are received. The zero Addr lets routing pick the
	// outer source per destination and receives on every address.
	Local netip.Addr

	// Port is the UDP port bound and the one peers send to. Zero means
	// VXLANPort (4789); AnyPort lets the kernel pick one (a socket that
	// only sends, from its own source port). The outer source port of
	// each datagram is this port too: a socket has one. See VXLANConn
	// about FlowSourcePort.
	Port int

	// BatchSize is the most datagrams one ReadBatch returns and the most
	// packets one sendmmsg call carries. Zero means DefaultBatchSize.
	BatchSize int

	// SocketBuffer is the size asked for the socket's receive and send
	// buffers, in bytes. Zero means DefaultSocketBuffer. The FORCE options
	// are tried first (they need CAP_NET_ADMIN and ignore the rmem_max /
	// wmem_max sysctls); without the capability the plain ones are used
	// and the kernel caps them.
	SocketBuffer int

	// DisableGSO turns off UDP_SEGMENT sends even where the kernel has
	// them. False means use them when the kernel does.
	DisableGSO bool

	// DisableGRO leaves UDP_GRO off on the socket. False means turn it on
	// when the kernel has it.
	DisableGRO bool

	// SendOnly makes a conn that only sends (a per-flow source port): its
	// socket is blocking and off Go's netpoller, which would otherwise wake
	// a thread for every datagram or GSO message sent (see sendTimeout in
	// conn_linux.go); it drops whatever arrives, ReadBatch fails, and a
	// write waits at most a second for send buffer space.
	SendOnly bool

	// ReusePort opens the socket with SO_REUSEPORT, so that several
	// sockets of this process (all opened with it) can receive on one
	// port: the kernel gives each flow (outer addresses and ports) to one
	// of them. Only sockets of the same user can join; a socket already
	// bound without it makes the bind fail.
	ReusePort bool
}

// VXLANConn sends VXLAN datagrams to other nodes and receives them, in
// batches, on one UDP socket. Datagram payloads are VXLAN header + inner
// Ethernet frame (build them with EncapVXLAN, take them apart with
// DecapVXLAN); the kernel adds and strips the outer IPv4 and UDP headers
// and computes and verifies the UDP checksum (it is never zero, so
// receivers' NICs and GRO can validate it). A datagram that holds a whole
// TCP superframe, as VXLANTap's do after a veth, is read as one. ReadBatch, Sources, OuterTOS,
// BatchSize, the deadlines and Close come from the batched datagram core
// (see docs/encap.md); a SendOnly conn refuses reads and deadlines.
//
// Outer source port: a UDP socket sends from its bound port, so every
// datagram leaves from Port, not from a per-flow FlowSourcePort as the
// kernel's vxlan device does. Receivers, Linux included, accept any
// source port (RFC 7348 §5); what is lost is underlay ECMP and RSS
// spreading by flow, which the switch gets back with several sender
// sockets, one per source port, picked by FlowSourcePort.
//
// Outer DF: like IPIPConn the socket uses IP_PMTUDISC_DONT, so datagrams
// leave with DF clear and the kernel fragments one larger than the route
// MTU; the switch keeps inner frames within underlay MTU − VXLANOverhead
// and answers larger DF packets with ICMP fragmentation-needed.
//
// Offloads: with GSO, WriteBatch hands the kernel runs of equal-sized
// datagrams to one destination as one message with a UDP_SEGMENT control
// message, and the kernel (or the NIC) cuts it up. With GRO, the kernel
// may deliver several datagrams of one flow as one coalesced datagram
// plus a UDP_GRO control message giving the segment size; ReadBatch
// splits them again, so callers always see one VXLAN datagram per
// buffer.
//
// ReadBatch may be called from one goroutine at a time (calls are
// serialised), WriteBatch likewise; a read and a write may run at the same
// time. Close may be called from any goroutine.
type VXLANConn struct {
	batchConn
}

// ListenVXLAN opens a UDP socket for VXLAN in the calling thread's network
// namespace (use netnsutil.Do to open it elsewhere) and binds it to
// Local:Port. Opening one where the kernel's own vxlan device already
// uses the port fails with EADDRINUSE.
func ListenVXLAN(cfg VXLANConfig) (*VXLANConn, error) {
	c := &VXLANConn{}
	err := c.open(socketSpec{
		name: "vxlan", typ: unix.SOCK_DGRAM, proto: unix.IPPROTO_UDP,
		local: cfg.Local, port: cfg.Port, defaultPort: VXLANPort,
		gso: !cfg.DisableGSO, gro: !cfg.DisableGRO, sendOnly: cfg.SendOnly, reusePort: cfg.ReusePort,
		batch: cfg.BatchSize, buffer: cfg.SocketBuffer, outerECN: VXLANOuterECN,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListenVXLANGroup opens n VXLAN sockets on cfg's address and port, for
// a reader each: with n > 1 they are opened with ReusePort, and the kernel
// gives each flow to one of them. SO_REUSEPORT would also let them join a
// group that another process of the same user (a second daemon in this
// network namespace) already has on the port, and take a share of its
// flows, so the port is first bound alone, by a socket closed at once: if
// anything holds it, that bind fails with EADDRINUSE and so does this.
// n = 1 is ListenVXLAN. On error nothing stays open.
func ListenVXLANGroup(cfg VXLANConfig, n int) ([]*VXLANConn, error) {
	if n < 1 {
		return nil, fmt.Errorf("encap: vxlan: %d sockets, want at least 1", n)
	}
	cfg.ReusePort = n > 1
	if n > 1 {
		c, err := ListenVXLAN(VXLANConfig{Local: cfg.Local, Port: cfg.Port, SendOnly: true, SocketBuffer: 4096})
		if err != nil {
			return nil, err
		}
		c.Close()
	}
	out := make([]*VXLANConn, 0, n)
	for range n {
		c, err := ListenVXLAN(cfg)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// WriteBatch sends each UDP payload pkts[i] (a VXLAN header and inner
// frame, see EncapVXLAN) to dsts[i], a node's underlay address and VXLAN
// port. It sends in sendmmsg calls of up to BatchSize() packets, waits for
// buffer space when the socket is full (a SendOnly conn a second at most:
// then the rest of the write is refused), and returns how many packets
// the kernel accepted.
//
// With GSO, consecutive packets to the same destination whose lengths are
// equal (the last of a run may be shorter) go out as one message with a
// UDP_SEGMENT control message: at most 64 packets and 65000 bytes each,
// one iovec per packet, nothing copied. The receiver sees the same
// datagrams either way. If the kernel refuses a segmented message with
// EIO or EINVAL, GSO is turned off for good and the packets are resent
// one per message; with EMSGSIZE (segments larger than the route MTU
// allows) only that run is resent plainly, and the kernel fragments them.
//
// A packet the kernel refuses (no route to its node, too big), an empty
// packet or a destination that is not IPv4 with a port is skipped and its
// error joined into the returned error; the rest are still sent. After
// Close it returns os.ErrClosed.
//
// It allocates nothing unless a packet is refused. len(dsts) must be at
// least len(pkts).
func (c *VXLANConn) WriteBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error) {
	return c.writeToAddrPorts(pkts, dsts)
}

// LocalAddr returns the address and port the socket is bound to
// (0.0.0.0 when Local was not set; the kernel's pick with AnyPort).
func (c *VXLANConn) LocalAddr() netip.AddrPort { return c.local }

// GSO reports whether WriteBatch currently coalesces with UDP_SEGMENT. It
// turns false for good if the kernel refuses a segmented send.
func (c *VXLANConn) GSO() bool { return c.gso.Load() }

// GRO reports whether UDP_GRO is on, i.e. whether ReadBatch reads into
// its own scratch buffers and copies datagrams out.
func (c *VXLANConn) GRO() bool { return c.gro }

// SourcePorts returns the outer UDP source port of each datagram the last
// ReadBatch returned, with the same validity as Sources.
func (c *VXLANConn) SourcePorts() []uint16 { return c.sports[:c.nsrc] }
