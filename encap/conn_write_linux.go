package encap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeToAddrs is WriteBatch for a raw IP transport: packet pkts[i] goes
// to dsts[i], under the outer IPv4 header the kernel or the transport
// (socketSpec.header) writes.
func (c *batchConn) writeToAddrs(pkts [][]byte, dsts []netip.Addr) (int, error) {
	if len(dsts) < len(pkts) {
		return 0, fmt.Errorf("encap: %s write: %d destinations for %d packets", c.name, len(dsts), len(pkts))
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.waddrs = dsts
	return c.write(pkts)
}

// writeToAddrPorts is WriteBatch for a UDP transport: datagram payload
// pkts[i] goes to dsts[i], and the kernel adds the outer IPv4 and UDP
// headers.
func (c *batchConn) writeToAddrPorts(pkts [][]byte, dsts []netip.AddrPort) (int, error) {
	if len(dsts) < len(pkts) {
		return 0, fmt.Errorf("encap: %s write: %d destinations for %d packets", c.name, len(dsts), len(pkts))
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.wports = dsts
	return c.write(pkts)
}

// dst returns packet i's destination (port 0 on a raw IP socket). Raw IP
// transports address nodes, UDP ones a node's port: the two slice types
// keep each transport's WriteBatch signature its own without converting
// the caller's slice.
func (c *batchConn) dst(i int) netip.AddrPort {
	if c.udp {
		return c.wports[i]
	}
	return netip.AddrPortFrom(c.waddrs[i], 0)
}

// dstString formats packet i's destination as the caller gave it, for
// errors.
func (c *batchConn) dstString(i int) string {
	if c.udp {
		return c.wports[i].String()
	}
	return c.waddrs[i].String()
}

// write sends pkts to the destinations in waddrs (raw IP sockets) or
// wports (UDP), which the caller set holding writeMu. It sends in
// sendmmsg calls of up to BatchSize() packets, waits for buffer space
// when the socket is full (on a blocking sender at most sendTimeout: then
// the rest of the write is refused), and returns how many packets the
// kernel accepted.
//
// With GSO, consecutive packets to the same destination whose lengths
// are equal (the last of a run may be shorter) go out as one message
// with a UDP_SEGMENT control message: at most 64 packets and 65000 bytes
// each, one iovec per packet, nothing copied. The receiver sees the same
// datagrams either way. If the kernel refuses a segmented message with
// EIO or EINVAL, GSO is turned off for good and the packets are resent
// one per message; with EMSGSIZE (segments larger than the route MTU
// allows) only that run is resent plainly, and the kernel fragments them.
//
// A packet the kernel refuses (no route to its node, too big), an empty
// packet or a destination that is not IPv4 (on UDP, with a port) is
// skipped and its error joined into the returned error; the rest are
// still sent. After Close it returns os.ErrClosed. It allocates nothing
// unless a packet is refused.
func (c *batchConn) write(pkts [][]byte) (int, error) {
	c.wpkts = pkts
	c.wsent, c.wfatal, c.wplainUntil = 0, nil, 0
	c.werrs = c.werrs[:0]
	for start := 0; start < len(pkts) && c.wfatal == nil; {
		next := c.fillWrite(start)
		if c.wcount == 0 {
			start = next
			continue
		}
		c.wdone, c.wretry = 0, -1
		if err := c.sendRaw.Write(c.writeFn); err != nil && c.wfatal == nil {
			c.wfatal = c.mapErr("write", err)
		}
		c.clearWriteIovs()
		if c.wretry >= 0 {
			start = c.wretry
		} else {
			start = next
		}
	}
	sent := c.wsent
	var err error
	switch {
	case c.wfatal == os.ErrClosed:
		err = c.wfatal
	case c.wfatal != nil:
		// A held-up write: keep what went wrong before it too.
		c.werrs = append(c.werrs, c.wfatal)
		err = errors.Join(c.werrs...)
	case len(c.werrs) > 0:
		err = errors.Join(c.werrs...)
	}
	clear(c.werrs)
	c.wpkts, c.waddrs, c.wports, c.wfatal = nil, nil, nil, nil
	return sent, err
}

// fillWrite fills whdrs with the next chunk of messages, up to batch
// packets from wpkts[start:], grouping runs when GSO is on, and returns
// where the next chunk starts. Packets that can not be sent at all are
// refused here without a syscall.
func (c *batchConn) fillWrite(start int) int {
	gso := c.gso.Load()
	pkts := c.wpkts
	c.wcount = 0
	niov := 0
	i := start
	for i < len(pkts) && niov < len(c.wiovs) {
		p, dst := pkts[i], c.dst(i)
		if len(p) == 0 {
			c.werrs = append(c.werrs, fmt.Errorf("encap: %s write: packet %d is empty", c.name, i))
			i++
			continue
		}
		if !dst.Addr().Is4() {
			c.werrs = append(c.werrs, fmt.Errorf("encap: %s write: packet %d: destination %s is not IPv4", c.name, i, c.dstString(i)))
			i++
			continue
		}
		if c.udp && dst.Port() == 0 {
			c.werrs = append(c.werrs, fmt.Errorf("encap: %s write: packet %d: destination %s has no port", c.name, i, c.dstString(i)))
			i++
			continue
		}
		j, first := c.wcount, niov
		c.wfirst[j], c.wsegs[j] = i, 1
		ecn := c.ecnOf(p)
		c.wecn[j] = ecn
		if c.header > 0 {
			outer := c.wouter[j*c.header : (j+1)*c.header]
			c.buildHeader(outer, p, dst.Addr())
			outer[1] = ecn // TOS
			c.wiovs[niov].Base = &outer[0]
			c.wiovs[niov].SetLen(c.header)
			niov++
		}
		c.wiovs[niov].Base = &p[0]
		c.wiovs[niov].SetLen(len(p))
		niov++
		i++
		seg, total := len(p), len(p)
		if gso && i-1 >= c.wplainUntil {
			for i < len(pkts) && niov < len(c.wiovs) && c.wsegs[j] < maxGSOSegments {
				q := pkts[i]
				if c.dst(i) != dst || len(q) == 0 || len(q) > seg || total+len(q) > maxGSOBytes || c.ecnOf(q) != ecn {
					break
				}
				c.wiovs[niov].Base = &q[0]
				c.wiovs[niov].SetLen(len(q))
				niov++
				i++
				total += len(q)
				c.wsegs[j]++
				if len(q) < seg {
					break // only the last segment may be short
				}
			}
		}
		h := &c.whdrs[j].Hdr
		h.Iov = &c.wiovs[first]
		h.SetIovlen(niov - first)
		c.wnames[j].Addr = dst.Addr().As4()
		pp := (*[2]byte)(unsafe.Pointer(&c.wnames[j].Port)) // network byte order
		pp[0], pp[1] = byte(dst.Port()>>8), byte(dst.Port())
		if c.wsegs[j] == 1 {
			seg = 0
		}
		if c.header > 0 {
			ecn = 0 // in the header already
		}
		c.setControl(h, j, seg, ecn)
		c.wcount++
	}
	return i
}

// ecnOf is the outer ECN field for pkt (socketSpec.outerECN).
func (c *batchConn) ecnOf(pkt []byte) uint8 {
	if c.outerECN == nil {
		return 0
	}
	return c.outerECN(pkt)
}

// setControl points message h (index j) at its control data: UDP_SEGMENT
// with segment size seg unless seg is 0, IP_TOS with the ECN bits ecn
// unless they are 0 (the socket's own TOS, 0, is what the outer header
// gets then), or none.
func (c *batchConn) setControl(h *unix.Msghdr, j, seg int, ecn uint8) {
	w := &c.wctrl[j]
	w.seg.Size, w.tos.TOS = uint16(seg), int32(ecn)
	var ctrl []byte
	switch {
	case seg > 0 && ecn != 0:
		ctrl = unsafe.Slice((*byte)(unsafe.Pointer(w)), unsafe.Sizeof(*w))
	case seg > 0:
		ctrl = w.seg.Bytes()
	case ecn != 0:
		ctrl = w.tos.Bytes()
	default:
		h.Control = nil
		h.SetControllen(0)
		return
	}
	h.Control = &ctrl[0]
	h.SetControllen(len(ctrl))
}

// clearWriteIovs drops the references to the caller's packets. The
// iovecs in use are always a prefix of wiovs.
func (c *batchConn) clearWriteIovs() {
	for j := range c.wiovs {
		if c.wiovs[j].Base == nil {
			break
		}
		c.wiovs[j].Base = nil
	}
}

// sendBatch is the RawConn write callback. sendmmsg reports an error only
// when the first message fails (after that it returns the count sent and
// the error is lost), so each failure is pinned on whdrs[wdone]. A plain
// message is then skipped and the rest retried; a segmented one that the
// kernel could not segment ends the chunk and write refills from its
// first packet without (this run's) GSO.
func (c *batchConn) sendBatch(fd uintptr) bool {
	for c.wdone < c.wcount {
		r, errno := c.sendmmsg(fd)
		switch errno {
		case 0:
			for k := range int(r) {
				c.wsent += c.wsegs[c.wdone+k]
			}
			c.wdone += int(r)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if !c.sendBlocks() {
				return false // socket buffer full: wait for POLLOUT
			}
			// A blocking sender: Close came meanwhile, or the buffer
			// stayed full for sendTimeout. Then the rest of the write
			// is refused rather than waiting as long for each message.
			if c.closed.Load() {
				c.wfatal = os.ErrClosed
			} else {
				c.wfatal = fmt.Errorf("encap: %s write: send buffer full for %v: %d packets from packet %d on not sent: %w",
					c.name, sendTimeout, len(c.wpkts)-c.wfirst[c.wdone], c.wfirst[c.wdone], errno)
			}
			return true
		case unix.EBADF:
			c.wfatal = os.ErrClosed
			return true
		case unix.EPIPE:
			if c.closed.Load() { // Close shut a blocking sender down
				c.wfatal = os.ErrClosed
				return true
			}
		}
		j := c.wdone
		if errno == unix.EMSGSIZE && c.header > 0 {
			// A header from the message is never fragmented: send
			// this one packet with the kernel's own outer header
			// instead, which it fragments under IP_PMTUDISC_DONT.
			errno = c.sendPlain(j)
			if c.wfatal != nil {
				return true
			}
			if errno == 0 {
				c.wsent++
				c.wdone++
				continue
			}
		}
		if c.wsegs[j] > 1 {
			switch errno {
			case unix.EIO, unix.EINVAL:
				// EIO: the egress device cannot checksum (udp_send_skb
				// needs CHECKSUM_PARTIAL), or xfrm is in the path; the
				// kernel will refuse every segmented send, so stop
				// trying (wireguard-go does the same).
				c.gso.Store(false)
				c.wretry = c.wfirst[j]
				return true
			case unix.EMSGSIZE:
				// A segment plus headers exceeds the route MTU: the
				// kernel never fragments GSO segments, but it does
				// fragment plain datagrams under IP_PMTUDISC_DONT.
				c.wplainUntil = c.wfirst[j] + c.wsegs[j]
				c.wretry = c.wfirst[j]
				return true
			}
		}
		i := c.wfirst[j]
		if k := c.wsegs[j]; k > 1 {
			c.werrs = append(c.werrs, fmt.Errorf("encap: %s write: packets %d to %d to %s: %w", c.name, i, i+k-1, c.dstString(i), errno))
		} else {
			c.werrs = append(c.werrs, fmt.Errorf("encap: %s write: packet %d to %s: %w", c.name, i, c.dstString(i), errno))
		}
		c.wdone++
	}
	return true
}

// smallWrite is the most packets a write may hold to be sent without the
// scheduler's bookkeeping (see sendmmsg): a request and its answer are
// one or two packets, and a call that small returns within tens of
// microseconds even where it carries the receiving node's input path.
const smallWrite = 2

// sendmmsg sends messages wdone..wcount-1 in one call and returns how many
// the kernel took. A small write (smallWrite) is issued as a raw system
// call that cannot block (MSG_DONTWAIT): entering an ordinary one wakes
// Go's sysmon thread when the daemon was idle, an extra wake-up for every
// request (docs/performance.md, "Wake-ups"). Bulk writes,
// whose calls can run for hundreds of microseconds on a veth underlay,
// and a blocking sender whose buffer is full go through the scheduler,
// which can then hand the P to another goroutine.
func (c *batchConn) sendmmsg(fd uintptr) (int, unix.Errno) {
	hdrs, n := uintptr(unsafe.Pointer(&c.whdrs[c.wdone])), uintptr(c.wcount-c.wdone)
	if len(c.wpkts) <= smallWrite {
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, hdrs, n, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, 0, 0)
		if errno != unix.EAGAIN || !c.sendBlocks() {
			return int(r), errno
		}
	}
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, hdrs, n, unix.MSG_NOSIGNAL, 0, 0)
	return int(r), errno
}

// sendPlain sends message j's packet without the outer header the
// transport built, on the receiving socket, which has no IP_HDRINCL: the
// kernel builds the header and fragments the packet. Only packets too big
// for the device take this path.
func (c *batchConn) sendPlain(j int) unix.Errno {
	c.wplain = c.whdrs[j].Hdr
	c.wplain.Iov = (*unix.Iovec)(unsafe.Add(unsafe.Pointer(c.wplain.Iov), unsafe.Sizeof(unix.Iovec{}))) // skip the header
	c.wplain.SetIovlen(1)
	c.setControl(&c.wplain, j, 0, c.wecn[j]) // the ECN bits the header had
	c.wplainErr = 0
	if err := c.raw.Write(c.plainFn); err != nil {
		c.wfatal = c.mapErr("write", err)
	}
	c.wplain.Iov = nil
	return c.wplainErr
}

// sendPlainFn is sendPlain's RawConn write callback.
func (c *batchConn) sendPlainFn(fd uintptr) bool {
	for {
		_, _, errno := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&c.wplain)), unix.MSG_NOSIGNAL)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for POLLOUT
		case unix.EBADF:
			c.wfatal = os.ErrClosed
			return true
		}
		c.wplainErr = errno
		return true
	}
}
