package packet

import "encoding/binary"

// GSO (generic segmentation offload) for frames read from a TAP opened with
// IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4). The kernel then
// hands us TCP "superframes" of up to 64 KiB plus a virtio-net header that
// says how to cut them, and packets whose transport checksum is only
// partially computed. Everything here works on the packet from its IPv4
// header on: the caller strips the Ethernet header and subtracts
// EthernetHeaderLen from CsumStart first.

// Errors returned by CompleteChecksum and SegmentTCPv4. They are
// preallocated so that rejecting a packet does not allocate; ReasonOf or
// errors.Is map them to drop counters.
var (
	errCsumGSO      = &Error{Op: "complete checksum", Reason: ErrBadGSO, Detail: "packet is a GSO superframe"}
	errCsumBounds   = &Error{Op: "complete checksum", Reason: ErrBadVirtioHeader, Detail: "csum_start+csum_offset beyond packet"}
	errCsumOdd      = &Error{Op: "complete checksum", Reason: ErrBadVirtioHeader, Detail: "csum_offset is odd"}
	errSegOffset    = &Error{Op: "segment tcpv4", Reason: ErrBufferTooSmall, Detail: "negative offset"}
	errSegNotTCP    = &Error{Op: "segment tcpv4", Reason: ErrBadGSO, Detail: "protocol is not TCP"}
	errSegFragment  = &Error{Op: "segment tcpv4", Reason: ErrBadGSO, Detail: "superframe is an IPv4 fragment"}
	errSegGSOType   = &Error{Op: "segment tcpv4", Reason: ErrBadGSO, Detail: "gso_type is not TCPv4"}
	errSegGSOSize   = &Error{Op: "segment tcpv4", Reason: ErrBadGSO, Detail: "gso_size is zero"}
	errSegCsumStart = &Error{Op: "segment tcpv4", Reason: ErrBadVirtioHeader, Detail: "csum_start is not the IPv4 header length"}
	errSegOut       = &Error{Op: "segment tcpv4", Reason: ErrTooManySegments, Detail: "out or sizes has fewer entries than segments"}
	errSegOutSmall  = &Error{Op: "segment tcpv4", Reason: ErrBufferTooSmall, Detail: "an out buffer cannot hold its segment"}
	errSegTCPShort  = &Error{Op: "segment tcpv4", Reason: ErrTruncatedL4, Detail: "TCP header truncated"}
	errSegFirst     = &Error{Op: "segment tcpv4", Reason: ErrTooManySegments, Detail: "first segment past the last"}

	errSegUDPType      = &Error{Op: "segment udpv4", Reason: ErrBadGSO, Detail: "gso_type is not UDP_L4"}
	errSegUDPSize      = &Error{Op: "segment udpv4", Reason: ErrBadGSO, Detail: "gso_size is zero"}
	errSegNotUDP       = &Error{Op: "segment udpv4", Reason: ErrBadGSO, Detail: "protocol is not UDP"}
	errSegUDPFragment  = &Error{Op: "segment udpv4", Reason: ErrBadGSO, Detail: "superframe is an IPv4 fragment"}
	errSegUDPCsumStart = &Error{Op: "segment udpv4", Reason: ErrBadVirtioHeader, Detail: "partial checksum is not the UDP checksum"}
	errSegUDPLength    = &Error{Op: "segment udpv4", Reason: ErrTruncatedL4, Detail: "UDP length is not the packet's"}
	errSegUDPFirst     = &Error{Op: "segment udpv4", Reason: ErrTooManySegments, Detail: "first datagram past the last"}
	errSegUDPOut       = &Error{Op: "segment udpv4", Reason: ErrTooManySegments, Detail: "out or sizes has fewer entries than datagrams"}
	errSegUDPOutSmall  = &Error{Op: "segment udpv4", Reason: ErrBufferTooSmall, Detail: "an out buffer cannot hold its datagram"}
	errIPv4ByReason    = [numParseErrors]*Error{
		ErrTooShort:       {Op: "segment tcpv4", Reason: ErrTooShort, Detail: "shorter than an IPv4 header"},
		ErrBadVersion:     {Op: "segment tcpv4", Reason: ErrBadVersion, Detail: "not IPv4"},
		ErrBadIHL:         {Op: "segment tcpv4", Reason: ErrBadIHL, Detail: "bad IPv4 header length"},
		ErrBadTotalLength: {Op: "segment tcpv4", Reason: ErrBadTotalLength, Detail: "bad IPv4 total length"},
	}
)

// CompleteChecksum finishes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM)
// in a non-GSO packet. The kernel leaves the folded pseudo-header sum in
// the checksum field at CsumStart+CsumOffset and expects the receiver to
// sum from CsumStart to the end, that field included, and store the
// inverted result (skb_checksum_help). It does nothing when the flag is not
// set. h.CsumStart must already be relative to pkt (IPv4 header start).
func CompleteChecksum(pkt []byte, h VirtioNetHdr) error {
	if h.Flags&VirtioNetHdrFNeedsCsum == 0 {
		return nil
	}
	if h.GSOType&^GSOECN != GSONone {
		return errCsumGSO
	}
	if err := checkCsumBounds(len(pkt), h); err != nil {
		return err
	}
	c := ^Fold(Sum(pkt[h.CsumStart:], 0))
	// Like skb_checksum_help, send 0xffff rather than 0: both are the
	// same ones-complement value, but 0 would mean "no checksum" to UDP.
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[int(h.CsumStart)+int(h.CsumOffset):], c)
	return nil
}

// checkCsumBounds checks that the checksum field h points at lies within a
// packet of n bytes.
func checkCsumBounds(n int, h VirtioNetHdr) error {
	// Every checksum the kernel offloads (TCP, UDP, ICMP) sits at an even
	// offset in its header. An odd one would not line up with the 16-bit
	// words of the sum, and the result would be garbage.
	if h.CsumOffset%2 != 0 {
		return errCsumOdd
	}
	start := int(h.CsumStart)
	field := start + int(h.CsumOffset)
	if field+2 > n {
		return errCsumBounds
	}
	return nil
}

// SegmentTCPv4 cuts a TSO superframe (IPv4 and TCP, h.GSOType GSOTCPv4,
// maybe with GSOECN) into segments of at most h.GSOSize payload bytes. Each
// segment is a complete IPv4 packet written to out[i][offset:], with its
// length in sizes[i]; it returns the number of segments. out and sizes use
// the tun.Device batch shape so the result can be handed to a writer as is.
//
// Each segment carries a copy of the superframe's IP and TCP headers,
// options included, with the changes tcp_gso_segment and inet_gso_segment
// make in the kernel: the total length and header checksum are recomputed,
// the IP ID counts up from the original, the sequence number advances by
// the payload before the segment, FIN and PSH stay only on the last
// segment and CWR only on the first, and the TCP checksum is computed in
// full (the superframe's field holds only the pseudo-header sum).
//
// With h.GSOType GSONone the packet is copied as one segment, and its
// partial checksum completed if h asks for it. In both cases bytes after the
// IPv4 total length are not part of the packet and are not copied.
//
// Nothing is written unless all segments fit: the segment count, len(out),
// len(sizes) and every buffer length are checked first. The out buffers
// must not overlap pkt. Errors carry a
// ParseError reason (ReasonOf). SegmentTCPv4 does not allocate.
func SegmentTCPv4(pkt []byte, h VirtioNetHdr, out [][]byte, sizes []int, offset int) (n int, err error) {
	n, _, err = segmentTCPv4(pkt, h, 0, out, sizes, offset, true)
	return n, err
}

// SegmentTCPv4From is SegmentTCPv4 for a caller with fewer buffers than
// segments: it writes segments first, first+1, … into out, as many as
// out and sizes hold, and returns how many it wrote and how many the
// superframe makes in all. Calling it again from first+n continues where
// it stopped; each segment is the same as SegmentTCPv4 makes.
func SegmentTCPv4From(pkt []byte, h VirtioNetHdr, first int, out [][]byte, sizes []int, offset int) (n, total int, err error) {
	return segmentTCPv4(pkt, h, first, out, sizes, offset, false)
}

// segmentTCPv4 writes segments first.. of pkt; with whole, all of them or
// none.
func segmentTCPv4(pkt []byte, h VirtioNetHdr, first int, out [][]byte, sizes []int, offset int, whole bool) (n, total int, err error) {
	ip, err := segInput(pkt, offset)
	if err != nil {
		return 0, 0, err
	}

	if h.GSOType == GSONone {
		if first != 0 {
			return 0, 1, errSegFirst
		}
		if len(out) < 1 || len(sizes) < 1 {
			return 0, 1, errSegOut
		}
		if len(out[0]) < offset || len(out[0])-offset < len(ip) {
			return 0, 1, errSegOutSmall
		}
		if h.Flags&VirtioNetHdrFNeedsCsum != 0 {
			// Check before copying, so a bad header writes nothing.
			if err := checkCsumBounds(len(ip), h); err != nil {
				return 0, 1, err
			}
		}
		seg := out[0][offset : offset+len(ip)]
		copy(seg, ip)
		if err := CompleteChecksum(seg, h); err != nil {
			return 0, 1, err // unreachable: bounds checked above
		}
		sizes[0] = len(seg)
		return 1, 1, nil
	}

	if h.GSOType&^GSOECN != GSOTCPv4 {
		return 0, 0, errSegGSOType
	}
	if h.GSOSize == 0 {
		return 0, 0, errSegGSOSize
	}
	if ip.Protocol() != ProtoTCP {
		return 0, 0, errSegNotTCP
	}
	if ip.IsFragment() {
		return 0, 0, errSegFragment
	}
	// Don't trust h.HdrLen: the kernel has been seen to report a wrong
	// value (wireguard-go tun_linux.go has the same rule). Derive the
	// header lengths from IHL and the TCP data offset instead.
	iphLen := ip.HeaderLen()
	if int(h.CsumStart) != iphLen {
		return 0, 0, errSegCsumStart
	}
	if len(ip)-iphLen < TCPMinHeaderLen {
		return 0, 0, errSegTCPShort
	}
	tcpLen := TCP(ip[iphLen:]).DataOffset()
	if tcpLen < TCPMinHeaderLen || iphLen+tcpLen > len(ip) {
		return 0, 0, errSegTCPShort
	}
	hdrLen := iphLen + tcpLen
	payload := ip[hdrLen:]
	mss := int(h.GSOSize)

	total = (len(payload) + mss - 1) / mss
	if total == 0 {
		total = 1 // a header-only superframe still goes out, as one segment
	}
	n, err = segmentsFit(&tcpFitErrs, total, first, hdrLen, len(payload), mss, out, sizes, offset, whole)
	if err != nil {
		return 0, total, err
	}

	origID := ip.ID()
	origTCP := TCP(ip[iphLen:hdrLen])
	origSeq := origTCP.Seq()
	origFlags := origTCP.Flags()
	src, dst := ip.SrcBytes(), ip.DstBytes()

	for i := range n {
		k := first + i
		chunk := payload[k*mss : min((k+1)*mss, len(payload))]
		segLen := hdrLen + len(chunk)
		seg := out[i][offset : offset+segLen]
		copy(seg, ip[:hdrLen])
		copy(seg[hdrLen:], chunk)

		sip := IPv4(seg)
		sip.SetTotalLen(uint16(segLen))
		sip.SetID(origID + uint16(k))
		sip.ComputeChecksum()

		t := TCP(seg[iphLen:hdrLen])
		t.SetSeq(origSeq + uint32(k*mss))
		flags := origFlags
		if k != total-1 {
			flags &^= TCPFlagFIN | TCPFlagPSH
		}
		if k != 0 {
			flags &^= TCPFlagCWR
		}
		t.SetFlags(flags)
		t.SetChecksum(0)
		s := PseudoHeaderSum(ProtoTCP, src, dst, uint16(tcpLen+len(chunk)))
		// tcpLen is a multiple of 4, so the payload sum stays aligned.
		s = Sum(t, s)
		s = Sum(chunk, s)
		t.SetChecksum(^Fold(s))
		sizes[i] = segLen
	}
	return n, total, nil
}

// SegmentUDPv4 cuts a UDP superframe (h.GSOType GSOUDPL4) into the
// datagrams it carries, h.GSOSize payload bytes each and the last one at
// most that, as the kernel's __udp_gso_segment does: each a complete IPv4
// packet with a copy of the superframe's IP and UDP headers, its own
// lengths and header checksum, the IP ID counting up from the original,
// and its UDP checksum computed in full, unless the superframe carries
// none (a zero checksum field without a partial checksum). The UDP length
// field of the superframe must cover the whole packet, as GRO leaves it.
// out, sizes and offset are as for SegmentTCPv4, and so are the checks:
// nothing is written unless every datagram fits. It does not allocate.
func SegmentUDPv4(pkt []byte, h VirtioNetHdr, out [][]byte, sizes []int, offset int) (n int, err error) {
	n, _, err = segmentUDPv4(pkt, h, 0, out, sizes, offset, true)
	return n, err
}

// SegmentUDPv4From is to SegmentUDPv4 what SegmentTCPv4From is to
// SegmentTCPv4: datagrams first, first+1, … as many as out holds, and the
// count in all.
func SegmentUDPv4From(pkt []byte, h VirtioNetHdr, first int, out [][]byte, sizes []int, offset int) (n, total int, err error) {
	return segmentUDPv4(pkt, h, first, out, sizes, offset, false)
}

// CheckUDPSuperframe says what, if anything, keeps ip (an IPv4 packet,
// validated, cut to its total length) with virtio header h from being a
// UDP superframe as the kernel's GSO and GRO make them: GSOUDPL4 with a
// segment size, UDP, not a fragment, a partial checksum (if asked for) in
// the UDP header's own field with h's offsets counted from the IPv4
// header, and a UDP length field that covers the whole packet.
func CheckUDPSuperframe(ip IPv4, h VirtioNetHdr) error {
	switch {
	case h.GSOType != GSOUDPL4:
		return errSegUDPType
	case h.GSOSize == 0:
		return errSegUDPSize
	case ip.Protocol() != ProtoUDP:
		return errSegNotUDP
	case ip.IsFragment():
		return errSegUDPFragment
	}
	iphLen := ip.HeaderLen()
	if h.Flags&VirtioNetHdrFNeedsCsum != 0 && (int(h.CsumStart) != iphLen || h.CsumOffset != udpChecksum) {
		return errSegUDPCsumStart
	}
	if len(ip)-iphLen < UDPHeaderLen || int(UDP(ip[iphLen:]).Length()) != len(ip)-iphLen {
		return errSegUDPLength
	}
	return nil
}

// segmentUDPv4 writes datagrams first.. of pkt; with whole, all of them
// or none.
func segmentUDPv4(pkt []byte, h VirtioNetHdr, first int, out [][]byte, sizes []int, offset int, whole bool) (n, total int, err error) {
	ip, err := segInput(pkt, offset)
	if err != nil {
		return 0, 0, err
	}
	if err := CheckUDPSuperframe(ip, h); err != nil {
		return 0, 0, err
	}
	iphLen := ip.HeaderLen()
	partial := h.Flags&VirtioNetHdrFNeedsCsum != 0
	hdrLen := iphLen + UDPHeaderLen
	payload := ip[hdrLen:]
	size := int(h.GSOSize)
	total = max((len(payload)+size-1)/size, 1)
	n, err = segmentsFit(&udpFitErrs, total, first, hdrLen, len(payload), size, out, sizes, offset, whole)
	if err != nil {
		return 0, total, err
	}
	sum := partial || UDP(ip[iphLen:]).Checksum() != 0
	origID := ip.ID()
	src, dst := ip.SrcBytes(), ip.DstBytes()
	for i := range n {
		k := first + i
		chunk := payload[k*size : min((k+1)*size, len(payload))]
		segLen := hdrLen + len(chunk)
		seg := out[i][offset : offset+segLen]
		copy(seg, ip[:hdrLen])
		copy(seg[hdrLen:], chunk)

		sip := IPv4(seg)
		sip.SetTotalLen(uint16(segLen))
		sip.SetID(origID + uint16(k))
		sip.ComputeChecksum()

		u := UDP(seg[iphLen:hdrLen])
		u.SetLength(uint16(UDPHeaderLen + len(chunk)))
		u.SetChecksum(0)
		if sum {
			s := PseudoHeaderSum(ProtoUDP, src, dst, uint16(UDPHeaderLen+len(chunk)))
			s = Sum(u, s)
			s = Sum(chunk, s)
			c := ^Fold(s)
			if c == 0 {
				c = 0xffff // 0 means "no checksum" in UDP
			}
			u.SetChecksum(c)
		}
		sizes[i] = segLen
	}
	return n, total, nil
}

// segInput checks what both segmenters take first: a valid IPv4 packet
// and a usable offset. It returns the packet cut to its total length.
func segInput(pkt []byte, offset int) (IPv4, error) {
	if offset < 0 {
		return nil, errSegOffset
	}
	ip := IPv4(pkt)
	if r := ip.Validate(); r != ParseOK {
		return nil, errIPv4ByReason[r]
	}
	return ip[:ip.TotalLen()], nil
}

// fitErrs are a segmenter's errors for segmentsFit.
type fitErrs struct{ first, out, outSmall *Error }

var (
	tcpFitErrs = fitErrs{errSegFirst, errSegOut, errSegOutSmall}
	udpFitErrs = fitErrs{errSegUDPFirst, errSegUDPOut, errSegUDPOutSmall}
)

// segmentsFit says how many of a superframe's total segments, from first
// on, out and sizes take (with whole, all of them or it is an error), and
// checks that each buffer holds its segment after offset: hdrLen bytes of
// headers and up to size of the plen-byte payload.
func segmentsFit(e *fitErrs, total, first, hdrLen, plen, size int, out [][]byte, sizes []int, offset int, whole bool) (int, error) {
	if first < 0 || first >= total {
		return 0, e.first
	}
	n := min(total-first, len(out), len(sizes))
	if n == 0 || (whole && n < total) {
		return 0, e.out
	}
	for i := range n {
		segLen := hdrLen + min(size, plen-(first+i)*size)
		if len(out[i]) < offset || len(out[i])-offset < segLen {
			return 0, e.outSmall
		}
	}
	return n, nil
}
