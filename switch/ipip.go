package vswitch

import (
	"errors"
	"net/netip"

	"podnet/encap"
	"podnet/internal/packet"
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

// UnderlayConfig describes the IP-in-IP path to other nodes.
type UnderlayConfig struct {
	// Conn is the IP-in-IP transport. Required.
	Conn IPIPConn
	// MTU is the underlay interface's MTU; 0 means 1500.
	MTU int
	// LocalAddr: see TunnelConfig.
	LocalAddr netip.Addr
}

// AttachUnderlay makes the switch send IP-in-IP routes over cfg.Conn and
// starts the reader of what other nodes send that way.
func (s *Switch) AttachUnderlay(cfg UnderlayConfig) error {
	if cfg.Conn == nil {
		return errors.New("attach underlay: Conn is required")
	}
	return s.AttachTunnel(TunnelConfig{Tunnel: &ipipTunnel{conn: cfg.Conn}, MTU: cfg.MTU, LocalAddr: cfg.LocalAddr})
}

// ipipTunnel adapts an IPIPConn to Tunnel.
type ipipTunnel struct{ conn IPIPConn }

func (t *ipipTunnel) Encap() router.Encap { return router.EncapIPIP }
func (t *ipipTunnel) Overhead() int       { return encap.IPIPOverhead }
func (t *ipipTunnel) BatchSize() int      { return t.conn.BatchSize() }
func (t *ipipTunnel) Device() string      { return "ipip" }
func (t *ipipTunnel) Close() error        { return t.conn.Close() }

// Receivers: a raw socket receives a copy of every IP-in-IP packet, so a
// second one would read each packet again; the tunnel has one.
func (t *ipipTunnel) Receivers() []TunnelReceiver { return []TunnelReceiver{t} }

func (t *ipipTunnel) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.conn.ReadBatch(bufs, sizes, offset)
}

func (t *ipipTunnel) Decap(_ int, buf []byte, off, size int) (netip.Addr, int, int, DropReason) {
	outer, inner, reason := encap.DecapIPIP(buf[off : off+size])
	if reason != encap.DecapOK {
		return netip.Addr{}, 0, 0, decapDropReason(reason)
	}
	return outer.Src(), off + outer.HeaderLen(), len(inner), dropNone
}

func (t *ipipTunnel) NewSender() TunnelSender {
	return &ipipSender{conn: t.conn, pkts: make([][]byte, 0, laneMax), dsts: make([]netip.Addr, 0, laneMax)}
}

// ipipSender queues inner packets; the conn adds the outer header.
type ipipSender struct {
	conn IPIPConn
	pkts [][]byte
	dsts []netip.Addr
}

func (q *ipipSender) Queue(buf []byte, ip, n int, _ packet.VirtioNetHdr, r *router.Route) bool {
	if len(q.pkts) == cap(q.pkts) {
		return false
	}
	q.pkts = append(q.pkts, buf[ip:ip+n])
	q.dsts = append(q.dsts, r.NextHop)
	return true
}

func (q *ipipSender) Flush() (queued, sent, bytes, superframes int, err error) {
	queued = len(q.pkts)
	if queued == 0 {
		return 0, 0, 0, 0, nil
	}
	for _, b := range q.pkts {
		bytes += len(b)
	}
	sent, err = q.conn.WriteBatch(q.pkts, q.dsts)
	clear(q.pkts)
	q.pkts, q.dsts = q.pkts[:0], q.dsts[:0]
	return queued, sent, bytes, 0, err
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
