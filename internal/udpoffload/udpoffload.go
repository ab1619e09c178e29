// Package udpoffload lays out and reads the control messages podnet's
// datagram sockets use: UDP_SEGMENT, which a send carries to have the
// kernel cut one buffer into datagrams (GSO), UDP_GRO, which a read
// carries when the kernel merged datagrams into it, and IP_TOS, which
// sets a send's TOS byte and, with IP_RECVTOS, reports a read's (tunnels
// carry ECN in it).
package udpoffload

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// SegmentCmsg is a UDP_SEGMENT control message as the kernel reads it:
// cmsghdr, then the u16 segment size, padded to CMSG_SPACE(2) = 24 bytes.
// Init it once; set Size before each send.
type SegmentCmsg struct {
	hdr  unix.Cmsghdr
	Size uint16
	_    [6]byte
}

// Init fills in the header.
func (c *SegmentCmsg) Init() {
	c.hdr.Level = unix.SOL_UDP
	c.hdr.Type = unix.UDP_SEGMENT
	c.hdr.SetLen(unix.CmsgLen(2))
}

// Bytes is the message as sendmsg's control data; it aliases c.
func (c *SegmentCmsg) Bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(c)), unsafe.Sizeof(*c))
}

// TOSCmsg is an IP_TOS control message for a send: cmsghdr, then the int
// TOS byte, padded to CMSG_SPACE(4) = 24 bytes. Init it once; set TOS
// before each send.
type TOSCmsg struct {
	hdr unix.Cmsghdr
	TOS int32
	_   [4]byte
}

// Init fills in the header.
func (c *TOSCmsg) Init() {
	c.hdr.Level = unix.IPPROTO_IP
	c.hdr.Type = unix.IP_TOS
	c.hdr.SetLen(unix.CmsgLen(4))
}

// Bytes is the message as sendmsg's control data; it aliases c.
func (c *TOSCmsg) Bytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(c)), unsafe.Sizeof(*c))
}

// GROSize finds the SOL_UDP/UDP_GRO control message (an int: the size of
// each merged datagram but the last) in oob, the control data recvmsg
// returned, and returns it, or 0 if there is none: the read holds one
// datagram. oob must be 8-byte aligned, as the kernel lays control
// messages out.
func GROSize(oob []byte) int {
	if d := find(oob, unix.SOL_UDP, unix.UDP_GRO, 4); d != nil {
		return int(*(*int32)(unsafe.Pointer(&d[0])))
	}
	return 0
}

// RecvTOS finds the IPPROTO_IP/IP_TOS control message (one byte) that a
// socket with IP_RECVTOS attaches to each read, and returns the TOS byte
// of the datagram's IP header; ok is false if there is none. oob must be
// 8-byte aligned.
func RecvTOS(oob []byte) (tos uint8, ok bool) {
	if d := find(oob, unix.IPPROTO_IP, unix.IP_TOS, 1); d != nil {
		return d[0], true
	}
	return 0, false
}

// find returns the data of the first control message of level and typ in
// oob with at least size bytes of data, or nil. It walks the cmsghdrs by
// hand, since unix.ParseSocketControlMessage allocates.
func find(oob []byte, level, typ int32, size int) []byte {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || h.Len > uint64(len(oob)) {
			return nil
		}
		if h.Level == level && h.Type == typ && h.Len >= uint64(unix.CmsgLen(size)) {
			return oob[unix.CmsgLen(0):h.Len]
		}
		next := (h.Len + 7) &^ 7 // CMSG_ALIGN
		if next >= uint64(len(oob)) {
			return nil
		}
		oob = oob[next:]
	}
	return nil
}
