// Package nat is podnet's NAT outgoing (Calico's natOutgoing pools): it
// takes IPv4 packets from pods bound outside every pool and carries them
// out of the node so the world sees the node's address, and turns what
// comes back into packets for the pods. No iptables: TCP to remotes
// routed out of the underlay is rewritten packet by packet and forwarded
// by the node's kernel, its replies steered back by a tc program (the
// packet path, packet_tcp_linux.go); other TCP ends in a gVisor netstack
// and is spliced onto host TCP connections; UDP and ICMP echo flows each
// get a connected host datagram socket.
//
// Each flow is an entry of a bounded connection table keyed by protocol,
// pod address:port (ICMP: echo identifier) and remote address:port, and
// expires after conntrack-like idle timeouts.
package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"podnet/internal/packet"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxEntries     = 65536
	DefaultTCPEstablished = 2 * time.Hour
	DefaultTCPClosing     = 2 * time.Minute
	DefaultUDP            = 30 * time.Second
	DefaultUDPAssured     = 120 * time.Second
	DefaultICMP           = 30 * time.Second
	// DefaultMaxDialsPerPod is a sixteenth of the connection requests
	// the netstack takes at once (maxInFlight), so that one pod dialling
	// remotes that never answer cannot hold them all for dialTimeout.
	DefaultMaxDialsPerPod = maxInFlight / 16
)

// Config configures a NAT.
type Config struct {
	// Netns is where host sockets are opened (the node's namespace), as a
	// path such as /run/netns/NAME; "" = the calling process's namespace.
	Netns string
	// SourceAddr, when valid, binds host sockets to it (Calico's
	// natOutgoingAddress); zero = the kernel chooses the node's address
	// toward each destination. IPv4 only.
	SourceAddr netip.Addr
	// PortMin and PortMax bound host sockets' local TCP and UDP ports
	// (natPortRange); both zero = the kernel's ephemeral range.
	PortMin, PortMax uint16
	// MaxEntries bounds the connection table; 0 = DefaultMaxEntries. A
	// new flow in a full table takes the place of a closed TCP flow if
	// one is found (they hold nothing but their row); else it is refused
	// (TCP: RST to the pod; UDP/ICMP: dropped) and counted as
	// "table-full".
	MaxEntries int
	// MaxDialsPerPod bounds one pod's TCP connections being dialled at
	// once (the remote has not answered yet); 0 = DefaultMaxDialsPerPod.
	// Requests beyond it are ignored, counted as "dials-pending", and the
	// pod's SYN retransmissions try again.
	MaxDialsPerPod int
	// Idle timeouts; zero = the Default* constants. TCPEstablished applies
	// to open connections, TCPClosing after a FIN or once both sides are
	// closed, UDP until the pod sends again after a reply, UDPAssured
	// after that, ICMP to echo flows.
	TCPEstablished, TCPClosing, UDP, UDPAssured, ICMP time.Duration
	// Underlay, when set, is the interface (in Netns) out of which the
	// node reaches the world. TCP to remotes the node routes out of it
	// from the NAT's source address (SourceAddr, else the underlay's
	// address) then takes the packet path (packet_tcp_linux.go): packets
	// rewritten and forwarded by the node's kernel, replies steered back
	// by a tc program on the underlay. Where that cannot be set up (no
	// bpf(2), no clsact), New logs why and all TCP goes through the
	// netstack. "" = the netstack only.
	Underlay string
	// Deliver sends an IPv4 packet, buf[off:] (destination = a pod), back
	// into the switch. Required. The off bytes before the packet are free
	// for the switch's headers (DeliverRoom of them where NAT can, so that
	// the packet need not be copied). It must not retain buf after it
	// returns. It is called from NAT goroutines, possibly concurrently.
	// hdr is the packet's offload metadata, offsets counted from the IP
	// header: zero for a complete packet; for TCP from the netstack,
	// NeedsCsum (the checksum field holds only the pseudo-header sum) and,
	// for a superframe, GSOType TCPv4 with segments of GSOSize payload
	// bytes; for UDP replies the kernel merged, NeedsCsum and GSOType
	// UDP_L4 with datagrams of GSOSize bytes. A pod's kernel takes both
	// through a TAP with offloads.
	Deliver func(buf []byte, off int, hdr packet.VirtioNetHdr)
	// Logger gets "started"/"stopped" at debug level and rate-limited
	// errors; nil = slog.Default().
	Logger *slog.Logger
}

// NAT translates pods' packets to host sockets and back.
type NAT struct {
	cfg   Config
	log   *slog.Logger
	epoch time.Time

	c     counters
	table *table
	syns  synTracker
	socks *sockets
	dials dialCounts

	tcpPorts, udpPorts *portRange
	portsPerProto      int
	hostSockets        atomic.Int64 // host TCP and UDP sockets open
	ipID               atomic.Uint32
	pingOnce           sync.Once

	stack *stack.Stack
	link  *channel.Endpoint

	// fast is the packet path for TCP; nil without Config.Underlay or
	// where it could not be set up (fastErr says why).
	fast    *packetTCP
	fastErr error

	// ctx is cancelled by Close: it stops routineNetstackOut and pending
	// dials.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed by Close: stops the reaper

	// lifeMu guards closed. Handle holds it shared for the whole packet,
	// so once Close holds it exclusively no packet is in flight and none
	// can start goroutines.
	lifeMu sync.RWMutex
	closed bool

	// wg counts every goroutine NAT owns: output pump, reaper, connection
	// requests, splice copies and datagram readers.
	wg        sync.WaitGroup
	closeOnce sync.Once

	logMu   sync.Mutex
	lastLog time.Time // guarded by logMu; rate limit of limitedLog
}

// New starts a NAT: its netstack, output pump, reaper and, with
// cfg.Netns, the thread that opens sockets in that namespace.
func New(cfg Config) (*NAT, error) {
	if cfg.Deliver == nil {
		return nil, errors.New("nat: Config.Deliver is required")
	}
	if cfg.SourceAddr.IsValid() && !cfg.SourceAddr.Is4() {
		return nil, fmt.Errorf("nat: SourceAddr %s is not IPv4", cfg.SourceAddr)
	}
	if (cfg.PortMin == 0) != (cfg.PortMax == 0) || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("nat: bad port range %d-%d", cfg.PortMin, cfg.PortMax)
	}
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("nat: MaxEntries %d is negative", cfg.MaxEntries)
	}
	if cfg.MaxDialsPerPod < 0 {
		return nil, fmt.Errorf("nat: MaxDialsPerPod %d is negative", cfg.MaxDialsPerPod)
	}
	setDefault(&cfg.MaxEntries, DefaultMaxEntries)
	setDefault(&cfg.MaxDialsPerPod, DefaultMaxDialsPerPod)
	setDefault(&cfg.TCPEstablished, DefaultTCPEstablished)
	setDefault(&cfg.TCPClosing, DefaultTCPClosing)
	setDefault(&cfg.UDP, DefaultUDP)
	setDefault(&cfg.UDPAssured, DefaultUDPAssured)
	setDefault(&cfg.ICMP, DefaultICMP)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &NAT{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "nat"),
		epoch:    time.Now(),
		table:    newTable(cfg.MaxEntries),
		syns:     synTracker{m: make(map[flowKey]synRecord)},
		dials:    dialCounts{m: make(map[netip.Addr]int)},
		tcpPorts: newPortRange(cfg.PortMin, cfg.PortMax),
		udpPorts: newPortRange(cfg.PortMin, cfg.PortMax),
		done:     make(chan struct{}),
	}
	socks, err := newSockets(cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("nat: %w", err)
	}
	n.socks = socks
	if cfg.PortMin != 0 {
		n.portsPerProto = n.tcpPorts.size()
	} else if lo, hi, err := socks.ephemeralRange(); err == nil {
		n.portsPerProto = int(hi) - int(lo) + 1
	} else {
		n.log.Warn("cannot read the ephemeral port range", "err", err)
	}
	if err := n.newNetstack(); err != nil {
		socks.close()
		return nil, fmt.Errorf("nat: %w", err)
	}
	if cfg.Underlay != "" {
		if n.fast, n.fastErr = n.openPacketTCP(cfg.Underlay); n.fastErr != nil {
			n.fastErr = fmt.Errorf("TCP packet path on %s: %w", cfg.Underlay, n.fastErr)
			n.log.Warn("NAT outgoing TCP goes through the netstack", "err", n.fastErr)
		}
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(2)
	go n.routineNetstackOut()
	go n.routineReaper()
	if n.fast != nil {
		n.wg.Add(1)
		go n.routinePacketReplies()
	}
	return n, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Handle takes one IPv4 packet from a pod bound outside the cluster. It
// copies what it keeps and never waits on the network. Malformed and
// unsupported packets are dropped and counted. Safe for concurrent use.
//
// gsoSize is non-zero for a UDP superframe: datagrams of one flow that
// the switch merged (GSO_UDP_L4), each with gsoSize bytes of payload, the
// last one at most that. They leave in one UDP_SEGMENT send. TCP
// superframes need no size (the netstack takes them whole), and other
// packets ignore it.
func (n *NAT) Handle(pkt []byte, gsoSize int) {
	var hdr packet.VirtioNetHdr
	if gsoSize != 0 {
		hdr = packet.VirtioNetHdr{GSOType: packet.GSOUDPL4, GSOSize: uint16(gsoSize)}
	}
	n.HandleOffload(pkt, 0, hdr)
}

// HandleOffload is Handle for the packet buf[off:], with its offload
// metadata hdr (offsets counted from the IPv4 header): a partial
// checksum, a TCP superframe (GSOTCPv4) or a UDP one (GSOUDPL4). The
// off bytes before the packet are free for headers: with
// encap.PlainTapHeadroom of them a TCP packet on the packet path leaves
// without a copy. buf is NAT's until HandleOffload returns.
func (n *NAT) HandleOffload(buf []byte, off int, hdr packet.VirtioNetHdr) {
	gsoSize := 0
	if hdr.GSOType == packet.GSOUDPL4 {
		gsoSize = int(hdr.GSOSize)
	}
	ip := packet.IPv4(buf[off:])
	if ip.Validate() != packet.ParseOK {
		n.c.drop(DropMalformed)
		return
	}
	ip = ip[:ip.TotalLen()]
	if !routableDst(ip.DstBytes()) {
		n.c.drop(DropBadDestination)
		return
	}
	n.lifeMu.RLock()
	defer n.lifeMu.RUnlock()
	if n.closed {
		n.c.drop(DropClosed)
		return
	}
	switch ip.Protocol() {
	case packet.ProtoTCP:
		n.handleTCP(buf[:off+len(ip)], off, hdr)
	case packet.ProtoUDP:
		n.handleUDP(ip, gsoSize)
	case packet.ProtoICMP:
		n.handleICMP(ip)
	default:
		n.c.drop(DropUnsupportedProtocol)
	}
}

// routableDst reports whether a can be the destination of a pod's packet
// leaving through the node: not 0/8, loopback, multicast, class E or the
// limited broadcast.
func routableDst(a [4]byte) bool {
	return a[0] != 0 && a[0] != 127 && a[0] < 224
}

// enter registers a goroutine gVisor started for us with n.wg, unless
// Close has begun.
func (n *NAT) enter() bool {
	n.lifeMu.RLock()
	defer n.lifeMu.RUnlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	return true
}

// Close closes every flow and host socket, stops the netstack and waits
// for all of NAT's goroutines. It is idempotent.
func (n *NAT) Close() error {
	n.closeOnce.Do(func() {
		n.lifeMu.Lock()
		n.closed = true
		n.lifeMu.Unlock()
		n.cancel()
		close(n.done)
		// A connection request that entered before closed was set may
		// still be dialling: the drained table refuses its flow.
		for _, f := range n.table.drain() {
			f.close()
		}
		if n.fast != nil {
			n.fast.tap.Close() // ends routinePacketReplies
		}
		n.wg.Wait()
		if n.fast != nil {
			n.fast.close()
		}
		n.link.Close()
		n.stack.Destroy()
		n.socks.close()
	})
	return nil
}

// newFlow returns a flow for k in state s, created now.
func (n *NAT) newFlow(k flowKey, s flowState) *flow {
	f := &flow{key: k, created: time.Now()}
	f.setState(s)
	f.touch(n.now())
	return f
}

func (f *flow) touch(now int64) { f.last.Store(now) }

// now is a monotonic clock in nanoseconds, cheap to keep in atomics.
func (n *NAT) now() int64 { return int64(time.Since(n.epoch)) }

// limitedLog logs at warn level at most once a second: host socket errors
// can come at packet rate.
func (n *NAT) limitedLog(msg string, args ...any) {
	n.logMu.Lock()
	now := time.Now()
	ok := now.Sub(n.lastLog) >= time.Second
	if ok {
		n.lastLog = now
	}
	n.logMu.Unlock()
	if ok {
		n.log.Warn(msg, args...)
	}
}
