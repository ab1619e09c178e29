package nat

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"podnet/internal/packet"
)

const (
	// dialTimeout bounds a TCP dial to a remote that does not answer. The
	// pod's SYN retransmissions are absorbed meanwhile (the forwarder
	// ignores duplicates of a request in flight); when it expires the
	// pod gets a host unreachable rather than waiting out its own ~2 min
	// of SYN retries.
	dialTimeout = 30 * time.Second
	// spliceBufSize is the copy buffer of each direction of a spliced
	// connection (bytes), pooled so idle connections hold none.
	spliceBufSize = 64 << 10
	// synTrackMax bounds the SYN sequence numbers remembered for building
	// ICMP errors; synTrackTTL forgets records whose request never came.
	synTrackMax = maxInFlight
	synTrackTTL = 2 * dialTimeout
)

var splicePool = sync.Pool{New: func() any { return new([spliceBufSize]byte) }}

// synTracker remembers the initial sequence number of SYNs being dialled.
// An ICMP error about a connection attempt must quote the SYN's sequence
// number: Linux drops ICMP errors whose quoted sequence lies outside
// snd_una..snd_nxt (tcp_v4_err, LINUX_MIB_OUTOFWINDOWICMPS), and gVisor's
// ForwarderRequest does not expose it.
type synTracker struct {
	// mu guards m.
	mu sync.Mutex
	m  map[flowKey]synRecord
}

type synRecord struct {
	seq uint32
	at  int64
}

func (s *synTracker) record(k flowKey, seq uint32, now int64) {
	s.mu.Lock()
	if _, ok := s.m[k]; ok || len(s.m) < synTrackMax {
		s.m[k] = synRecord{seq, now}
	}
	s.mu.Unlock()
}

func (s *synTracker) take(k flowKey) (uint32, bool) {
	s.mu.Lock()
	r, ok := s.m[k]
	delete(s.m, k)
	s.mu.Unlock()
	return r.seq, ok
}

func (s *synTracker) expire(now int64) {
	s.mu.Lock()
	for k, r := range s.m {
		if time.Duration(now-r.at) > synTrackTTL {
			delete(s.m, k)
		}
	}
	s.mu.Unlock()
}

// dialCounts counts something per pod: its TCP dials in progress
// (NAT.dials), its ports on the packet path (packetTCP.heldBy).
type dialCounts struct {
	mu sync.Mutex
	m  map[netip.Addr]int // guarded by mu; pods with none are not in it
}

// start counts a dial for pod unless it has max already.
func (d *dialCounts) start(pod netip.Addr, max int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m[pod] >= max {
		return false
	}
	d.m[pod]++
	return true
}

// add counts one more for pod, without a limit.
func (d *dialCounts) add(pod netip.Addr) {
	d.mu.Lock()
	d.m[pod]++
	d.mu.Unlock()
}

func (d *dialCounts) count(pod netip.Addr) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[pod]
}

func (d *dialCounts) done(pod netip.Addr) {
	d.mu.Lock()
	if d.m[pod]--; d.m[pod] <= 0 {
		delete(d.m, pod)
	}
	d.mu.Unlock()
}

// handleTCP sends a pod's TCP packet, buf[off:], by the packet path if
// its connection is on it or may start on it, and else passes it to the
// netstack, noting SYNs.
func (n *NAT) handleTCP(buf []byte, off int, hdr packet.VirtioNetHdr) {
	ip := packet.IPv4(buf[off:])
	if !ip.IsFragment() {
		if packet.ValidateTransport(ip) != packet.ParseOK {
			n.c.drop(DropMalformed)
			return
		}
		t := packet.TCP(ip.Payload())
		k := flowKey{packet.ProtoTCP, netip.AddrPortFrom(ip.Src(), t.SrcPort()), netip.AddrPortFrom(ip.Dst(), t.DstPort())}
		if n.fast != nil && n.handlePacketTCP(buf, off, hdr, k, t) {
			return
		}
		if t.Flags()&(packet.TCPFlagSYN|packet.TCPFlagACK) == packet.TCPFlagSYN {
			n.syns.record(k, t.Seq(), n.now())
		}
	}
	// Fragments go in too: the netstack reassembles them.
	n.injectTCP(ip)
}

// routineTCPRequest handles one connection request from a pod. gVisor's
// forwarder starts it in its own goroutine for each new SYN; it registers
// with n.wg before doing anything, and returns at once if Close has begun
// (the netstack is going away, so it leaves the request alone).
//
// It dials the remote first and only then answers the pod, so the pod sees
// what the remote did: a refusal becomes a RST, an unreachable remote an
// ICMP host unreachable, and only a connected remote gets a SYN-ACK.
func (n *NAT) routineTCPRequest(r *tcp.ForwarderRequest) {
	if !n.enter() {
		return
	}
	defer n.wg.Done()

	id := r.ID()
	key := flowKey{
		proto:  packet.ProtoTCP,
		pod:    netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		remote: netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
	}
	seq, _ := n.syns.take(key)
	// The netstack takes maxInFlight requests at once, for all pods: a
	// pod whose remotes do not answer must not hold them all.
	if !n.dials.start(key.pod.Addr(), n.cfg.MaxDialsPerPod) {
		n.c.drop(DropDialsPending)
		r.Complete(false) // no RST: the pod's retransmitted SYN tries again
		return
	}
	f := n.newFlow(key, stateSynSent)
	old, ok := n.table.replace(f)
	if !ok {
		n.dials.done(key.pod.Addr())
		if n.ctx.Err() == nil { // else Close drained the table
			n.c.drop(DropTableFull)
		}
		r.Complete(true)
		return
	}
	if old != nil {
		// The netstack has no endpoint for this 4-tuple any more (it sent
		// the SYN to the forwarder), so the old flow is finished.
		old.close()
	}
	n.c.conns.Add(1)

	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	hc, err := n.dialTCP(ctx, key.remote)
	cancel()
	n.dials.done(key.pod.Addr())
	if err != nil {
		n.table.remove(f)
		reason := dialFailure(err)
		n.c.drop(reason)
		switch reason {
		case DropDialUnreachable:
			r.Complete(false)
			n.tcpUnreachable(key, seq)
		case DropDialError:
			n.limitedLog("tcp dial failed", "remote", key.remote, "err", err)
			fallthrough
		default: // refused, ports exhausted
			r.Complete(true)
		}
		return
	}
	n.hostSockets.Add(1)
	host := hc.conn.(*net.TCPConn)

	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		n.table.remove(f)
		n.c.drop(DropEndpoint)
		r.Complete(true)
		host.SetLinger(0)
		host.Close()
		n.tcpPorts.put(hc.port)
		n.hostSockets.Add(-1)
		return
	}
	r.Complete(false)

	s := &splice{n: n, f: f, ep: ep, pod: gonet.NewTCPConn(&wq, ep), host: host, port: hc.port}
	s.open.Store(2)
	f.setState(stateEstablished)
	f.touch(n.now())
	n.wg.Add(2)
	go s.routineCopyOut()
	go s.routineCopyIn()
	f.setCloser(unmap(localAddr(host)), s.abort)
}

// tcpUnreachable sends the pod an ICMP host unreachable about its SYN.
// The netstack never saw a copy worth keeping, so the SYN's header is
// rebuilt: addresses, ports and the sequence number are what the pod's
// kernel matches the error against. Its source is the remote, which is
// the address the pod was talking to.
func (n *NAT) tcpUnreachable(k flowKey, seq uint32) {
	var orig [packet.IPv4MinHeaderLen + packet.TCPMinHeaderLen]byte
	ip := packet.IPv4(orig[:])
	writeIPv4Header(ip, len(orig), packet.ProtoTCP, k.pod.Addr().As4(), k.remote.Addr().As4(), 0)
	t := packet.TCP(orig[packet.IPv4MinHeaderLen:])
	t.SetSrcPort(k.pod.Port())
	t.SetDstPort(k.remote.Port())
	t.SetSeq(seq)
	t[12] = packet.TCPMinHeaderLen / 4 << 4
	t.SetFlags(packet.TCPFlagSYN)
	t.SetChecksum(packet.TransportChecksum(ip))
	var out [packet.ICMPErrorMaxLen]byte
	m := packet.BuildICMPError(out[:], ip, packet.ICMPDestUnreachable, packet.ICMPHostUnreachable, 0, k.remote.Addr().As4(), 0)
	if m == 0 {
		n.c.drop(DropICMPError)
		return
	}
	n.cfg.Deliver(out[:m], 0, packet.VirtioNetHdr{})
}

// splice copies one pod connection (netstack side) to and from its host
// connection, passing half-closes and resets through.
type splice struct {
	n    *NAT
	f    *flow
	ep   tcpip.Endpoint
	pod  *gonet.TCPConn
	host *net.TCPConn
	port uint16 // reserved in n.tcpPorts

	open      atomic.Int32 // copy goroutines still running
	abortOnce sync.Once
	doneOnce  sync.Once
}

// abort resets both sides: a RST to the pod and to the remote. It is the
// flow's closer (reaper, Close, a displaced 4-tuple) and the reaction to a
// reset or write failure on either side. It unblocks both copy goroutines.
func (s *splice) abort() {
	s.abortOnce.Do(func() {
		s.ep.Abort()
		s.pod.SetDeadline(time.Unix(1, 0))
		s.host.SetLinger(0)
		s.host.Close()
	})
}

// routineCopyOut copies pod to remote. Started by routineTCPRequest; exits
// at the pod's FIN (passed on as a FIN to the remote) or any error.
func (s *splice) routineCopyOut() {
	defer s.finish()
	buf := splicePool.Get().(*[spliceBufSize]byte)
	defer splicePool.Put(buf)
	for {
		nr, err := s.pod.Read(buf[:])
		if nr > 0 {
			// Count before writing: the answer may be back (and the
			// entry inspected) before Write returns.
			s.f.bytesOut.Add(uint64(nr))
			s.f.touch(s.n.now())
			if _, werr := s.host.Write(buf[:nr]); werr != nil {
				s.abort()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.host.CloseWrite()
				s.halfClosed()
			} else {
				s.abort()
			}
			return
		}
	}
}

// routineCopyIn copies remote to pod. Started by routineTCPRequest; exits
// at the remote's FIN (passed on to the pod) or any error.
func (s *splice) routineCopyIn() {
	defer s.finish()
	buf := splicePool.Get().(*[spliceBufSize]byte)
	defer splicePool.Put(buf)
	for {
		nr, err := s.host.Read(buf[:])
		if nr > 0 {
			s.f.bytesIn.Add(uint64(nr))
			s.f.touch(s.n.now())
			if _, werr := s.pod.Write(buf[:nr]); werr != nil {
				s.abort()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.pod.CloseWrite()
				s.halfClosed()
			} else {
				s.abort()
			}
			return
		}
	}
}

func (s *splice) halfClosed() {
	if s.f.state.CompareAndSwap(uint32(stateEstablished), uint32(stateClosing)) {
		s.f.closedAt.Store(s.n.now())
	}
}

// finish runs as each copy goroutine exits; the last one closes both
// connections (gracefully if nothing went wrong: the FINs are already
// out), releases the port and leaves the flow in the table as closed, for
// the reaper to drop after TCPClosing.
func (s *splice) finish() {
	defer s.n.wg.Done()
	if s.open.Add(-1) != 0 {
		return
	}
	s.doneOnce.Do(func() {
		s.pod.Close()
		s.host.Close()
		s.n.tcpPorts.put(s.port)
		s.n.hostSockets.Add(-1)
		s.f.closedAt.Store(s.n.now())
		s.f.setState(stateClosed)
	})
}

// addrFrom converts a netstack address to netip (it is always IPv4 here).
func addrFrom(a tcpip.Address) netip.Addr {
	addr, _ := netip.AddrFromSlice(a.AsSlice())
	return addr
}
