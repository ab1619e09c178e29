package vswitch

import (
	"errors"
	"fmt"
	"net/netip"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// VXLANConn carries VXLAN datagrams between nodes: encap.VXLANConn
// implements it.
type VXLANConn interface {
	// ReadBatch reads UDP payloads (VXLAN header first) into bufs[i][offset:].
	ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error)
	// Sources are the senders of what the last ReadBatch returned.
	Sources() []netip.Addr
	// WriteBatch sends UDP payload pkts[i] to dsts[i] (UDP GSO when the
	// kernel can).
	WriteBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error)
	BatchSize() int
	Close() error
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
	// LocalAddr: see TunnelConfig.
	LocalAddr netip.Addr
}

// maxVXLANSenders bounds VXLANConfig.Senders.
const maxVXLANSenders = 16

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
	senders := cfg.Senders
	if len(senders) == 0 {
		senders = []VXLANConn{cfg.Conn}
	}
	t := &vxlanTunnel{conn: cfg.Conn, senders: senders, vni: cfg.VNI, port: cfg.Port, mac: cfg.LocalMAC}
	return s.AttachTunnel(TunnelConfig{Tunnel: t, MTU: cfg.MTU, LocalAddr: cfg.LocalAddr})
}

// vxlanTunnel adapts VXLAN sockets to Tunnel: one socket receives, and
// datagrams leave from the sender socket the inner flow's hash picks.
type vxlanTunnel struct {
	conn    VXLANConn
	senders []VXLANConn
	vni     uint32
	port    uint16
	mac     packet.MAC
}

func (t *vxlanTunnel) Encap() router.Encap { return router.EncapVXLAN }
func (t *vxlanTunnel) Overhead() int       { return encap.VXLANOverhead }
func (t *vxlanTunnel) BatchSize() int      { return t.conn.BatchSize() }
func (t *vxlanTunnel) Device() string      { return "vxlan" }

func (t *vxlanTunnel) Close() error {
	errs := []error{t.conn.Close()}
	for _, c := range t.senders {
		if c != t.conn {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func (t *vxlanTunnel) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.conn.ReadBatch(bufs, sizes, offset)
}

// Decap takes the VXLAN header and the inner Ethernet header off, and
// completes a partial inner checksum (see repairPartialChecksum).
func (t *vxlanTunnel) Decap(i int, buf []byte, off, size int) (netip.Addr, int, int, DropReason) {
	src := t.conn.Sources()[i]
	eth, reason := encap.DecapVXLAN(buf[off:off+size], t.vni)
	if reason != encap.DecapOK {
		return src, 0, 0, decapDropReason(reason)
	}
	if eth.EtherType() != packet.EtherTypeIPv4 {
		return src, 0, 0, DropUnknownEtherType
	}
	inner, perr := packet.ParseIPv4Frame(eth)
	if perr != packet.ParseOK {
		return src, 0, 0, DropBadInner
	}
	if !repairPartialChecksum(inner) {
		return src, 0, 0, DropBadInnerChecksum
	}
	return src, off + encap.VXLANHeaderLen + ethLen, len(inner), dropNone
}

// VerifiesChecksums: Decap drops inner TCP and UDP with a wrong checksum.
func (t *vxlanTunnel) VerifiesChecksums() bool { return true }

func (t *vxlanTunnel) NewSender() TunnelSender {
	s := &vxlanSender{t: t, queues: make([]vxQueue, len(t.senders))}
	for i := range s.queues {
		s.queues[i] = vxQueue{pkts: make([][]byte, 0, laneMax), dsts: make([]netip.AddrPort, 0, laneMax)}
	}
	return s
}

// vxlanSender queues datagrams per sender socket.
type vxlanSender struct {
	t      *vxlanTunnel
	queues []vxQueue
}

// vxQueue holds the datagrams of one batch for one sender socket.
type vxQueue struct {
	pkts [][]byte
	dsts []netip.AddrPort
}

// Queue writes the inner Ethernet header (between the VTEP MACs) and the
// VXLAN header in the headroom before buf[ip:ip+n].
func (s *vxlanSender) Queue(buf []byte, ip, n int, r *router.Route) bool {
	l2 := ip - ethLen
	q := &s.queues[int(encap.FlowSourcePort(buf[l2:ip+n]))%len(s.queues)]
	if len(q.pkts) == cap(q.pkts) {
		return false
	}
	eth := packet.Ethernet(buf[l2:ip])
	eth.SetDst(packet.MAC(r.NextHopMAC))
	eth.SetSrc(s.t.mac)
	eth.SetEtherType(packet.EtherTypeIPv4)
	start := encap.EncapVXLAN(buf, l2, s.t.vni)
	q.pkts = append(q.pkts, buf[start:ip+n])
	q.dsts = append(q.dsts, netip.AddrPortFrom(r.NextHop, s.t.port))
	return true
}

// Flush sends each socket's datagrams in one call.
func (s *vxlanSender) Flush() (queued, sent, bytes int, err error) {
	var errs []error
	for i := range s.queues {
		q := &s.queues[i]
		if len(q.pkts) == 0 {
			continue
		}
		queued += len(q.pkts)
		for _, b := range q.pkts {
			bytes += len(b)
		}
		n, err := s.t.senders[i].WriteBatch(q.pkts, q.dsts)
		sent += n
		if err != nil {
			errs = append(errs, err)
		}
		clear(q.pkts)
		q.pkts, q.dsts = q.pkts[:0], q.dsts[:0]
	}
	if len(errs) > 0 {
		err = errors.Join(errs...)
	}
	return queued, sent, bytes, err
}
