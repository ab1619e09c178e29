// Package udpgro reads what a UDP socket with UDP_GRO reports about a
// read: the size of each datagram the kernel merged into it.
package udpgro

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// SegmentSize finds the SOL_UDP/UDP_GRO control message (an int: the size
// of each merged datagram but the last) in oob, the control data recvmsg
// returned, and returns it, or 0 if there is none: the read holds one
// datagram. It walks the cmsghdrs by hand, since
// unix.ParseSocketControlMessage allocates. oob must be 8-byte aligned,
// as the kernel lays control messages out.
func SegmentSize(oob []byte) int {
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
