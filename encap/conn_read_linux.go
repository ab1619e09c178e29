package encap

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"podnet/internal/udpoffload"
)

// ReadBatch reads up to min(len(bufs), len(sizes), BatchSize()) datagrams,
// each as the socket delivers it into bufs[i][offset:], and sets sizes[i]
// to its length. A raw IP socket delivers the outer IPv4 header and its
// payload, a UDP socket the UDP payload. It blocks until at least one
// datagram is there, then takes everything queued up to the batch size in
// one recvmmsg. Sources reports where each came from.
//
// Without GRO the kernel writes straight into the caller's buffers. With
// UDP GRO one slot can hold up to 64 coalesced datagrams: while slots
// hold one datagram each, the kernel still writes straight into the
// caller's buffers (if each has 64 KiB after offset); once one holds
// coalesced datagrams, recvmmsg reads into the conn's own
// 64 KiB-per-slot scratch and ReadBatch copies each datagram into its own
// buffer, in arrival order (readGRO). Datagrams that do not fit in this
// call's buffers stay queued in the conn, and the next ReadBatch returns
// them first without a syscall.
//
// A datagram longer than its buffer is cut short (the rest is lost). Size
// buffers for 64 KiB (packet.BufferSize): GRO on the underlay NIC can
// deliver IP-in-IP packets far larger than the MTU.
//
// It allocates nothing in steady state. Every bufs[i] used must have room
// after offset.
func (c *batchConn) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.nsrc = 0
	if c.sendOnly {
		return 0, fmt.Errorf("encap: %s read: the conn only sends", c.name)
	}
	n := min(len(bufs), len(sizes), c.batch)
	if n == 0 {
		return 0, nil
	}
	for i := range n {
		if offset < 0 || offset >= len(bufs[i]) {
			return 0, fmt.Errorf("encap: %s read: buffer %d (len %d) has no room after offset %d", c.name, i, len(bufs[i]), offset)
		}
	}
	if c.gro {
		return c.readGRO(bufs, sizes, offset, n)
	}
	for i := range n {
		b := bufs[i]
		c.riovs[i].Base = &b[offset]
		c.riovs[i].SetLen(len(b) - offset)
	}
	got, err := c.recv(n)
	for i := range got {
		sizes[i] = int(c.rhdrs[i].Len)
		c.srcs[i], c.sports[i] = sockaddrInet4(&c.rnames[i], c.rhdrs[i].Hdr.Namelen)
		c.toss[i] = c.slotTOS(i, bufs[i][offset:offset+sizes[i]])
	}
	c.nsrc = got
	// Drop the references to the caller's buffers, so the conn neither
	// keeps them alive nor points into them after the call (the
	// use-after-free hygiene wireguard-go's clearPointers is for).
	for i := range n {
		c.riovs[i].Base = nil
	}
	return got, err
}

// readGRO is ReadBatch with UDP_GRO on: split what is pending, or read a
// new batch and split that.
//
// A batch is read straight into the caller's buffers while datagrams
// arrive one per slot (a VXLAN superframe sent whole is one datagram, and
// so is everything on an underlay whose kernel merges nothing); that saves
// copying every byte out of the scratch. The first slot that holds
// coalesced datagrams switches the conn to the scratch (see
// readDirect); directAfter batches in a row without one switch it back.
func (c *batchConn) readGRO(bufs [][]byte, sizes []int, offset, n int) (int, error) {
	if c.pslot >= c.pend {
		c.pend, c.pslot, c.poff = 0, 0, 0
		if c.direct && fitsSlots(bufs[:n], offset) {
			return c.readDirect(bufs, sizes, offset, n)
		}
		// Each slot yields at least one datagram, so n slots never
		// produce fewer than n, and leftovers wait in pend.
		got, err := c.recv(n)
		if got == 0 {
			return 0, err
		}
		coalesced := c.noteSlots(got) < got
		c.pend = got
		if coalesced {
			c.plain = 0
		} else if c.plain++; c.plain >= directAfter {
			c.direct, c.plain = true, 0
		}
	}
	return c.split(bufs, sizes, offset, 0, n), nil
}

// directAfter is how many batches in a row must come without coalesced
// datagrams before reads go straight into the caller's buffers again.
const directAfter = 16

// readDirect reads up to n slots straight into bufs. Slots that each hold
// one datagram are done as they are. From the first that holds coalesced
// ones on, the slots are copied into the scratch and split from there,
// as if read into it, and later batches use the scratch again.
func (c *batchConn) readDirect(bufs [][]byte, sizes []int, offset, n int) (int, error) {
	for i := range n {
		c.riovs[i].Base = &bufs[i][offset]
		c.riovs[i].SetLen(groSlotSize)
	}
	got, err := c.recv(n)
	first := c.noteSlots(got)
	for j := range got {
		if j >= first {
			copy(c.scratch[j*groSlotSize:], bufs[j][offset:offset+c.rsize[j]])
			continue
		}
		sizes[j] = c.rsize[j]
		c.srcs[j], c.sports[j] = c.rsrc[j].Addr(), c.rsrc[j].Port()
		c.toss[j] = c.rtos[j]
	}
	// Point the slots at the scratch again: the conn keeps no reference
	// to the caller's buffers after the call.
	for i := range n {
		c.riovs[i].Base = &c.scratch[i*groSlotSize]
	}
	if got == 0 {
		return 0, err
	}
	out := first
	if first < got {
		c.direct = false
		c.pend, c.pslot = got, first
		out = c.split(bufs, sizes, offset, first, n)
	}
	c.nsrc = out
	return out, nil
}

// noteSlots records the size, segment size and source of the first got
// slots recvmmsg filled, and returns the first that holds coalesced
// datagrams (got if none does).
func (c *batchConn) noteSlots(got int) int {
	first := got
	for j := range got {
		size := int(c.rhdrs[j].Len)
		seg := groSegment(c.rctrl[j][:], c.rhdrs[j].Hdr.Controllen)
		if seg <= 0 || seg > size {
			seg = size // not coalesced
		}
		if seg < size && first == got {
			first = j
		}
		c.rsize[j], c.rseg[j] = size, seg
		a, p := sockaddrInet4(&c.rnames[j], c.rhdrs[j].Hdr.Namelen)
		c.rsrc[j] = netip.AddrPortFrom(a, p)
		c.rtos[j] = c.slotTOS(j, nil)
	}
	return first
}

// split copies pending segments out of the scratch into bufs[out:n], in
// arrival order, and returns how many of bufs hold a datagram.
func (c *batchConn) split(bufs [][]byte, sizes []int, offset, out, n int) int {
	for out < n && c.pslot < c.pend {
		j := c.pslot
		size := c.rsize[j]
		l := min(c.rseg[j], size-c.poff)
		base := j*groSlotSize + c.poff
		sizes[out] = copy(bufs[out][offset:], c.scratch[base:base+l])
		c.srcs[out], c.sports[out] = c.rsrc[j].Addr(), c.rsrc[j].Port()
		c.toss[out] = c.rtos[j]
		out++
		c.poff += l
		if c.poff >= size { // also ends an empty datagram (size 0)
			c.pslot++
			c.poff = 0
		}
	}
	c.nsrc = out
	return out
}

// fitsSlots says whether every buffer has room for a whole slot after
// offset, as a direct read needs.
func fitsSlots(bufs [][]byte, offset int) bool {
	for _, b := range bufs {
		if len(b)-offset < groSlotSize {
			return false
		}
	}
	return true
}

// recv runs one recvmmsg over the first n slots, waiting for data, and
// returns how many it filled.
func (c *batchConn) recv(n int) (int, error) {
	for i := range n {
		h := &c.rhdrs[i].Hdr
		// The kernel overwrites these with what it wrote.
		h.Namelen = unix.SizeofSockaddrInet4
		if c.rctrl != nil {
			h.SetControllen(int(unsafe.Sizeof(c.rctrl[i])))
		}
		h.Flags = 0
	}
	c.rcount, c.rn, c.rerr = n, 0, nil
	err := c.raw.Read(c.readFn)
	got, rerr := c.rn, c.rerr
	c.rerr = nil
	if got > 0 {
		return got, nil
	}
	if rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, c.mapErr("read", err)
	}
	return 0, nil
}

// recvBatch is the RawConn read callback: false means "wait for
// readability and call again", true means done.
//
// Flags 0: the socket is non-blocking, so recvmmsg stops at the first
// empty read and returns what it has. The first rawRecvSlots slots are
// read with a raw system call, which the scheduler does not see: an
// ordinary one wakes Go's sysmon thread when it is the first call after
// an idle spell (docs/performance.md, "Wake-ups"). A raw call keeps its
// P and holds off a garbage collector's stop-the-world while it runs, so
// it is bounded: when those slots come back full, the rest of the batch
// is read with an ordinary call (under load sysmon is awake anyway).
func (c *batchConn) recvBatch(fd uintptr) bool {
	for {
		first := min(c.rcount, rawRecvSlots)
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&c.rhdrs[0])), uintptr(first), 0, 0, 0)
		switch errno {
		case 0:
			c.rn = int(r)
			if c.rn == first && first < c.rcount {
				c.recvRest(fd)
			}
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			c.rerr = c.mapErr("read", errno)
			return true
		}
	}
}

// rawRecvSlots bounds the raw recvmmsg of recvBatch: 4 slots copy at most
// 256 KiB with UDP_GRO (tens of microseconds), against 4 MiB for a full
// batch of 64, which took 1 to 4 ms.
const rawRecvSlots = 4

// recvRest reads slots rn.. of the batch after recvBatch's raw call
// filled all of its own: an ordinary recvmmsg, adding what it gets. An
// empty queue or an error here only ends the batch early; the datagrams
// already read are returned, and an error shows again on the next read.
func (c *batchConn) recvRest(fd uintptr) {
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&c.rhdrs[c.rn])), uintptr(c.rcount-c.rn), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno == 0 {
			c.rn += int(r)
		}
		return
	}
}

// Sources returns the outer source address of each datagram the last
// ReadBatch returned, by index. The slice is the conn's own and is
// overwritten by the next ReadBatch; call it from the reading goroutine.
// The switch checks these against its node set before it trusts an inner
// packet (see the package comment).
func (c *batchConn) Sources() []netip.Addr { return c.srcs[:c.nsrc] }

// OuterTOS returns the TOS byte of the outer IPv4 header of each datagram
// the last ReadBatch returned, by index, for its ECN bits
// (packet.DecapECN). A UDP socket reports it with each read (IP_RECVTOS;
// segments the kernel merged into one read share it, since GRO merges
// only equal TOS); a raw socket reads the outer header itself. Like
// Sources, the slice is the conn's own.
func (c *batchConn) OuterTOS() []uint8 { return c.toss[:c.nsrc] }

// slotTOS returns the outer TOS byte of the datagram in read slot i: from
// its IP_TOS control message on a UDP socket, from pkt's outer header on
// a raw one (0 if pkt is too short to hold it).
func (c *batchConn) slotTOS(i int, pkt []byte) uint8 {
	if c.rctrl == nil {
		if len(pkt) < 2 {
			return 0
		}
		return pkt[1]
	}
	tos, _ := udpoffload.RecvTOS(ctrlBytes(c.rctrl[i][:], c.rhdrs[i].Hdr.Controllen))
	return tos
}

// sockaddrInet4 converts a sockaddr_in the kernel filled in (namelen
// bytes of it) without allocating. Anything but a full AF_INET address
// gives the zero Addr.
func sockaddrInet4(sa *unix.RawSockaddrInet4, namelen uint32) (netip.Addr, uint16) {
	if namelen < unix.SizeofSockaddrInet4 || sa.Family != unix.AF_INET {
		return netip.Addr{}, 0
	}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port)) // network byte order
	return netip.AddrFrom4(sa.Addr), uint16(p[0])<<8 | uint16(p[1])
}

// groSegment returns the segment size UDP_GRO reports in the first n
// bytes of ctrl (udpoffload.GROSize), or 0 if there is none.
func groSegment(ctrl []uint64, n uint64) int {
	return udpoffload.GROSize(ctrlBytes(ctrl, n))
}

// ctrlBytes is the first n bytes of a slot's control buffer, as the
// kernel filled it in (MSG_CTRUNC: trust only what fits).
func ctrlBytes(ctrl []uint64, n uint64) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&ctrl[0])), len(ctrl)*8)
	return b[:min(n, uint64(len(b)))]
}
