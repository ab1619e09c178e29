package vswitch

import (
	"errors"
	"io"
	"net/netip"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/internal/queuedrops"
	"podnet/router"
)

// IPIPConn carries inner IPv4 packets between nodes in IP-in-IP: the raw
// socket encap.IPIPConn implements it.
type IPIPConn interface {
	// ReadBatch reads IP-in-IP packets (outer header first) into
	// bufs[i][offset:].
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	// WriteBatch sends inner packet pkts[i] to node dsts[i] inside an
	// outer header.
	WriteBatch(pkts [][]byte, dsts []netip.Addr) (int, error)
	BatchSize() int
	Close() error
}

// IPIPSuperframes sends TCP superframes, and UDP ones where the kernel
// knows USO, as IP-in-IP whole, for the node's kernel (or its NIC) to cut
// into packets: encap.IPIPTap implements it.
type IPIPSuperframes interface {
	// Frame writes the outer headers before buf[ip:] (the superframe,
	// whose offload metadata is gso) for node dst and returns the frame
	// to Send, or false if this packet cannot go that way; mtu is the
	// tunnel's inner MTU.
	Frame(buf []byte, ip int, dst netip.Addr, gso packet.VirtioNetHdr, mtu int) ([]byte, bool)
	// WholeUDP says whether Frame takes UDP superframes
	// (encap.WholeUDPSuperframe).
	WholeUDP() bool
	Send(frame []byte) error
	// Err is non-nil once what Send writes no longer gets through (the
	// kernel drops it); the switch then stops using it.
	Err() error
}

// UnderlayConfig describes the IP-in-IP path to other nodes.
type UnderlayConfig struct {
	// Conn is the IP-in-IP transport. Required.
	Conn IPIPConn
	// MTU is the underlay interface's MTU; 0 means 1500.
	MTU int
	// LocalAddr: see TunnelConfig.
	LocalAddr netip.Addr
	// Superframes, if set, sends TCP superframes whole; nil: the switch
	// cuts them into segments, one datagram each. A few send errors in a
	// row, or its Err, turn it off for good (logged; superframes are cut
	// again).
	Superframes IPIPSuperframes
}

// AttachUnderlay makes the switch send IP-in-IP routes over cfg.Conn and
// starts the reader of what other nodes send that way.
func (s *Switch) AttachUnderlay(cfg UnderlayConfig) error {
	if cfg.Conn == nil {
		return errors.New("attach underlay: Conn is required")
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = 1500
	}
	t := &ipipTunnel{conn: cfg.Conn, sf: cfg.Superframes, innerMTU: mtu - encap.IPIPOverhead}
	if cfg.Superframes != nil {
		t.sfg = superframeGate{tunnel: "ipip", sink: cfg.Superframes, log: s.log}
	}
	return s.AttachTunnel(TunnelConfig{Tunnel: t, MTU: cfg.MTU, LocalAddr: cfg.LocalAddr})
}

// IPIPSuperframes says whether an IP-in-IP tunnel is attached and, if it
// was given UnderlayConfig.Superframes, why it no longer sends
// superframes whole (nil: it does, or it never did).
func (s *Switch) IPIPSuperframes() (attached bool, failure error) {
	return s.tunnelSuperframes(router.EncapIPIP)
}

// ipipTunnel adapts an IPIPConn to Tunnel.
type ipipTunnel struct {
	conn     IPIPConn
	sf       IPIPSuperframes // nil: superframes are segmented
	sfg      superframeGate  // sends to sf, until it fails
	innerMTU int             // the largest inner packet one IP-in-IP packet carries
}

// maxSuperframe: superframes go whole through sf while it works.
func (t *ipipTunnel) maxSuperframe() int { return t.sfg.limit(encap.MaxIPIPTapInner) }
func (t *ipipTunnel) wholeUDP() bool     { return t.sf != nil && t.sf.WholeUDP() }

func (t *ipipTunnel) gate() *superframeGate { return &t.sfg }

func (t *ipipTunnel) Encap() router.Encap { return router.EncapIPIP }
func (t *ipipTunnel) Overhead() int       { return encap.IPIPOverhead }
func (t *ipipTunnel) BatchSize() int      { return t.conn.BatchSize() }
func (t *ipipTunnel) Device() string      { return "ipip" }

func (t *ipipTunnel) Close() error {
	err := t.conn.Close()
	if c, ok := t.sf.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	return err
}

// Receivers: a raw socket receives a copy of every IP-in-IP packet, so a
// second one would read each packet again; the tunnel has one.
func (t *ipipTunnel) Receivers() []TunnelReceiver { return []TunnelReceiver{t} }

// QueueDrops is what the kernel dropped at the raw socket before it was
// read (queue-full), where the socket counts it (encap.IPIPConn does).
func (t *ipipTunnel) QueueDrops() (uint64, error) {
	if q, ok := t.conn.(queuedrops.Dropper); ok {
		return q.QueueDrops()
	}
	return 0, errNoQueueDrops
}

func (t *ipipTunnel) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.conn.ReadBatch(bufs, sizes, offset)
}

func (t *ipipTunnel) Decap(_ int, buf []byte, off, size int) (netip.Addr, uint8, int, int, DropReason) {
	outer, inner, reason := encap.DecapIPIP(buf[off : off+size])
	if reason != encap.DecapOK {
		return netip.Addr{}, 0, 0, 0, decapDropReason(reason)
	}
	return outer.Src(), outer.TOS(), off + outer.HeaderLen(), len(inner), dropNone
}

func (t *ipipTunnel) NewSender() TunnelSender {
	return &ipipSender{t: t, pkts: make([][]byte, 0, laneMax), dsts: make([]netip.Addr, 0, laneMax), whole: make([]bool, 0, laneMax)}
}

// ipipSender queues, in order, inner packets (the conn adds the outer
// header) and whole superframes (whole[i]), complete frames for the
// tunnel's IPIPSuperframes.
type ipipSender struct {
	t       *ipipTunnel
	pkts    [][]byte
	dsts    []netip.Addr
	whole   []bool
	refused int // superframes Frame refused since the last Flush
}

func (q *ipipSender) Queue(buf []byte, ip, n int, gso packet.VirtioNetHdr, r *router.Route) bool {
	if len(q.pkts) == cap(q.pkts) {
		return false
	}
	whole := gso.GSOType != packet.GSONone
	if whole {
		// Only a tunnel with sf gets superframes (maxSuperframe), and
		// they are what Frame takes; a refusal is counted as refused.
		frame, ok := q.t.sf.Frame(buf[:ip+n], ip, r.NextHop, gso, q.t.innerMTU)
		if !ok {
			q.refused++
			return true
		}
		q.pkts = append(q.pkts, frame)
	} else {
		q.pkts = append(q.pkts, buf[ip:ip+n])
	}
	q.dsts = append(q.dsts, r.NextHop)
	q.whole = append(q.whole, whole)
	return true
}

func (q *ipipSender) Flush() (queued, sent, bytes, superframes int, err error) {
	queued, q.refused = len(q.pkts)+q.refused, 0
	if len(q.pkts) == 0 {
		return queued, 0, 0, 0, nil
	}
	for i, b := range q.pkts {
		if q.whole[i] {
			b = b[encap.IPIPTapHeadroom:]
		}
		bytes += len(b)
	}
	sent, superframes, err = flushInOrder(q.pkts, q.dsts, q.whole, q.t.conn.WriteBatch, &q.t.sfg)
	clear(q.pkts)
	q.pkts, q.dsts, q.whole = q.pkts[:0], q.dsts[:0], q.whole[:0]
	return queued, sent, bytes, superframes, err
}

func decapDropReason(r encap.DecapError) DropReason {
	switch r {
	case encap.DecapWrongVNI:
		return DropWrongVNI
	case encap.DecapTruncatedOuter, encap.DecapBadOuter, encap.DecapNotIPIP, encap.DecapOuterFragment,
		encap.DecapTruncatedVXLAN, encap.DecapBadVXLANFlags:
		return DropBadOuter
	default:
		return DropBadInner
	}
}
