package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/internal/queuedrops"
)

// The packet path for TCP: instead of ending the pod's connection in the
// netstack and opening one of the node's own, NAT rewrites the pod's
// packets to leave from the node's address and a port of its own, as the
// kernel's MASQUERADE does, and writes them into a plain TAP for the
// kernel to forward out of the underlay (superframes whole). A tc program
// on the underlay (steer) hands the replies to those ports back through
// the same TAP; NAT rewrites them to the pod and delivers them to the
// switch. A new connection then costs a port (a bound socket holds it, so
// no local socket takes it meanwhile) and a map entry, not two handshakes
// and two teardowns, and a download is one TAP read and one write per
// superframe.
//
// It is used for connections to remotes the node routes out of the
// underlay from the NAT's source address; other remotes, and every
// connection while the TAP or the tc program is failing, go through the
// netstack as before.
type packetTCP struct {
	tap   *encap.PlainTap
	steer *steer
	src   [4]byte
	// underlay is the interface index the remotes must be routed out of.
	underlay int
	// fixedSource: Config.SourceAddr is set, so any route out of the
	// underlay will do; else the route's preferred source must be src.
	fixedSource bool

	// byPort finds a reply's flow by the port it came to.
	byPort [1 << 16]atomic.Pointer[flow]

	// broken is set, with the reason, once the TAP's forwarding watch or
	// the tc program's check fails: new connections use the netstack.
	broken atomic.Pointer[error]

	// replyMu is held by whoever reads the TAP (routinePacketReplies, or
	// pollReplies after a send) while it reads and delivers: replyBuf is
	// its buffer.
	replyMu  sync.Mutex
	replyBuf []byte

	routeMu sync.Mutex
	nl      *netlink.Handle // in the node's namespace; guarded by routeMu
	routes  map[netip.Addr]routeVerdict

	// queue counts the replies the kernel dropped on their way into the
	// TAP, its queue being full, since the path was set up
	// (DropQueueFull).
	queue *queuedrops.Counter

	// Each connection holds a port of the node's for itself. So that the
	// node keeps ports for its own connections and one pod cannot take
	// them all, at most maxHeld ports go to the packet path and
	// maxHeldPerPod to one pod; past that, new connections go through the
	// netstack, whose sockets share ports among remotes.
	held                   atomic.Int64
	heldBy                 dialCounts
	maxHeld, maxHeldPerPod int
	// ephLo..ephHi is the node's ephemeral port range: a pod's own port
	// is kept only inside it, never a port below, where the node's
	// services listen.
	ephLo, ephHi uint16
}

// roomFor says whether pod may have another connection on the packet
// path (a port of its own).
func (p *packetTCP) roomFor(pod netip.Addr) bool {
	return p.held.Load() < int64(p.maxHeld) && p.heldBy.count(pod) < p.maxHeldPerPod
}

// routeVerdict is whether a remote is routed out of the underlay from
// the NAT's source, and until when that answer is kept.
type routeVerdict struct {
	ok    bool
	until time.Time
}

// routeTTL is how long a route verdict is kept: routes change rarely, and
// a connection keeps the path it started on.
const routeTTL = 5 * time.Second

// maxRouteCache bounds the verdicts kept; past it the cache starts over.
const maxRouteCache = 4096

// packetFlow is the packet path's part of a TCP flow.
type packetFlow struct {
	port          uint16 // the node's port for the connection
	finOut, finIn atomic.Bool
	// release lets go of the port: the socket holding it, its map entry
	// and its byPort slot. It runs once, when the flow expires or
	// portLinger after it closed, whichever comes first; released says
	// it has.
	release  func()
	once     sync.Once
	released atomic.Bool

	// What a reset needs, from the pod's last segment: its next
	// sequence number (for a RST to the remote) and its acknowledgment
	// number, the remote's next (for one to the pod; acked: it has one).
	podNext, podAck atomic.Uint32
	acked           atomic.Bool

	// dialing: the connection counts among its pod's dials in progress
	// (NAT.dials) until the remote answers or it ends.
	dialing atomic.Bool

	// A FIN from the remote counts once the pod has acknowledged it
	// (finInSeq is the sequence number that does): a FIN anyone could
	// spoof with the remote's address must not close the connection's
	// row, only one the pod's own TCP took.
	finInPending atomic.Bool
	finInSeq     atomic.Uint32

	// mu orders reopen against the linger timer's letGoIfClosed.
	mu sync.Mutex
}

// track notes a pod's segment t with payload bytes of data.
func (pf *packetFlow) track(t packet.TCP, payload int) {
	next := t.Seq() + uint32(payload)
	if t.Flags()&(packet.TCPFlagSYN|packet.TCPFlagFIN) != 0 {
		next++
	}
	pf.podNext.Store(next)
	if t.Flags()&packet.TCPFlagACK != 0 {
		pf.podAck.Store(t.Ack())
		pf.acked.Store(true)
	}
}

// podAcksFIN says whether the pod's segment t acknowledges the remote's
// FIN.
func (pf *packetFlow) podAcksFIN(t packet.TCP) bool {
	return pf.finInPending.Load() && t.Flags()&packet.TCPFlagACK != 0 && t.Ack() == pf.finInSeq.Load()
}

// letGo releases the flow's port once.
func (pf *packetFlow) letGo() {
	pf.once.Do(func() {
		pf.released.Store(true)
		pf.release()
	})
}

// reopen makes f, a closed flow whose port lingers, a new connection in
// its place, counted among its pod's dials; false if the pod has too
// many (counted) or the port went meanwhile.
func (n *NAT) reopen(f *flow) bool {
	pf := f.pkt
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.released.Load() {
		n.c.drop(DropNoFlow) // the pod's next SYN opens a new one
		return false
	}
	if !n.dials.start(f.key.pod.Addr(), n.cfg.MaxDialsPerPod) {
		n.c.drop(DropDialsPending)
		return false
	}
	pf.dialing.Store(true)
	pf.finIn.Store(false)
	pf.finOut.Store(false)
	pf.finInPending.Store(false)
	f.setState(stateSynSent)
	return true
}

// letGoIfClosed lets go of a closed flow's port, unless the pod has
// opened the 4-tuple again meanwhile (reopen).
func (pf *packetFlow) letGoIfClosed(f *flow) {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if f.getState() == stateClosed {
		pf.letGo()
	}
}

// dialDone takes f off its pod's dials in progress, once.
func (n *NAT) dialDone(f *flow) {
	if f.pkt.dialing.CompareAndSwap(true, false) {
		n.dials.done(f.key.pod.Addr())
	}
}

// portLinger is how long a closed connection keeps its port (closeState
// starts a timer), so that the last segments of the close (a FIN resent,
// the last ACK) still find it.
// Its row stays in the table for TCPClosing, as conntrack keeps TIME_WAIT,
// but the port is free for a new connection: held for the whole
// TCPClosing, a pod opening and closing connections at a few thousand a
// second would exhaust the node's ports in seconds.
const portLinger = time.Second

// PlainTapName is the TAP through which packet-NAT'd TCP leaves and its
// replies come back.
const PlainTapName = "podnetnat0"

// openPacketTCP sets up the packet path in the namespace: the TAP, the tc
// program on underlay and a netlink handle for route lookups. Its source
// address is Config.SourceAddr, or else underlay's IPv4 address.
func (n *NAT) openPacketTCP(underlay string) (*packetTCP, error) {
	p := &packetTCP{fixedSource: n.cfg.SourceAddr.IsValid(), routes: make(map[netip.Addr]routeVerdict),
		replyBuf: make([]byte, packet.Headroom+packet.MaxFrameLen), heldBy: dialCounts{m: make(map[netip.Addr]int)}}
	ports := n.portsPerProto
	if ports == 0 {
		ports = 28232 // Linux's default ephemeral range
	}
	p.maxHeld = ports / 2
	p.maxHeldPerPod = p.maxHeld / 2
	lo, hi, err := n.socks.ephemeralRange()
	if err != nil {
		return nil, err
	}
	p.ephLo, p.ephHi = lo, hi
	derr := n.socks.do(func() {
		var l netlink.Link
		if l, err = netlink.LinkByName(underlay); err != nil {
			return
		}
		if l.Attrs().EncapType != "ether" {
			// The tc program finds the IPv4 header after an Ethernet one.
			err = fmt.Errorf("%s is not an Ethernet device (%s)", underlay, l.Attrs().EncapType)
			return
		}
		p.underlay = l.Attrs().Index
		src := n.cfg.SourceAddr
		if !src.IsValid() {
			if src, err = underlayAddr(l); err != nil {
				return
			}
		}
		p.src = src.As4()
		if p.tap, err = encap.OpenPlainTap(PlainTapName, src); err != nil {
			return
		}
		if err = p.tap.Probe(); err != nil {
			return
		}
		if p.steer, err = openSteer(underlay, p.src, p.tap.Index()); err != nil {
			return
		}
		p.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		p.close()
		return nil, err
	}
	// Counting its drops is not worth the path: without it they go
	// uncounted.
	var qerr error
	if p.queue, qerr = queuedrops.Follow(p.tap); qerr != nil {
		n.log.Warn("NAT packet path: replies its TAP drops go uncounted", "err", qerr)
	}
	return p, nil
}

// underlayAddr is l's first global IPv4 address.
func underlayAddr(l netlink.Link) (netip.Addr, error) {
	as, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && a.Scope == unix.RT_SCOPE_UNIVERSE {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address", l.Attrs().Name)
}

func (p *packetTCP) close() {
	if p.steer != nil {
		p.steer.close()
	}
	if p.tap != nil {
		p.tap.Close()
	}
	if p.nl != nil {
		p.nl.Close()
	}
}

// tcpPath is Stats.TCPPath.
func (n *NAT) tcpPath() string {
	switch {
	case n.fast != nil && n.fast.usable():
		return "packet"
	case n.fast != nil:
		return "netstack: " + (*n.fast.broken.Load()).Error()
	case n.fastErr != nil:
		return "netstack: " + n.fastErr.Error()
	}
	return "netstack"
}

// usable says whether new connections may take the packet path.
func (p *packetTCP) usable() bool { return p.broken.Load() == nil }

// checkHealth notes a failing TAP or tc program (the reaper calls it each
// second); it returns the failure the first time it sees it.
func (p *packetTCP) checkHealth() error {
	if !p.usable() {
		return nil
	}
	err := p.tap.Err()
	if err == nil {
		err = p.steer.check()
	}
	if err != nil {
		p.broken.Store(&err)
	}
	return err
}

// routed says whether the node routes remote out of the underlay from
// the NAT's source address.
func (p *packetTCP) routed(remote netip.Addr) bool {
	now := time.Now()
	p.routeMu.Lock()
	defer p.routeMu.Unlock()
	if v, ok := p.routes[remote]; ok && now.Before(v.until) {
		return v.ok
	}
	ok := false
	if rs, err := p.nl.RouteGet(remote.AsSlice()); err == nil && len(rs) > 0 {
		r := rs[0]
		ok = r.LinkIndex == p.underlay && (p.fixedSource || r.Src.Equal(p.src[:]))
	}
	if len(p.routes) >= maxRouteCache {
		clear(p.routes)
	}
	p.routes[remote] = routeVerdict{ok: ok, until: now.Add(routeTTL)}
	return ok
}

// handlePacketTCP sends a pod's TCP packet, buf[off:] (TCP, not a
// fragment, validated), by the packet path if its connection is on it or
// may start on it, and reports whether it did; false: use the netstack.
func (n *NAT) handlePacketTCP(buf []byte, off int, hdr packet.VirtioNetHdr, k flowKey, t packet.TCP) bool {
	p := n.fast
	f := n.table.lookup(k)
	switch {
	case f != nil && f.pkt == nil:
		return false // the netstack's
	case f == nil || f.pkt.released.Load():
		// A new connection, or a new one on the 4-tuple of a closed one
		// whose port is gone.
		syn := t.Flags()&(packet.TCPFlagSYN|packet.TCPFlagACK) == packet.TCPFlagSYN
		if f != nil && !syn {
			n.c.drop(DropNoFlow) // a straggler of the closed one
			return true
		}
		if !syn || !p.usable() || !p.routed(k.remote.Addr()) || !p.roomFor(k.pod.Addr()) {
			if f != nil {
				n.table.remove(f) // the netstack takes the 4-tuple over
			}
			return false
		}
		var netstack bool
		if f, netstack = n.newPacketFlow(k, f); f == nil {
			return !netstack
		}
	case f.getState() == stateClosed && t.Flags()&(packet.TCPFlagSYN|packet.TCPFlagACK) == packet.TCPFlagSYN:
		// The pod opens its 4-tuple again while the port lingers: a new
		// connection on the same port, as conntrack reopens TIME_WAIT.
		if !n.reopen(f) {
			return true // dropped and counted
		}
	}
	if off < encap.PlainTapHeadroom {
		// Handle's caller left no room for the TAP's headers.
		b := headroomPool.Get().(*[packet.Headroom + packet.MaxFrameLen]byte)
		defer headroomPool.Put(b)
		buf, off = b[:packet.Headroom+copy(b[packet.Headroom:], buf[off:])], packet.Headroom
		t = packet.TCP(packet.IPv4(buf[off:]).Payload())
	}
	ip := packet.IPv4(buf[off:])
	// The books first: the answer may be read, on another goroutine, as
	// soon as the packet is sent, and a SYN-ACK is checked against the
	// SYN's sequence number.
	payload := len(ip) - ip.HeaderLen() - t.DataOffset()
	flags := t.Flags()
	f.pkt.track(t, payload)
	f.bytesOut.Add(uint64(payload))
	f.touch(n.now())
	n.podSeen(f, t)
	partial := hdr.Flags&packet.VirtioNetHdrFNeedsCsum != 0
	rewriteTCP(ip, partial, true, p.src, f.pkt.port)
	frame, ok := p.tap.Frame(buf, off, hdr)
	if !ok {
		n.c.drop(DropMalformed)
		return true
	}
	if err := p.tap.Send(frame); err != nil {
		n.c.drop(DropSend)
		n.limitedLog("NAT packet path: send", "err", err)
		return true
	}
	// A handshake, a close or a small request may have its answer
	// waiting already. Bulk data and pure ACKs expect none.
	if flags&(packet.TCPFlagSYN|packet.TCPFlagFIN) != 0 || payload > 0 && hdr.GSOType == packet.GSONone && flags&packet.TCPFlagPSH != 0 {
		n.pollReplies()
	}
	return true
}

var headroomPool = sync.Pool{New: func() any { return new([packet.Headroom + packet.MaxFrameLen]byte) }}

// newPacketFlow opens the flow for a pod's SYN: it holds a port, enters
// the flow in the table (in place of old, a closed flow of the same
// 4-tuple, if not nil) and steers the port's replies to the TAP. nil: it
// could not (counted), or with netstack the netstack is to take the SYN
// (the table is full, and the netstack refuses it with a RST as it
// refuses its own; or a flow of the netstack's got in first).
func (n *NAT) newPacketFlow(k flowKey, old *flow) (f *flow, netstack bool) {
	p := n.fast
	// As on the netstack path, a pod may have only so many connections
	// waiting for their remotes: each holds a port, and one pod sending
	// SYNs to remotes that never answer must not take every port.
	if !n.dials.start(k.pod.Addr(), n.cfg.MaxDialsPerPod) {
		n.c.drop(DropDialsPending)
		return nil, false
	}
	dialing := true
	defer func() {
		if dialing {
			n.dials.done(k.pod.Addr())
		}
	}()
	fd, err := n.socks.socket(unix.SOCK_STREAM, 0)
	if err != nil {
		n.c.drop(DropSocket)
		n.limitedLog("NAT packet path: socket", "err", err)
		return nil, false
	}
	want := k.pod.Port()
	if want < p.ephLo || want > p.ephHi {
		want = 0
	}
	port, err := holdPort(fd, p.src, n.tcpPorts, want)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, errPortsExhausted) {
			n.c.drop(DropPortsExhausted)
		} else {
			n.c.drop(DropSocket)
			n.limitedLog("NAT packet path: bind", "err", err)
		}
		return nil, false
	}
	n.hostSockets.Add(1)
	p.held.Add(1)
	p.heldBy.add(k.pod.Addr())
	f = n.newFlow(k, stateSynSent)
	f.pkt = &packetFlow{port: port}
	f.pkt.dialing.Store(true)
	dialing = false // f's now: dialDone ends it, release at the latest
	f.pkt.release = func() {
		n.dialDone(f)
		p.steer.del(port)
		p.byPort[port].CompareAndSwap(f, nil)
		unix.Close(fd)
		if n.tcpPorts.enabled() {
			n.tcpPorts.put(port)
		}
		n.hostSockets.Add(-1)
		p.held.Add(-1)
		p.heldBy.done(k.pod.Addr())
	}
	p.byPort[port].Store(f)
	if err := p.steer.add(port); err != nil {
		f.pkt.letGo()
		n.c.drop(DropSocket)
		n.limitedLog("NAT packet path: port map", "err", err)
		return nil, false
	}
	var got *flow
	ok := false
	if old != nil {
		var displaced *flow
		if displaced, ok = n.table.replace(f); ok && displaced != nil {
			displaced.close()
		}
		got = f
	} else {
		got, ok = n.table.insert(f)
	}
	if !ok {
		f.pkt.letGo()
		if got == nil || got.pkt == nil {
			return nil, true // full, or the netstack's already
		}
		return got, false // a retransmitted SYN raced us: its flow
	}
	n.c.conns.Add(1)
	n.c.packetConns.Add(1)
	f.setCloser(netip.AddrPortFrom(netip.AddrFrom4(p.src), port), func() {
		n.resetPacketFlow(f)
		f.pkt.letGo()
	})
	return f, false
}

// holdPort binds fd, a TCP socket, to src and a port, so that no other
// socket of the node takes it, and returns the port. Like the kernel's
// MASQUERADE it keeps the pod's own port want (0: none) where it can
// (free, and in pr's range if pr has one): the pod does not reuse a port while its
// TIME_WAIT lasts, so neither does the node toward the same remote, whose
// TIME_WAIT would otherwise meet a new connection's SYN. Otherwise it
// takes a port from pr, or one the kernel picks from its ephemeral range.
func holdPort(fd int, src [4]byte, pr *portRange, want uint16) (uint16, error) {
	try := func(port uint16) (bool, error) {
		err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src, Port: int(port)})
		if err == nil {
			return true, nil
		}
		if errors.Is(err, unix.EADDRINUSE) {
			return false, nil
		}
		return false, fmt.Errorf("bind port %d: %w", port, err)
	}
	if !pr.enabled() {
		if want != 0 {
			if ok, err := try(want); ok || err != nil {
				return want, err
			}
		}
		if ok, err := try(0); err != nil || !ok {
			if err == nil {
				err = errPortsExhausted
			}
			return 0, err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return 0, err
		}
		return uint16(sa.(*unix.SockaddrInet4).Port), nil
	}
	if want != 0 && pr.take(want) {
		ok, err := try(want)
		if ok {
			return want, nil
		}
		pr.put(want)
		if err != nil {
			return 0, err
		}
	}
	return bindFromRange(fd, src, pr)
}

// resetPacketFlow ends a connection that is not closed yet (it idled
// out, its pod was deleted, NAT is closing) with a RST each way, as the
// netstack path does when it lets go of one: the remote frees its end
// instead of keeping it until its own timeout, and the pod learns at
// once rather than at its next send.
func (n *NAT) resetPacketFlow(f *flow) {
	if f.getState() == stateClosed || f.pkt.released.Load() {
		return
	}
	p := n.fast
	var b [packet.Headroom + packet.IPv4MinHeaderLen + packet.TCPMinHeaderLen]byte
	ip := packet.IPv4(b[packet.Headroom:])
	buildRST(ip, p.src, f.pkt.port, f.key.remote, f.pkt.podNext.Load(), n.ipID.Add(1))
	if frame, ok := p.tap.Frame(b[:], packet.Headroom, packet.VirtioNetHdr{}); ok {
		p.tap.Send(frame)
	}
	if f.pkt.acked.Load() {
		pod := f.key.pod
		buildRST(ip, f.key.remote.Addr().As4(), f.key.remote.Port(), pod, f.pkt.podAck.Load(), n.ipID.Add(1))
		n.cfg.Deliver(b[:], packet.Headroom, packet.VirtioNetHdr{})
	}
}

// buildRST writes into ip a 40-byte TCP RST from src:sport to dst with
// sequence number seq.
func buildRST(ip packet.IPv4, src [4]byte, sport uint16, dst netip.AddrPort, seq, id uint32) {
	const total = packet.IPv4MinHeaderLen + packet.TCPMinHeaderLen
	d := dst.Addr().As4()
	writeIPv4Header(ip, total, packet.ProtoTCP, src, d, id)
	t := packet.TCP(ip[packet.IPv4MinHeaderLen:total])
	clear(t)
	t.SetSrcPort(sport)
	t.SetDstPort(dst.Port())
	t.SetSeq(seq)
	t[12] = packet.TCPMinHeaderLen / 4 << 4
	t.SetFlags(packet.TCPFlagRST)
	t.SetChecksum(packet.Checksum(t, packet.PseudoHeaderSum(packet.ProtoTCP, src, d, packet.TCPMinHeaderLen)))
}

// podSeen moves a packet-path flow along on a segment from its pod,
// which is trusted with its own connection: its RST or FIN counts at
// once, and so does its acknowledgment of the remote's FIN.
func (n *NAT) podSeen(f *flow, t packet.TCP) {
	pf := f.pkt
	flags := t.Flags()
	switch {
	case flags&packet.TCPFlagRST != 0:
		n.closeState(f, stateClosed)
		return
	case flags&packet.TCPFlagFIN != 0:
		pf.finOut.Store(true)
	}
	if pf.podAcksFIN(t) {
		pf.finInPending.Store(false)
		pf.finIn.Store(true)
	}
	n.finState(f)
}

// remoteSeen moves a packet-path flow along on a segment t, with payload
// bytes of data, from its remote, as far as the pod's TCP will take it:
// anyone who knows the 4-tuple can send segments from the remote's
// address. A RST counts only with the sequence number the pod expects
// next (RFC 5961: the pod's TCP takes no other, and a remote that reset
// answers the challenge ACK an in-window one draws with that number),
// or, to a SYN, with the ACK of it; a FIN counts once the pod acknowledges
// it.
func (n *NAT) remoteSeen(f *flow, t packet.TCP, payload int) {
	pf := f.pkt
	flags := t.Flags()
	switch {
	case flags&packet.TCPFlagRST != 0:
		exact := pf.acked.Load() && t.Seq() == pf.podAck.Load()
		toSYN := !pf.acked.Load() && flags&packet.TCPFlagACK != 0 && t.Ack() == pf.podNext.Load()
		if exact || toSYN {
			n.closeState(f, stateClosed)
		}
	case flags&packet.TCPFlagSYN != 0:
		if flags&packet.TCPFlagACK != 0 && t.Ack() == pf.podNext.Load() && f.getState() == stateSynSent {
			f.setState(stateEstablished)
			n.dialDone(f)
		}
	}
	if flags&packet.TCPFlagFIN != 0 && !pf.finIn.Load() {
		pf.finInSeq.Store(t.Seq() + uint32(payload) + 1)
		pf.finInPending.Store(true)
	}
}

// finState moves f to closing once one side's FIN counts, and to closed
// once both do.
func (n *NAT) finState(f *flow) {
	in, out := f.pkt.finIn.Load(), f.pkt.finOut.Load()
	switch {
	case in && out:
		n.closeState(f, stateClosed)
	case in || out:
		n.closeState(f, stateClosing)
	}
}

// closeState moves f to closing or closed, never back, noting when.
func (n *NAT) closeState(f *flow, s flowState) {
	for {
		old := f.state.Load()
		if flowState(old) == stateClosed || flowState(old) == s {
			return
		}
		if f.state.CompareAndSwap(old, uint32(s)) {
			f.closedAt.Store(n.now())
			n.dialDone(f)
			if s == stateClosed {
				// A timer of its own, not the reaper's next tick: a pod
				// opening connections at thousands a second would hold
				// twice the ports meanwhile.
				time.AfterFunc(portLinger, func() { f.pkt.letGoIfClosed(f) })
			}
			return
		}
	}
}

// rewriteTCP rewrites a TCP packet's source (out: from the pod) or
// destination (back: to the pod) to addr:port, patching the IPv4 and TCP
// checksums. partial: the TCP checksum field holds only the pseudo-header
// sum (a partial checksum, completed later), which covers the addresses
// but not the ports.
func rewriteTCP(ip packet.IPv4, partial, out bool, addr [4]byte, port uint16) {
	ihl := ip.HeaderLen()
	t := packet.TCP(ip[ihl:])
	addrOff, portOff := 16, 2
	if out {
		addrOff, portOff = 12, 0
	}
	oldAddr := binary.BigEndian.Uint32(ip[addrOff:])
	newAddr := binary.BigEndian.Uint32(addr[:])
	oldPort := binary.BigEndian.Uint16(t[portOff:])
	copy(ip[addrOff:addrOff+4], addr[:])
	binary.BigEndian.PutUint16(t[portOff:], port)
	binary.BigEndian.PutUint16(ip[10:], packet.Update32(binary.BigEndian.Uint16(ip[10:]), oldAddr, newAddr))
	c := binary.BigEndian.Uint16(t[16:])
	if partial {
		binary.BigEndian.PutUint16(t[16:], ^packet.Update32(^c, oldAddr, newAddr))
		return
	}
	c = packet.Update32(c, oldAddr, newAddr)
	binary.BigEndian.PutUint16(t[16:], packet.Update16(c, oldPort, port))
}

// routinePacketReplies reads what the tc program steered into the TAP
// and delivers it to the pods, until the TAP is closed. New starts it.
func (n *NAT) routinePacketReplies() {
	defer n.wg.Done()
	p := n.fast
	for {
		err := p.tap.ReadWait(func(fd int) bool {
			p.replyMu.Lock()
			defer p.replyMu.Unlock()
			got, _ := n.drainReplies(func(b []byte) (int, error) { return unix.Read(fd, b) })
			return got > 0
		})
		if err != nil {
			// Close cancels n.ctx before it closes the TAP.
			if n.ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
				n.log.Error("NAT packet path: reading replies failed; they go unanswered", "err", err)
			}
			return
		}
	}
}

// maxDrain bounds the frames one drainReplies takes, so that the one
// holding replyMu lets the other in now and then.
const maxDrain = 64

// drainReplies reads frames with read until it has none (EAGAIN) or
// maxDrain, and delivers them. It returns how many it read. Caller holds
// replyMu: the one reader at a time keeps each flow's replies in order.
func (n *NAT) drainReplies(read func([]byte) (int, error)) (int, error) {
	p := n.fast
	// The IPv4 header lands at packet.Headroom, so the switch can put
	// its headers in front without a copy.
	start := packet.Headroom - encap.PlainTapHeadroom
	for got := 0; got < maxDrain; got++ {
		rn, err := read(p.replyBuf[start:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return got, err
		}
		n.packetReply(p.replyBuf[:start+rn], start)
	}
	return maxDrain, nil
}

// pollReplies delivers the replies already waiting in the TAP, if no one
// else is reading it. A TCP handshake or a request to a remote close by
// is often answered within the write that sent it (the kernel forwards
// it, and the answer comes back, in the same system call), and taking
// the answer here spares the reader's wake-up, about as long on this
// kind of VM as the rest of the round trip.
func (n *NAT) pollReplies() {
	p := n.fast
	if !p.replyMu.TryLock() {
		return // the reader is at it
	}
	n.drainReplies(p.tap.TryRead)
	p.replyMu.Unlock()
}

// packetReply translates one frame read from the TAP, buf[start:], for
// its pod.
func (n *NAT) packetReply(buf []byte, start int) {
	var h packet.VirtioNetHdr
	if len(buf)-start < encap.PlainTapHeadroom || h.Decode(buf[start:]) != nil ||
		packet.Ethernet(buf[start+packet.VirtioNetHdrLen:]).EtherType() != packet.EtherTypeIPv4 {
		n.c.drop(DropMalformed)
		return
	}
	off := start + encap.PlainTapHeadroom
	ip := packet.IPv4(buf[off:])
	if ip.Validate() != packet.ParseOK || ip.IsFragment() || packet.ValidateTransport(ip[:ip.TotalLen()]) != packet.ParseOK {
		n.c.drop(DropMalformed)
		return
	}
	ip = ip[:ip.TotalLen()]
	switch ip.Protocol() {
	case packet.ProtoTCP:
		n.packetReplyTCP(buf[:off+len(ip)], off, h)
	case packet.ProtoICMP:
		if t := ip.Payload()[0]; t != packet.ICMPDestUnreachable && t != packet.ICMPTimeExceeded {
			n.c.drop(DropUnsupportedICMP)
			return
		}
		n.packetReplyICMP(ip, buf[:off+len(ip)], off)
	default:
		n.c.drop(DropUnsupportedProtocol)
	}
}

// packetReplyTCP delivers a remote's TCP segment to the pod of its flow.
func (n *NAT) packetReplyTCP(buf []byte, off int, h packet.VirtioNetHdr) {
	ip := packet.IPv4(buf[off:])
	t := packet.TCP(ip.Payload())
	f := n.fast.byPort[t.DstPort()].Load()
	if f == nil || ip.DstBytes() != n.fast.src || f.key.remote != netip.AddrPortFrom(ip.Src(), t.SrcPort()) {
		n.c.drop(DropNoFlow)
		return
	}
	// The TAP's offsets count from the Ethernet header, Deliver's from
	// the IPv4 header.
	var hdr packet.VirtioNetHdr
	partial := h.Flags&packet.VirtioNetHdrFNeedsCsum != 0
	if partial {
		if int(h.CsumStart) < packet.EthernetHeaderLen {
			n.c.drop(DropMalformed)
			return
		}
		hdr = packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: h.GSOType, GSOSize: h.GSOSize,
			CsumStart: h.CsumStart - packet.EthernetHeaderLen, CsumOffset: h.CsumOffset}
		if h.HdrLen > packet.EthernetHeaderLen {
			hdr.HdrLen = h.HdrLen - packet.EthernetHeaderLen
		}
	} else if h.GSOType != packet.GSONone {
		n.c.drop(DropMalformed)
		return
	}
	pod := f.key.pod
	payload := len(ip) - ip.HeaderLen() - t.DataOffset()
	n.remoteSeen(f, t, payload) // before the rewrite: it reads sequence numbers only
	rewriteTCP(ip, partial, false, pod.Addr().As4(), pod.Port())
	f.bytesIn.Add(uint64(payload))
	f.touch(n.now())
	n.cfg.Deliver(buf, off, hdr)
}

// packetReplyICMP delivers an ICMP error about a packet-path connection
// to its pod, its quote rewritten to what the pod sent.
func (n *NAT) packetReplyICMP(ip packet.IPv4, buf []byte, off int) {
	icmp := ip.Payload()
	const quoteAt = 8
	if len(icmp) < quoteAt+packet.IPv4MinHeaderLen+4 {
		n.c.drop(DropICMPError)
		return
	}
	q := packet.IPv4(icmp[quoteAt:])
	qihl := q.HeaderLen()
	if q.Protocol() != packet.ProtoTCP || qihl < packet.IPv4MinHeaderLen || len(q) < qihl+4 {
		n.c.drop(DropICMPError)
		return
	}
	qt := q[qihl:]
	f := n.fast.byPort[binary.BigEndian.Uint16(qt)].Load()
	if f == nil || q.SrcBytes() != n.fast.src || f.key.remote != netip.AddrPortFrom(q.Dst(), binary.BigEndian.Uint16(qt[2:])) {
		n.c.drop(DropNoFlow)
		return
	}
	pod := f.key.pod
	podAddr := pod.Addr().As4()
	old := binary.BigEndian.Uint32(q[12:])
	copy(q[12:16], podAddr[:])
	binary.BigEndian.PutUint16(q[10:], packet.Update32(binary.BigEndian.Uint16(q[10:]), old, binary.BigEndian.Uint32(podAddr[:])))
	binary.BigEndian.PutUint16(qt, pod.Port())
	binary.BigEndian.PutUint16(icmp[2:], 0)
	binary.BigEndian.PutUint16(icmp[2:], packet.Checksum(icmp, 0))
	old = binary.BigEndian.Uint32(ip[16:])
	copy(ip[16:20], podAddr[:])
	binary.BigEndian.PutUint16(ip[10:], packet.Update32(binary.BigEndian.Uint16(ip[10:]), old, binary.BigEndian.Uint32(podAddr[:])))
	f.touch(n.now())
	n.cfg.Deliver(buf, off, packet.VirtioNetHdr{})
}
