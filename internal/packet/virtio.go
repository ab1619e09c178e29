package packet

import "encoding/binary"

// virtio-net header (struct virtio_net_hdr in
// include/uapi/linux/virtio_net.h), which a TAP opened with IFF_VNET_HDR
// puts before every frame:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Flags     |   GSO Type    |           Hdr Len             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           GSO Size            |          Csum Start           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Csum Offset          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The 16-bit fields are in the TAP's vnet byte order, which is the host's
// unless TUNSETVNETBE/LE says otherwise. podnet runs on little-endian hosts
// and leaves the default, so they are little endian.
const (
	vnetFlags      = 0
	vnetGSOType    = 1
	vnetHdrLen     = 2
	vnetGSOSize    = 4
	vnetCsumStart  = 6
	vnetCsumOffset = 8
)

// VirtioNetHdrLen is the size of struct virtio_net_hdr (without the
// num_buffers field of the mergeable-buffers variant, which a TAP does not
// use unless TUNSETVNETHDRSZ asks for it).
const VirtioNetHdrLen = 10

// Flags of VirtioNetHdr.Flags.
const (
	// VirtioNetHdrFNeedsCsum: the checksum at CsumStart+CsumOffset holds
	// only the pseudo-header sum; the receiver must complete it.
	VirtioNetHdrFNeedsCsum = 1
	// VirtioNetHdrFDataValid: the sender already verified the checksum.
	VirtioNetHdrFDataValid = 2
)

// GSO types of VirtioNetHdr.GSOType.
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3 // UFO, deprecated by the kernel
	GSOTCPv6 = 4
	GSOUDPL4 = 5 // UDP_SEGMENT
	GSOECN   = 0x80
)

// VirtioNetHdr is a decoded virtio-net header. HdrLen is a hint only: the
// kernel has been known to set it wrong, so the segmenter derives header
// lengths from the packet instead.
type VirtioNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // length of the headers to copy into every segment
	GSOSize    uint16 // payload bytes per segment (the MSS for TCP)
	CsumStart  uint16 // offset where checksumming starts, from the frame start
	CsumOffset uint16 // offset of the checksum field, from CsumStart
}

var errVirtioShort = &Error{Op: "decode virtio-net header", Reason: ErrBadVirtioHeader, Detail: "buffer shorter than 10 bytes"}

// Decode reads h from the first VirtioNetHdrLen bytes of b. It only checks
// the length; the GSO and checksum fields are validated by whoever acts on
// them (CompleteChecksum, SegmentTCPv4), against the frame they describe.
func (h *VirtioNetHdr) Decode(b []byte) error {
	if len(b) < VirtioNetHdrLen {
		return errVirtioShort
	}
	h.Flags = b[vnetFlags]
	h.GSOType = b[vnetGSOType]
	h.HdrLen = binary.LittleEndian.Uint16(b[vnetHdrLen:])
	h.GSOSize = binary.LittleEndian.Uint16(b[vnetGSOSize:])
	h.CsumStart = binary.LittleEndian.Uint16(b[vnetCsumStart:])
	h.CsumOffset = binary.LittleEndian.Uint16(b[vnetCsumOffset:])
	return nil
}

// Encode writes h into the first VirtioNetHdrLen bytes of b, which must be
// at least that long (it panics otherwise: a short buffer here is a bug in
// the caller's headroom arithmetic, not bad input).
func (h VirtioNetHdr) Encode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[vnetFlags] = h.Flags
	b[vnetGSOType] = h.GSOType
	binary.LittleEndian.PutUint16(b[vnetHdrLen:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[vnetGSOSize:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[vnetCsumStart:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[vnetCsumOffset:], h.CsumOffset)
}
