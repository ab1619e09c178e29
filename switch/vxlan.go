package vswitch

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/internal/queuedrops"
	"podnet/router"
)

// VXLANConn carries VXLAN datagrams between nodes: encap.VXLANConn
// implements it.
type VXLANConn interface {
	// ReadBatch reads UDP payloads (VXLAN header first) into bufs[i][offset:].
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	// Sources are the senders of what the last ReadBatch returned.
	Sources() []netip.Addr
	// OuterTOS are the TOS bytes of their outer IPv4 headers (for ECN).
	OuterTOS() []uint8
	// WriteBatch sends UDP payload pkts[i] to dsts[i] (UDP GSO when the
	// kernel can).
	WriteBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error)
	BatchSize() int
	Close() error
}

// VXLANSuperframes sends TCP superframes as VXLAN whole, for the node's
// kernel (or its NIC) to cut into datagrams: encap.VXLANTap implements it.
type VXLANSuperframes interface {
	// Frame writes the outer headers before buf[start:] (a VXLAN header,
	// the inner Ethernet header and the superframe, whose offload
	// metadata is gso) and returns the frame to Send, or false if this
	// packet cannot go that way.
	Frame(buf []byte, start int, dst netip.AddrPort, srcPort uint16, gso packet.VirtioNetHdr) ([]byte, bool)
	Send(frame []byte) error
	// Err is non-nil once what Send writes no longer gets through (the
	// kernel drops it); the switch then stops using it.
	Err() error
}

// VXLANUnderlay is the former name of VXLANConn.
type VXLANUnderlay = VXLANConn

// VXLANConfig describes the VXLAN path to other nodes.
type VXLANConfig struct {
	// Conn is the UDP transport. Required.
	Conn VXLANConn
	// MTU is the underlay's MTU; 0 means 1500.
	MTU int
	// VNI is the cluster's VXLAN network identifier; 0 means 4096.
	VNI uint32
	// Port is the UDP port of other nodes' VTEPs; 0 means 4789.
	Port uint16
	// LocalMAC is this node's VTEP MAC, the inner Ethernet source.
	LocalMAC packet.MAC
	// Senders are extra sockets, each bound to its own source port, that
	// datagrams leave from: a flow's hash picks one (as the kernel picks
	// a source port per flow), so ECMP in the underlay can spread flows.
	// nil: everything leaves from Conn.
	Senders []VXLANConn
	// Receivers are more sockets bound to the VXLAN port beside Conn
	// (SO_REUSEPORT), each read by a reader of its own: the kernel spreads
	// flows over Conn and them by addresses and ports, and other nodes'
	// flows come from many source ports. nil: Conn alone receives.
	Receivers []VXLANConn
	// LocalAddr: see TunnelConfig.
	LocalAddr netip.Addr
	// Superframes, if set, sends TCP superframes whole, each from the
	// source port of the sender socket its flow uses; nil: the switch
	// cuts them into segments that leave with UDP GSO. A few send errors
	// in a row, or its Err, turn it off for good (logged; superframes are
	// cut again).
	Superframes VXLANSuperframes
}

// maxVXLANSenders bounds VXLANConfig.Senders, maxVXLANReceivers
// VXLANConfig.Receivers.
const (
	maxVXLANSenders   = 16
	maxVXLANReceivers = 63
)

// AttachVXLAN makes the switch send VXLAN routes over cfg.Conn and starts
// the reader of what other nodes send that way.
func (s *Switch) AttachVXLAN(cfg VXLANConfig) error {
	if cfg.Conn == nil {
		return errors.New("attach vxlan: Conn is required")
	}
	if cfg.VNI == 0 {
		cfg.VNI = encap.DefaultVNI
	}
	if cfg.Port == 0 {
		cfg.Port = encap.VXLANPort
	}
	if len(cfg.Senders) > maxVXLANSenders {
		return fmt.Errorf("attach vxlan: %d senders, at most %d", len(cfg.Senders), maxVXLANSenders)
	}
	if len(cfg.Receivers) > maxVXLANReceivers {
		return fmt.Errorf("attach vxlan: %d more receivers, at most %d", len(cfg.Receivers), maxVXLANReceivers)
	}
	// Each receiver gets a reader of its own: one socket twice would be
	// read by two, and closed twice.
	for i, c := range cfg.Receivers {
		if c == nil {
			return fmt.Errorf("attach vxlan: receiver %d is nil", i)
		}
		if c == cfg.Conn || slices.Contains(cfg.Receivers[:i], c) || slices.Contains(cfg.Senders, c) {
			return fmt.Errorf("attach vxlan: receiver %d is also Conn, another receiver or a sender", i)
		}
	}
	senders := cfg.Senders
	if len(senders) == 0 {
		senders = []VXLANConn{cfg.Conn}
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = 1500
	}
	t := &vxlanTunnel{conn: cfg.Conn, senders: senders, vni: cfg.VNI, port: cfg.Port, mac: cfg.LocalMAC,
		maxInner: mtu - encap.VXLANOverhead, sf: cfg.Superframes}
	if cfg.Superframes != nil {
		t.sfg = superframeGate{tunnel: "vxlan", sink: cfg.Superframes, log: s.log}
	}
	for _, c := range append([]VXLANConn{cfg.Conn}, cfg.Receivers...) {
		t.receivers = append(t.receivers, &vxlanReceiver{t: t, conn: c})
	}
	t.srcPorts = make([]uint16, len(senders))
	for i, c := range senders {
		t.srcPorts[i] = cfg.Port
		if la, ok := c.(interface{ LocalAddr() netip.AddrPort }); ok && la.LocalAddr().Port() != 0 {
			t.srcPorts[i] = la.LocalAddr().Port()
		}
	}
	return s.AttachTunnel(TunnelConfig{Tunnel: t, MTU: mtu, LocalAddr: cfg.LocalAddr})
}

// VXLANSuperframes says whether a VXLAN tunnel is attached and, if it
// was given VXLANConfig.Superframes, why it no longer sends superframes
// whole (nil: it does, or it never did).
func (s *Switch) VXLANSuperframes() (attached bool, failure error) {
	return s.tunnelSuperframes(router.EncapVXLAN)
}

// vxlanTunnel adapts VXLAN sockets to Tunnel: conn and the other
// receivers' sockets receive, and datagrams leave from the sender socket
// the inner flow's hash picks.
type vxlanTunnel struct {
	conn      VXLANConn
	receivers []*vxlanReceiver // conn's first
	senders   []VXLANConn
	srcPorts  []uint16 // each sender's source port
	vni       uint32
	port      uint16
	mac       packet.MAC
	maxInner  int // the largest inner packet a datagram carries

	sf  VXLANSuperframes // nil: superframes are segmented
	sfg superframeGate   // sends to sf, until it fails
}

// maxSuperframe: superframes go whole through sf while it works.
func (t *vxlanTunnel) maxSuperframe() int { return t.sfg.limit(encap.MaxVXLANTapInner) }

// wholeUDP: VXLAN sends small UDP with UDP GSO on its socket already.
func (t *vxlanTunnel) wholeUDP() bool { return false }

func (t *vxlanTunnel) gate() *superframeGate { return &t.sfg }

func (t *vxlanTunnel) Encap() router.Encap { return router.EncapVXLAN }
func (t *vxlanTunnel) Overhead() int       { return encap.VXLANOverhead }
func (t *vxlanTunnel) Device() string      { return "vxlan" }

func (t *vxlanTunnel) Receivers() []TunnelReceiver {
	rx := make([]TunnelReceiver, len(t.receivers))
	for i, r := range t.receivers {
		rx[i] = r
	}
	return rx
}

func (t *vxlanTunnel) Close() error {
	var errs []error
	for _, r := range t.receivers {
		errs = append(errs, r.conn.Close())
	}
	for _, c := range t.senders {
		if c != t.conn {
			errs = append(errs, c.Close())
		}
	}
	if c, ok := t.sf.(io.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// vxlanReceiver is one of the tunnel's receive sockets.
type vxlanReceiver struct {
	t    *vxlanTunnel
	conn VXLANConn
}

func (r *vxlanReceiver) BatchSize() int { return r.conn.BatchSize() }

// The daemon's sockets count their drops.
var (
	_ queuedrops.Dropper = (*encap.VXLANConn)(nil)
	_ queuedrops.Dropper = (*encap.IPIPConn)(nil)
)

// QueueDrops is what the kernel dropped at the socket before it was read
// (queue-full), where the socket counts it (encap.VXLANConn does).
func (r *vxlanReceiver) QueueDrops() (uint64, error) {
	if q, ok := r.conn.(queuedrops.Dropper); ok {
		return q.QueueDrops()
	}
	return 0, errNoQueueDrops
}

func (r *vxlanReceiver) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return r.conn.ReadBatch(bufs, sizes, offset)
}

// Decap takes the VXLAN header and the inner Ethernet header off.
func (r *vxlanReceiver) Decap(i int, buf []byte, off, size int) (netip.Addr, uint8, int, int, DropReason) {
	t := r.t
	src, tos := r.conn.Sources()[i], r.conn.OuterTOS()[i]
	eth, reason := encap.DecapVXLAN(buf[off:off+size], t.vni)
	if reason != encap.DecapOK {
		return src, 0, 0, 0, decapDropReason(reason)
	}
	if eth.EtherType() != packet.EtherTypeIPv4 {
		return src, 0, 0, 0, DropUnknownEtherType
	}
	inner, perr := packet.ParseIPv4Frame(eth)
	if perr != packet.ParseOK {
		return src, 0, 0, 0, DropBadInner
	}
	// The inner checksums are checked later (CheckInner), once the
	// sender is known to be a node: a stranger's datagrams cost no pass
	// over their bytes.
	return src, tos, off + encap.VXLANHeaderLen + ethLen, len(inner), dropNone
}

// CheckInner completes a partial inner checksum and verifies the
// others (see repairPartialChecksum), except in a TCP superframe that
// arrived whole: that one keeps its partial checksum and goes on as a
// superframe (fromNode). false: a wrong checksum.
func (t *vxlanTunnel) CheckInner(inner packet.IPv4) bool {
	return isWhole(inner, t.maxInner) || repairPartialChecksum(inner)
}

// isWhole says whether inner is bigger than a datagram carries and a TCP
// superframe sent whole (its checksum partial), not a packet reassembled
// from fragments.
func isWhole(inner packet.IPv4, maxInner int) bool {
	if len(inner) <= maxInner {
		return false
	}
	_, ok := packet.KernelSuperpacket(inner, maxInner)
	return ok
}

// VerifiesChecksums: Decap drops inner TCP and UDP with a wrong checksum
// (a superframe that arrived whole keeps its partial one, unchecked).
func (t *vxlanTunnel) VerifiesChecksums() bool { return true }

func (t *vxlanTunnel) NewSender() TunnelSender {
	s := &vxlanSender{t: t, queues: make([]vxQueue, len(t.senders))}
	for i := range s.queues {
		s.queues[i] = vxQueue{pkts: make([][]byte, 0, laneMax), dsts: make([]netip.AddrPort, 0, laneMax), whole: make([]bool, 0, laneMax)}
	}
	return s
}

// vxlanSender queues datagrams per sender socket.
type vxlanSender struct {
	t       *vxlanTunnel
	queues  []vxQueue
	refused int // superframes Frame refused since the last Flush
}

// vxQueue holds the datagrams of one batch for one sender socket, in
// order: UDP payloads for the socket, and whole superframes (whole[i]),
// complete frames for the tunnel's VXLANSuperframes.
type vxQueue struct {
	pkts  [][]byte
	dsts  []netip.AddrPort
	whole []bool
}

// Queue writes the inner Ethernet header (between the VTEP MACs) and the
// VXLAN header in the headroom before buf[ip:ip+n]; for a superframe, the
// outer headers too (VXLANSuperframes.Frame).
func (s *vxlanSender) Queue(buf []byte, ip, n int, gso packet.VirtioNetHdr, r *router.Route) bool {
	l2 := ip - ethLen
	// The inner Ethernet header first: the flow hash reads its EtherType,
	// and what lies before the IP header until then is the ingress's (a
	// TUN's virtio header, say), which would spread one flow's packets
	// over senders by their lengths and reorder them.
	eth := packet.Ethernet(buf[l2:ip])
	eth.SetDst(packet.MAC(r.NextHopMAC))
	eth.SetSrc(s.t.mac)
	eth.SetEtherType(packet.EtherTypeIPv4)
	qi := int(encap.FlowSourcePort(buf[l2:ip+n])) % len(s.queues)
	q := &s.queues[qi]
	if len(q.pkts) == cap(q.pkts) {
		return false
	}
	start := encap.EncapVXLAN(buf, l2, s.t.vni)
	dst := netip.AddrPortFrom(r.NextHop, s.t.port)
	whole := false
	if gso.GSOType != packet.GSONone {
		// Only a tunnel with sf gets superframes (maxSuperframe), and
		// they are what Frame takes; a refusal is counted as refused.
		frame, ok := s.t.sf.Frame(buf[:ip+n], start, dst, s.t.srcPorts[qi], gso)
		if !ok {
			s.refused++
			return true
		}
		q.pkts = append(q.pkts, frame)
		whole = true
	} else {
		q.pkts = append(q.pkts, buf[start:ip+n])
	}
	q.dsts = append(q.dsts, dst)
	q.whole = append(q.whole, whole)
	return true
}

// Flush sends each socket's queue (flushQueue).
func (s *vxlanSender) Flush() (queued, sent, bytes, superframes int, err error) {
	var errs []error
	queued, s.refused = s.refused, 0
	for i := range s.queues {
		q := &s.queues[i]
		if len(q.pkts) == 0 {
			continue
		}
		queued += len(q.pkts)
		for j, b := range q.pkts {
			if q.whole[j] {
				b = b[encap.VXLANTapHeadroom:]
			}
			bytes += len(b)
		}
		n, sf, err := s.flushQueue(i, q)
		sent += n
		superframes += sf
		if err != nil {
			errs = append(errs, err)
		}
		clear(q.pkts)
		q.pkts, q.dsts, q.whole = q.pkts[:0], q.dsts[:0], q.whole[:0]
	}
	if len(errs) > 0 {
		err = errors.Join(errs...)
	}
	return queued, sent, bytes, superframes, err
}

// flushQueue sends queue q of sender i in order (flushInOrder).
func (s *vxlanSender) flushQueue(i int, q *vxQueue) (sent, superframes int, err error) {
	return flushInOrder(q.pkts, q.dsts, q.whole, s.t.senders[i].WriteBatch, &s.t.sfg)
}
