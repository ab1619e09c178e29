package nat

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
	"podnet/internal/udpoffload"
)

const (
	// dgramHeadroom is room for the IPv4 and UDP headers in front of a
	// datagram read from a host socket, so replies are built in place.
	dgramHeadroom = packet.IPv4MinHeaderLen + packet.UDPHeaderLen
	// dgramBufSize holds the largest IPv4 datagram, after DeliverRoom.
	dgramBufSize = DeliverRoom + 65535
	// errQuoteMax is how much of an ICMP error's quote is kept: enough for
	// the 576-byte error the pod gets (RFC 1812 §4.3.2.3).
	errQuoteMax = packet.ICMPErrorMaxLen
)

// dgramPool holds reply buffers; a flow takes one only while a datagram
// is being read and delivered, so idle flows hold no 64 KiB buffer.
var dgramPool = sync.Pool{New: func() any { return new([dgramBufSize]byte) }}

// dgramFlow is the host side of a UDP or ICMP echo flow: one connected
// datagram socket in the node's namespace.
type dgramFlow struct {
	conn net.Conn
	rc   syscall.RawConn
	port uint16 // reserved in the port range (UDP with PortMin..PortMax)
	// noGSO: the kernel has no UDP_SEGMENT, or refused a send with it on
	// this flow's path; its superframes go one datagram at a time.
	noGSO atomic.Bool

	closeOnce sync.Once

	// ebuf and oob are routineDatagramReader's scratch: the error queue's
	// quotes, and control messages (8-byte aligned, as cmsghdrs are read
	// in place).
	ebuf [errQuoteMax]byte
	oob  [16]uint64
}

// handleUDP sends a pod's UDP datagram through the flow's host socket,
// opening it for a new flow. With gsoSize set, ip is a UDP superframe
// (see Handle) and its datagrams leave in one send.
func (n *NAT) handleUDP(ip packet.IPv4, gsoSize int) {
	if ip.IsFragment() {
		n.c.drop(DropFragment)
		return
	}
	if packet.ValidateTransport(ip) != packet.ParseOK {
		n.c.drop(DropMalformed)
		return
	}
	u := packet.UDP(ip.Payload())
	l := int(u.Length())
	if l < packet.UDPHeaderLen || l > len(u) {
		n.c.drop(DropMalformed)
		return
	}
	payload := u[packet.UDPHeaderLen:l]
	if gsoSize < 0 || gsoSize >= len(payload) {
		gsoSize = 0 // one datagram
	}
	k := flowKey{packet.ProtoUDP, netip.AddrPortFrom(ip.Src(), u.SrcPort()), netip.AddrPortFrom(ip.Dst(), u.DstPort())}
	f := n.table.lookup(k)
	if f == nil {
		if f = n.newDatagramFlow(k); f == nil {
			return
		}
	}
	// conntrack's rule: a flow is assured once the originator speaks
	// again after a reply. Decided before sending: the reply to this very
	// datagram can come back, and mark the flow replied, before send
	// returns.
	again := f.getState() == stateReplied
	if !n.send(f, payload, gsoSize) {
		return
	}
	if again {
		f.state.CompareAndSwap(uint32(stateReplied), uint32(stateAssured))
	}
}

// handleICMP sends a pod's echo request through the flow's ping socket.
func (n *NAT) handleICMP(ip packet.IPv4) {
	if ip.IsFragment() {
		n.c.drop(DropFragment)
		return
	}
	if packet.ValidateTransport(ip) != packet.ParseOK {
		n.c.drop(DropMalformed)
		return
	}
	m := packet.ICMP(ip.Payload())
	if m.Type() != packet.ICMPEcho || m.Code() != 0 {
		n.c.drop(DropUnsupportedICMP)
		return
	}
	id := binary.BigEndian.Uint16(m[4:6])
	k := flowKey{packet.ProtoICMP, netip.AddrPortFrom(ip.Src(), id), netip.AddrPortFrom(ip.Dst(), 0)}
	f := n.table.lookup(k)
	if f == nil {
		if f = n.newDatagramFlow(k); f == nil {
			return
		}
	}
	// The kernel replaces the identifier with the socket's own and
	// recomputes the checksum (ping_v4_sendmsg); the sequence number and
	// data go out as the pod sent them.
	n.send(f, m, 0)
}

// sender carries one send into a RawConn.Write callback. The callback is
// a method value bound once per sender, and senders are pooled, so
// sending does not allocate.
type sender struct {
	b    []byte
	gso  uint16 // non-zero: b is datagrams of gso bytes, sent with UDP_SEGMENT
	cmsg udpoffload.SegmentCmsg
	err  error
	fn   func(fd uintptr) bool
}

// maxUDPSegments is the most datagrams one UDP_SEGMENT send may carry on
// every kernel (UDP_MAX_SEGMENTS: 64 before Linux 6.9, 128 since). The
// switch's GRO merges at most packet.GROMaxSegments, the same; a pod's
// own superframe may hold up to 128 (its kernel's limit, which the
// switch checks), and is sent in parts of this many.
const maxUDPSegments = 64

var senderPool = sync.Pool{New: func() any {
	s := new(sender)
	s.fn = s.write
	s.cmsg.Init()
	return s
}}

// write makes one non-blocking send attempt.
func (s *sender) write(fd uintptr) bool {
	if s.gso == 0 {
		_, s.err = unix.Write(int(fd), s.b)
	} else {
		s.cmsg.Size = s.gso
		_, s.err = unix.SendmsgN(int(fd), s.b, s.cmsg.Bytes(), nil, 0)
	}
	return true // never wait for room: a full send buffer drops, as a full qdisc would
}

// send writes one datagram, or with gsoSize set the datagrams of b cut
// every gsoSize bytes, without waiting. It reports whether all were sent.
func (n *NAT) send(f *flow, b []byte, gsoSize int) bool {
	d := f.dgram
	// Count before sending: the reply may be back (and the entry
	// inspected) before the write returns.
	f.bytesOut.Add(uint64(len(b)))
	f.touch(n.now())
	s := senderPool.Get().(*sender)
	defer func() {
		s.b, s.err = nil, nil
		senderPool.Put(s)
	}()
	ok := true
	if gsoSize > 0 && !d.noGSO.Load() {
		for len(b) > 0 {
			part := b[:min(len(b), maxUDPSegments*gsoSize)]
			s.b, s.gso = part, uint16(gsoSize)
			err := n.sendOne(d, s)
			if err == unix.EIO || err == unix.EINVAL || err == unix.EMSGSIZE {
				// The kernel refuses to segment on this path
				// (udp_send_skb): a segment bigger than the path MTU
				// (EMSGSIZE here, EINVAL on older kernels), an egress
				// without checksum offload or through IPsec (EIO). It
				// fragments a datagram sent alone, so this flow sends
				// one at a time from now on, this part included.
				d.noGSO.Store(true)
				break
			}
			ok = n.sent(f, err, len(part), (len(part)+gsoSize-1)/gsoSize) && ok
			b = b[len(part):]
		}
		if len(b) == 0 {
			return ok
		}
	}
	s.gso = 0
	if gsoSize == 0 {
		s.b = b
		return n.sent(f, n.sendOne(d, s), len(b), 1)
	}
	for len(b) > 0 {
		s.b = b[:min(gsoSize, len(b))]
		b = b[len(s.b):]
		ok = n.sent(f, n.sendOne(d, s), len(s.b), 1) && ok
	}
	return ok
}

// sendOne makes s's send on d's socket, again after a stale error.
func (n *NAT) sendOne(d *dgramFlow, s *sender) error {
	var err error
	for range 2 {
		if err = d.rc.Write(s.fn); err == nil {
			err = s.err
		}
		// A pending ICMP error on a connected socket fails the next send
		// (sock_alloc_send_pskb returns sk_err) without sending; the
		// error queue still tells the reader about it. Send again.
		if err != unix.ECONNREFUSED && err != unix.EHOSTUNREACH && err != unix.ENETUNREACH {
			break
		}
	}
	return err
}

// sent accounts for the outcome of sending segs datagrams of bytes in
// all: a failure takes them back out of the flow's count and drops them.
func (n *NAT) sent(f *flow, err error, bytes, segs int) bool {
	if err == nil {
		return true
	}
	f.bytesOut.Add(-uint64(bytes))
	n.c.dropN(DropSend, segs)
	return false
}

// newDatagramFlow opens the host socket of a new UDP or ICMP flow, starts
// its reader and adds it to the table. It returns nil (and counts why) if
// the flow is refused. Two packets racing to open the same flow both open
// a socket; the loser closes its own and uses the winner's.
func (n *NAT) newDatagramFlow(k flowKey) *flow {
	if !n.table.hasRoom() {
		n.c.drop(DropTableFull)
		return nil
	}
	var (
		hc    hostConn
		err   error
		state flowState
	)
	switch k.proto {
	case packet.ProtoUDP:
		hc, err = n.dialDatagram(0, k.remote, n.udpPorts)
		state = stateUnreplied
	default:
		hc, err = n.dialDatagram(unix.IPPROTO_ICMP, k.remote, nil)
		state = stateActive
	}
	if err != nil {
		if errors.Is(err, errPortsExhausted) {
			n.c.drop(DropPortsExhausted)
		} else {
			n.c.drop(DropSocket)
			n.limitedLog("open host socket failed", "proto", protoName(k.proto), "remote", k.remote, "err", err)
		}
		return nil
	}
	rc, err := hc.conn.(syscall.Conn).SyscallConn()
	if err != nil {
		hc.conn.Close()
		n.udpPorts.put(hc.port)
		n.c.drop(DropSocket)
		return nil
	}
	d := &dgramFlow{conn: hc.conn, rc: rc, port: hc.port}
	d.noGSO.Store(!hc.gso)
	f := n.newFlow(k, state)
	f.dgram = d
	got, ok := n.table.insert(f)
	if !ok {
		d.conn.Close()
		n.udpPorts.put(d.port)
		if got == nil && n.ctx.Err() == nil { // else Close drained the table
			n.c.drop(DropTableFull)
		}
		return got
	}
	n.c.conns.Add(1)
	if k.proto == packet.ProtoUDP {
		n.hostSockets.Add(1)
	}
	n.wg.Add(1)
	go n.routineDatagramReader(f)
	f.setCloser(unmap(localAddr(d.conn)), func() { n.closeDatagram(f) })
	return f
}

func (n *NAT) closeDatagram(f *flow) {
	d := f.dgram
	d.closeOnce.Do(func() {
		d.conn.Close()
		if f.key.proto == packet.ProtoUDP {
			n.udpPorts.put(d.port)
			n.hostSockets.Add(-1)
		}
	})
}

// routineDatagramReader turns what a flow's host socket receives into
// packets for the pod: datagrams become replies, queued ICMP errors become
// ICMP errors. Started by newDatagramFlow; exits when the flow's socket is
// closed (reaper or Close).
func (n *NAT) routineDatagramReader(f *flow) {
	defer n.wg.Done()
	d := f.dgram
	read := func(fd uintptr) bool { return n.readDatagram(f, int(fd)) }
	for {
		if err := d.rc.Read(read); err != nil {
			return
		}
	}
}

// readDatagram handles what is ready on fd: first the error queue, then
// one read: a datagram, or for UDP a burst the kernel merged (UDP_GRO),
// which goes to the pod as one UDP superframe. It returns false to wait
// for the socket to become readable again.
func (n *NAT) readDatagram(f *flow, fd int) bool {
	d := f.dgram
	oob := unsafe.Slice((*byte)(unsafe.Pointer(&d.oob[0])), len(d.oob)*8)
	for {
		nb, oobn, _, err := recvmsg(fd, d.ebuf[:], oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			break
		}
		n.icmpFromErrQueue(f, d.ebuf[:nb], oob[:oobn])
	}
	buf := dgramPool.Get().(*[dgramBufSize]byte)
	defer dgramPool.Put(buf)
	nr, oobn, flags, err := recvmsg(fd, buf[DeliverRoom+dgramHeadroom:], oob, unix.MSG_DONTWAIT)
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	if err != nil || nr < 0 {
		// sk_err of a connected socket (ECONNREFUSED after a port
		// unreachable): consumed here, reported from the error queue.
		return true
	}
	if flags&unix.MSG_TRUNC != 0 {
		// Merged beyond one IPv4 packet: only where the node's GRO limit
		// was raised above 64 KiB. What did not fit is lost.
		n.c.drop(DropTruncated)
		return true
	}
	var pkt []byte
	var hdr packet.VirtioNetHdr
	start := DeliverRoom // of the IPv4 header built in front of the payload
	switch f.key.proto {
	case packet.ProtoUDP:
		pkt = buf[start : DeliverRoom+dgramHeadroom+nr]
		ip := packet.IPv4(pkt)
		seg := udpoffload.GROSize(oob[:oobn])
		if seg <= 0 || seg >= nr {
			seg = 0 // one datagram
		}
		// A superframe's datagrams get IDs counting up from its own when
		// cut, so it takes that many.
		ids := uint32(1)
		if seg > 0 {
			ids = uint32((nr + seg - 1) / seg)
		}
		writeIPv4Header(ip, len(pkt), packet.ProtoUDP, f.key.remote.Addr().As4(), f.key.pod.Addr().As4(), n.ipID.Add(ids)-ids+1)
		u := packet.UDP(pkt[packet.IPv4MinHeaderLen:])
		u.SetSrcPort(f.key.remote.Port())
		u.SetDstPort(f.key.pod.Port())
		u.SetLength(uint16(packet.UDPHeaderLen + nr))
		u.SetChecksum(0)
		if seg > 0 {
			// Whoever cuts the superframe completes each datagram's
			// checksum.
			hdr = packet.AsUDPSuperframe(ip, seg)
		} else {
			u.SetChecksum(packet.TransportChecksum(ip))
		}
		if f.state.CompareAndSwap(uint32(stateUnreplied), uint32(stateReplied)) {
			f.touch(n.now())
		}
	case packet.ProtoICMP:
		if nr < packet.ICMPHeaderLen {
			return true
		}
		start += dgramHeadroom - packet.IPv4MinHeaderLen
		pkt = buf[start : DeliverRoom+dgramHeadroom+nr]
		m := packet.ICMP(pkt[packet.IPv4MinHeaderLen:])
		if m.Type() != packet.ICMPEchoReply {
			return true
		}
		// Give the reply the pod's identifier back; the kernel verified
		// the checksum, so patch it rather than re-sum the payload.
		old := binary.BigEndian.Uint16(m[4:6])
		binary.BigEndian.PutUint16(m[4:6], f.key.pod.Port())
		m.SetChecksum(packet.Update16(m.Checksum(), old, f.key.pod.Port()))
		writeIPv4Header(packet.IPv4(pkt), len(pkt), packet.ProtoICMP, f.key.remote.Addr().As4(), f.key.pod.Addr().As4(), n.ipID.Add(1))
	}
	f.bytesIn.Add(uint64(nr))
	f.touch(n.now())
	n.cfg.Deliver(buf[:start+len(pkt)], start, hdr)
	return true
}

// recvmsg is recvmsg(2) without the source address: a flow's socket is
// connected, and unix.Recvmsg allocates the address it returns (twice per
// read). p must not be empty.
func recvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Iov: &iov}
	msg.SetIovlen(1)
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// icmpFromErrQueue turns an ICMP error the kernel queued on a flow's
// socket (IP_RECVERR) into the same error for the pod, about the datagram
// as the pod sent it. quote is what the kernel kept of the offending
// datagram past the IP header: the UDP payload for UDP (udp_err), the ICMP
// header and data for ping sockets (ping_err).
func (n *NAT) icmpFromErrQueue(f *flow, quote, oob []byte) {
	ee, offender, ok := parseRecvErr(oob)
	if !ok || ee.Origin != unix.SO_EE_ORIGIN_ICMP {
		return // local errors (EMSGSIZE, ...) were already seen by send
	}
	if !offender.IsValid() {
		offender = f.key.remote.Addr()
	}
	var orig [errQuoteMax]byte
	hdr := packet.IPv4MinHeaderLen
	switch f.key.proto {
	case packet.ProtoUDP:
		hdr += packet.UDPHeaderLen
	case packet.ProtoICMP:
		if len(quote) < packet.ICMPHeaderLen {
			n.c.drop(DropICMPError)
			return
		}
	}
	total := hdr + copy(orig[hdr:], quote)
	ip := packet.IPv4(orig[:total])
	writeIPv4Header(ip, total, f.key.proto, f.key.pod.Addr().As4(), f.key.remote.Addr().As4(), 0)
	switch f.key.proto {
	case packet.ProtoUDP:
		u := packet.UDP(orig[packet.IPv4MinHeaderLen:total])
		u.SetSrcPort(f.key.pod.Port())
		u.SetDstPort(f.key.remote.Port())
		u.SetLength(uint16(total - packet.IPv4MinHeaderLen))
		u.SetChecksum(0)
		u.SetChecksum(packet.TransportChecksum(ip))
	case packet.ProtoICMP:
		m := packet.ICMP(orig[packet.IPv4MinHeaderLen:total])
		old := binary.BigEndian.Uint16(m[4:6])
		binary.BigEndian.PutUint16(m[4:6], f.key.pod.Port())
		m.SetChecksum(packet.Update16(m.Checksum(), old, f.key.pod.Port()))
	}
	var out [packet.ICMPErrorMaxLen]byte
	mtu := uint16(0)
	if ee.Type == packet.ICMPDestUnreachable && ee.Code == packet.ICMPFragmentationNeeded {
		mtu = uint16(ee.Info)
	}
	m := packet.BuildICMPError(out[:], ip, ee.Type, ee.Code, mtu, offender.As4(), 0)
	if m == 0 {
		n.c.drop(DropICMPError)
		return
	}
	n.cfg.Deliver(out[:m], 0, packet.VirtioNetHdr{})
}

// parseRecvErr finds the IP_RECVERR control message in oob: struct
// sock_extended_err followed by the offender's sockaddr_in
// (SO_EE_OFFENDER). ICMP errors are rare, so the allocation of
// ParseSocketControlMessage does not matter.
func parseRecvErr(oob []byte) (unix.SockExtendedErr, netip.Addr, bool) {
	const eeLen = 16 // sizeof(struct sock_extended_err)
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return unix.SockExtendedErr{}, netip.Addr{}, false
	}
	for _, m := range msgs {
		data := m.Data
		if m.Header.Level != unix.IPPROTO_IP || m.Header.Type != unix.IP_RECVERR || len(data) < eeLen {
			continue
		}
		ee := unix.SockExtendedErr{
			Errno:  binary.NativeEndian.Uint32(data[0:4]),
			Origin: data[4],
			Type:   data[5],
			Code:   data[6],
			Info:   binary.NativeEndian.Uint32(data[8:12]),
			Data:   binary.NativeEndian.Uint32(data[12:16]),
		}
		var off netip.Addr
		if sa := data[eeLen:]; len(sa) >= 8 && binary.NativeEndian.Uint16(sa[0:2]) == unix.AF_INET {
			off = netip.AddrFrom4([4]byte(sa[4:8]))
		}
		return ee, off, true
	}
	return unix.SockExtendedErr{}, netip.Addr{}, false
}

// writeIPv4Header writes a 20-byte IPv4 header (TTL 64, DF clear) for a
// packet NAT originates and computes its checksum.
func writeIPv4Header(ip packet.IPv4, total int, proto uint8, src, dst [4]byte, id uint32) {
	ip[0] = 4<<4 | packet.IPv4MinHeaderLen/4
	ip[1] = 0
	ip.SetTotalLen(uint16(total))
	ip.SetID(uint16(id))
	binary.BigEndian.PutUint16(ip[6:8], 0)
	ip[8] = packet.DefaultTTL
	ip[9] = proto
	ip.SetSrc(src)
	ip.SetDst(dst)
	ip.ComputeChecksum()
}
