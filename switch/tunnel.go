package vswitch

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"podnet/internal/packet"
	"podnet/internal/queuedrops"
	"podnet/router"
)

// Tunnel is one encapsulation's transport between nodes, as the switch
// sees it: its receivers read datagrams and take them apart (Decap), and
// its senders put outer headers on inner packets and send them in
// batches. ipip.go and vxlan.go adapt package encap's transports; a new
// encapsulation is one more such file (docs/datapath.md).
type Tunnel interface {
	// Encap is the route encapsulation the tunnel carries.
	Encap() router.Encap
	// Overhead is what the encapsulation adds to an inner packet.
	Overhead() int
	// Receivers are the tunnel's receive sockets, at least one; each is
	// read by a reader of its own, so that a node's incoming tunnel
	// traffic can use more than one core.
	Receivers() []TunnelReceiver
	// NewSender makes one reader's sender.
	NewSender() TunnelSender
	// Device names the tunnel in port stats ("ipip", "vxlan").
	Device() string
	// Close closes every socket of the tunnel, its receivers' too.
	Close() error
}

// TunnelReceiver is one receive socket of a tunnel. One reader calls it.
type TunnelReceiver interface {
	BatchSize() int
	// ReadBatch reads datagrams into bufs[i][offset:].
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	// Decap checks datagram i of the last ReadBatch, buf[off:off+size],
	// and finds the inner IPv4 packet: the sender's underlay address, the
	// TOS byte of the outer header, the inner packet's offset in buf and
	// its length, or the drop reason.
	Decap(i int, buf []byte, off, size int) (src netip.Addr, outerTOS uint8, ip, n int, reason DropReason)
}

// TunnelSender queues one reader's inner packets and sends them.
type TunnelSender interface {
	// Queue writes the outer headers for the route's next hop in the
	// headroom before buf[ip:ip+n] and holds the datagram until Flush. It
	// reports false, having done nothing, when it is full. gso is the
	// packet's offload metadata: a superframe only reaches a tunnel that
	// takes them (superframeTunnel), a plain packet has none.
	Queue(buf []byte, ip, n int, gso packet.VirtioNetHdr, r *router.Route) bool
	// Flush sends what is queued; it returns how many datagrams it held,
	// how many were sent and their bytes, and how many of those sent were
	// superframes.
	Flush() (queued, sent, bytes, superframes int, err error)
}

// superframeTunnel is a Tunnel that can send TCP superframes whole, for
// the kernel to segment (VXLAN and IP-in-IP through a TAP whose tc
// program marks the tunnel): the switch then hands it superframes of up
// to maxSuperframe bytes instead of cutting them first.
type superframeTunnel interface {
	// maxSuperframe is the largest superframe it takes now, 0 for none.
	maxSuperframe() int
	// wholeUDP: it takes UDP superframes larger than the tunnel's MTU too
	// (encap.WholeUDPSuperframe), and GRO merges datagrams for it.
	wholeUDP() bool
}

// TunnelConfig attaches a tunnel.
type TunnelConfig struct {
	// Tunnel is the transport. Required.
	Tunnel Tunnel
	// MTU is the underlay's MTU; inner packets longer than MTU − overhead
	// with DF set are answered with ICMP fragmentation-needed. 0 means 1500.
	MTU int
	// LocalAddr is the source of ICMP errors about packets that arrived
	// through the tunnel (this node's tunnel or underlay address, so the
	// error passes the sender's source checks and traceroute names this
	// node). Invalid: the gateway address.
	LocalAddr netip.Addr
}

// tunnelPort is an attached tunnel: an ingress for what other nodes send,
// an egress (batched per reader) for routes to them.
type tunnelPort struct {
	t        Tunnel
	mtu      int
	icmpSrc  [4]byte
	lane     int
	c        counters
	capt     atomic.Pointer[Capture] // inner packets, both ways
	readers  sync.WaitGroup          // one reader per receiver
	rxBy     []atomic.Uint64         // frames each receiver's reader read
	queue    *queuedrops.Counter     // the receive sockets' drops (queue-full)
	maxInner int
	verifies bool             // inner transport checksums are checked (checksumVerifier)
	check    checksumVerifier // nil: no check
	sft      superframeTunnel // nil: superframes are cut before Queue
}

// checksumVerifier is a Tunnel whose inner TCP and UDP packets are
// checked (CheckInner, after the sender is known to be a node), so
// those forwarded are known good.
type checksumVerifier interface {
	VerifiesChecksums() bool
	// CheckInner verifies (or completes) inner's transport checksum;
	// false drops it.
	CheckInner(inner packet.IPv4) bool
}

// AttachTunnel makes the switch send routes of cfg.Tunnel's encapsulation
// over it and starts the reader of what other nodes send that way.
func (s *Switch) AttachTunnel(cfg TunnelConfig) error {
	if cfg.Tunnel == nil {
		return fmt.Errorf("attach tunnel: Tunnel is required")
	}
	e := cfg.Tunnel.Encap()
	if e == router.EncapNone || int(e) >= len(s.att.tunnels) {
		return fmt.Errorf("attach tunnel: unknown encapsulation %s", e)
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	rx := cfg.Tunnel.Receivers()
	if len(rx) == 0 {
		return fmt.Errorf("attach tunnel: %s has no receiver", e)
	}
	t := &tunnelPort{t: cfg.Tunnel, mtu: cfg.MTU, icmpSrc: GatewayIP.As4(), rxBy: make([]atomic.Uint64, len(rx))}
	t.maxInner = cfg.MTU - cfg.Tunnel.Overhead()
	if v, ok := cfg.Tunnel.(checksumVerifier); ok && v.VerifiesChecksums() {
		t.verifies, t.check = true, v
	}
	t.sft, _ = cfg.Tunnel.(superframeTunnel)
	var qerr error
	if t.queue, qerr = queuedrops.Follow(rx...); qerr != nil {
		s.log.Warn("what the kernel drops before the switch reads it goes uncounted on this tunnel", "tunnel", cfg.Tunnel.Device(), "err", qerr)
	}
	if cfg.LocalAddr.Is4() {
		t.icmpSrc = cfg.LocalAddr.As4()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.att.tunnels[e] != nil {
		return fmt.Errorf("attach tunnel: %s already attached", e)
	}
	t.lane = s.newLaneIDLocked()
	s.att.tunnels[e] = t
	s.recompileLocked()
	for i, r := range rx {
		s.wg.Add(1)
		t.readers.Add(1)
		go s.routineTunnelReader(t, r, i)
	}
	return nil
}

// DetachTunnel stops the tunnel of encapsulation e, if one is attached:
// routes of that encapsulation have no egress (and drop, counted) until
// one is attached again, its reader stops, its sockets close and a
// capture on it ends. The daemon closes the tunnel of an encapsulation
// no pool uses.
func (s *Switch) DetachTunnel(e router.Encap) error {
	s.mu.Lock()
	if int(e) >= len(s.att.tunnels) || s.att.tunnels[e] == nil {
		s.mu.Unlock()
		return nil
	}
	t := s.att.tunnels[e]
	s.att.tunnels[e] = nil
	s.recompileLocked()
	s.retireLaneLocked(t.lane)
	s.mu.Unlock()
	err := t.t.Close()
	t.readers.Wait()
	endCapture(&t.capt, fmt.Sprintf("tunnel %s was detached", t.t.Device()))
	return err
}

// routineTunnelReader takes apart what other nodes send to receiver r, the
// k-th of tunnel t, and delivers the inner packets. AttachTunnel starts
// it; it exits when the tunnel closes.
func (s *Switch) routineTunnelReader(t *tunnelPort, r TunnelReceiver, k int) {
	defer s.wg.Done()
	defer t.readers.Done()
	name := t.t.Device()
	if k > 0 {
		name = fmt.Sprintf("%s/%d", name, k)
	}
	// Captures see inner packets (fromNode, send): the wire format is the
	// underlay's to show.
	var none atomic.Pointer[Capture]
	s.readLoop(name, &t.c, r.BatchSize(), r.BatchSize(), &none, 0, LinkIPv4, nil,
		func(bufs [][]byte, sizes []int) (int, error) {
			n, err := r.ReadBatch(bufs, sizes, packet.Headroom)
			if n > 0 {
				t.rxBy[k].Add(uint64(n))
			}
			return n, err
		},
		func(f *forwarder, i int, buf []byte, size int) { f.fromTunnel(t, r, i, buf, packet.Headroom, size) })
}

// fromTunnel classifies datagram i of a batch receiver r read, buf[off:off+size]. Only
// known nodes may send (a tunnel socket receives from anyone who can
// reach the underlay), and only for addresses behind them: the inner
// source must be the node itself or routed via it (its blocks, borrowed
// addresses and tunnel address), a strict reverse-path check against the
// FIB, so a node cannot speak for another node's pods.
func (f *forwarder) fromTunnel(t *tunnelPort, r TunnelReceiver, i int, buf []byte, off, size int) {
	src, tos, ip, n, reason := r.Decap(i, buf, off, size)
	if reason != dropNone {
		t.c.drop(reason)
		return
	}
	f.fromNode(t, src, tos, packetRef{buf: buf, ip: ip, n: n, verified: t.verifies})
}

// fromNode checks and forwards inner packet p that node src sent under
// an outer header with TOS byte outerTOS.
func (f *forwarder) fromNode(t *tunnelPort, src netip.Addr, outerTOS uint8, p packetRef) {
	if !f.nodes[src] {
		t.c.drop(DropUnknownSource)
		return
	}
	// A congestion mark the underlay set goes on in the inner header
	// (RFC 6040), or the packet goes if its transport cannot take one.
	if !packet.DecapECN(outerTOS, p.ipv4()) {
		t.c.drop(DropECNNotECT)
		return
	}
	if outerTOS&packet.ECNMask == packet.ECNCE {
		t.c.ecnCE.Add(1) // a sender never writes CE outside (TunnelECN): a router did
	}
	if t.check != nil && !t.check.CheckInner(p.ipv4()) {
		t.c.drop(DropBadInnerChecksum)
		return
	}
	if inner := p.ipv4().Src(); inner != src {
		if !f.routedVia(inner, src) {
			t.c.drop(DropForeignInnerSource)
			return
		}
	}
	if p.n > t.maxInner {
		// Larger than the tunnel carries: a TCP superpacket the kernel's
		// GRO merged (IP-in-IP on an underlay with GRO), or a UDP
		// superframe a node sent whole across a veth underlay (marked
		// with its datagrams' size, encap.IPIPTap), goes on as a
		// superframe; anything else was reassembled from fragments.
		if h, ok := packet.KernelSuperpacket(p.ipv4(), t.maxInner); ok {
			p.gso = h
			p.verified = false // its checksum is partial: nothing checked it
			t.c.gsoFrames.Add(1)
		} else if size, ok := packet.MarkedUDPSegments(p.ipv4(), t.maxInner); ok {
			p.gso = packet.AsUDPSuperframe(p.ipv4(), size)
			p.verified = false
			t.c.gsoFrames.Add(1)
		}
	}
	if cp := t.capt.Load(); cp != nil {
		cp.put(false, LinkIPv4, p.buf[p.ip:p.ip+p.n])
	}
	f.forward(t, p)
}

func (t *tunnelPort) stats() *counters { return &t.c }

// mayReach: what arrives from another node is for this node's pods or
// the node itself (its own addresses, not what its kernel would route
// on: other nodes, a router's prefixes); the switch is no transit router
// between nodes.
func (t *tunnelPort) mayReach(k egressKind, r *router.Route) (bool, DropReason) {
	switch {
	case k == egressPod, k == egressDrop:
		return true, 0
	case k == egressHost && r != nil && r.ToThisNode():
		return true, 0
	}
	return false, DropNoTransit
}
func (t *tunnelPort) segmented() bool     { return true }
func (t *tunnelPort) reply() egress       { return nil }
func (t *tunnelPort) icmpSource() [4]byte { return t.icmpSrc }

func (t *tunnelPort) kind() egressKind { return egressTunnel }

// caps: tunnels carry complete packets (the transport may batch segments
// with UDP GSO, but each is a whole inner packet) within the tunnel MTU,
// and TCP superframes whole where the tunnel can have the kernel cut them,
// UDP ones too where it can mark them for the receiver (IP-in-IP).
func (t *tunnelPort) caps() egressCaps {
	c := egressCaps{innerMTU: t.maxInner}
	if t.sft != nil {
		c.groUDP = t.sft.wholeUDP()
		if m := t.sft.maxSuperframe(); m > 0 {
			c.superframes, c.maxSuperframe = true, m
			c.coalesceUDP = c.groUDP
		}
	}
	return c
}

func (t *tunnelPort) laneID() int   { return t.lane }
func (t *tunnelPort) newLane() lane { return &tunnelLane{t: t, s: t.t.NewSender()} }

func (t *tunnelPort) send(f *forwarder, _ ingress, p packetRef, h *hop) {
	if cp := t.capt.Load(); cp != nil {
		cp.put(true, LinkIPv4, p.buf[p.ip:p.ip+p.n])
	}
	l := f.laneOf(t).(*tunnelLane)
	if !l.dirty {
		l.dirty = true
		f.markDirty(l)
	}
	if !l.s.Queue(p.buf, p.ip, p.n, p.gso, h.r) {
		l.send()
		if !l.s.Queue(p.buf, p.ip, p.n, p.gso, h.r) {
			t.c.drop(DropEgressError)
		}
	}
}

// tunnelLane is one reader's sender toward a tunnel.
type tunnelLane struct {
	t     *tunnelPort
	s     TunnelSender
	dirty bool
}

func (l *tunnelLane) flush() {
	l.send()
	l.dirty = false
}

func (l *tunnelLane) send() {
	queued, sent, bytes, super, err := l.s.Flush()
	l.t.c.txFrames.Add(uint64(sent))
	if super > 0 {
		l.t.c.txSuperframes.Add(uint64(super))
	}
	l.t.c.txBytes.Add(uint64(bytes))
	if err != nil || sent < queued {
		for range queued - sent {
			l.t.c.drop(DropEgressError)
		}
	}
}

func (t *tunnelPort) portStats() PortStats {
	s := t.c.snapshot()
	s.Index, s.Name, s.Kind, s.Device = -1, t.t.Device(), "underlay", t.t.Device()
	if len(t.rxBy) > 1 {
		s.ReaderRxFrames = make([]uint64, len(t.rxBy))
		for i := range t.rxBy {
			s.ReaderRxFrames[i] = t.rxBy[i].Load()
		}
	}
	return s
}
