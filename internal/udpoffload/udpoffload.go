// Package udpoffload lays out and reads the control messages of UDP's
// segmentation offloads: UDP_SEGMENT, which a send carries to have the
// kernel cut one buffer into datagrams (GSO), and UDP_GRO, which a read
// carries when the kernel merged datagrams into it.
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

// GROSize finds the SOL_UDP/UDP_GRO control message (an int: the size of
// each merged datagram but the last) in oob, the control data recvmsg
// returned, and returns it, or 0 if there is none: the read holds one
// datagram. It walks the cmsghdrs by hand, since
// unix.ParseSocketControlMessage allocates. oob must be 8-byte aligned,
// as the kernel lays control messages out.
func GROSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || h.Len > uint64(len(oob)) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && h.Len >= uint64(unix.CmsgLen(4)) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
		}
		next := (h.Len + 7) &^ 7 // CMSG_ALIGN
		if next >= uint64(len(oob)) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}
