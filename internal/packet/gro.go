package packet

import (
	"bytes"
	"encoding/binary"
)

// Receive coalescing (GRO) for packets bound for a TAP or TUN. The switch
// gets a bulk TCP stream from the underlay or the host TUN as one ~1.4 KB
// segment per packet, and a UDP stream always as one datagram per packet;
// written one write(2) each, every packet pays the whole receive path of
// the kernel behind the device. A TAP opened with IFF_VNET_HDR also
// accepts one superframe of up to 64 KiB plus a virtio-net header asking
// for GSO_TCPV4 (or, on kernels with USO, GSO_UDP_L4), so GRO merges
// consecutive segments of a flow into such a superframe and the kernel
// takes the burst in one write, cutting it again only where it must (a
// UDP socket gets its datagrams one by one, exactly as they were sent).
//
// The rules follow the kernel's tcp_gro_receive and inet_gro_receive
// (net/ipv4/tcp_offload.c, af_inet.c), as wireguard-go's
// tun/offload_linux.go does, so the pod sees what a NIC doing GRO would
// have handed it. A segment is appended to a pending packet of its flow
// only if:
//
//   - both are IPv4 without options (IHL 5) and not fragments, and TOS,
//     TTL and the DF/reserved flag bits are equal (ID, total length and
//     header checksum may differ);
//   - both have TCP payload, the same ACK number, data offset, window and
//     TCP options, byte for byte;
//   - the segment's sequence number is where the pending packet ends;
//   - the flags are ACK, maybe ECE, maybe PSH, and maybe CWR on the first
//     segment only; ECE must match. SYN, FIN, RST and URG never merge;
//     a segment with PSH ends its packet (PSH is kept on the result);
//   - every segment carries the first one's payload size, except a
//     shorter last one, which ends the packet;
//   - the result stays within GROMaxSegments segments, 65535 bytes of
//     IPv4 total length and the head buffer's capacity;
//   - both TCP checksums are valid (see Add).
//
// The kernel also wants IP IDs that count up by one per segment (or stay
// fixed with DF). Like wireguard-go we do not check them: a merged packet
// keeps the head's ID, TCP never reads IDs, and a pod that forwards the
// superframe has its own GSO count up from the head's ID again. IDs of
// DF packets carry no meaning anyway (RFC 6864 §4.1).
//
// UDP datagrams merge as the kernel's udp_gro_receive_segment merges them
// for forwarding (GSO_UDP_L4), and only when the caller says the device
// takes that (GROOpts.UDP): the same IPv4 rules; a UDP length field equal
// to what the packet holds and a non-empty payload; every datagram of the
// first one's size except a shorter last one; the checksum present in all
// or in none (a zero UDP checksum is "none"); valid checksums as for TCP.
// A USO superframe is cut back at exactly those boundaries, so each
// datagram reaches the socket as it was sent.
//
// A packet whose checksum is partial (virtio-net NEEDS_CSUM: it comes from
// a local kernel, which will finish it) merges only with partial ones, and
// unverified: there is no checksum to verify yet. A lone one comes back
// from Flush with its NEEDS_CSUM header.
//
// A flow's segments are keyed by protocol, addresses and ports. A segment that
// cannot be appended, the ACK number changing included, closes the flow's
// pending packet and becomes the flow's newest entry, so Flush emits each
// flow's packets in arrival order, as the kernel's GRO flush does.

// Implementation constants.
const (
	// GROMaxSegments is the most segments one merged packet holds. At a
	// 1448-byte MSS the 64 KiB limit is reached first (45 segments); this
	// bound matters for small segments: a kernel that must cut the merged
	// packet again (to forward it, or for a socket without GRO) would
	// otherwise pay for hundreds of them. It is also the switch's segment
	// scratch (switch/forward.go segScratchLen), so one such packet is cut
	// in one pass where the switch must.
	GROMaxSegments = 64

	// groMaxLen is the largest merged packet: the IPv4 total length is a
	// 16-bit field. A frame of this size plus its Ethernet header is
	// exactly MaxFrameLen.
	groMaxLen = 65535
)

// groFlowKey identifies a flow: protocol, addresses and ports of one
// direction.
// Unlike wireguard-go's, it leaves out the ACK number: a segment with a new
// ACK ends the flow's pending packet (as in tcp_gro_receive) instead of
// opening a parallel one that a later segment could merge into out of
// order.
type groFlowKey struct {
	addrs uint64 // source << 32 | destination
	ports uint32 // source << 16 | destination
	proto uint8
}

func (k groFlowKey) hash() uint64 {
	h := k.addrs*0x9e3779b97f4a7c15 ^ (uint64(k.ports)|uint64(k.proto)<<32)*0xc2b2ae3d27d4eb4f
	return h ^ h>>31
}

// groEntry is one packet waiting in a GRO: a lone packet or a merged one.
type groEntry struct {
	buf      []byte // the head's buffer, resliced to its capacity
	off      int    // where the head's IPv4 header starts in buf
	n        int    // length to emit: as given, or the merged length
	ipLen    int    // IPv4 total length, growing as segments are appended
	key      groFlowKey
	keyed    bool   // key is valid (the packet has a TCP header)
	open     bool   // segments may still be appended
	verified bool   // the head's checksum has been checked and is valid
	partial  bool   // the head's checksum is partial (GROOpts.Partial)
	segs     uint16 // segments merged so far, the head included
	gsoSize  uint16 // the head's payload length: every segment's but the last
	hdrLen   uint8  // IPv4 + transport header length
	proto    uint8  // ProtoTCP or ProtoUDP
	nextSeq  uint32 // TCP: sequence number the next segment must carry
	noCsum   bool   // UDP: the head's checksum field is 0 (none)
}

// GRO merges TCP/IPv4 segments and UDP/IPv4 datagrams bound for pod
// ports or the host TUN into superframes.
// The zero value is not usable; call NewGRO. A GRO is not safe for
// concurrent use: each port's writer owns one.
//
// The caller offers every IPv4 packet of a batch to Add, writes the ones
// Add refuses itself, and calls Flush at the end of the batch.
type GRO struct {
	entries []groEntry // pending packets in arrival order; cap is maxPackets
	// slots is an open-addressing hash table (linear probing, no deletes
	// until Flush clears it) from a flow to its newest entry, as index+1
	// so that the zero value means empty. Its length is a power of two at
	// least twice maxPackets, so a probe always ends at an empty slot.
	slots []int32
	mask  uint64
}

// NewGRO returns a GRO that holds up to maxPackets pending packets (at
// least 1); size it to the caller's batch so that Add never finds it full.
// All memory is allocated here: Add and Flush do not allocate.
func NewGRO(maxPackets int) *GRO {
	maxPackets = max(maxPackets, 1)
	n := 1
	for n < 2*maxPackets {
		n <<= 1
	}
	return &GRO{
		entries: make([]groEntry, 0, maxPackets),
		slots:   make([]int32, n),
		mask:    uint64(n - 1),
	}
}

// groSegment is what Add learns about an offered TCP or UDP packet.
type groSegment struct {
	key        groFlowKey
	keyed      bool // has a complete transport header, so key is valid
	coalescing bool // may take part in a merge at all
	iphLen     int
	tcpLen     int // transport header length (8 for UDP)
	payload    int
	seq        uint32
	flags      uint8
	noCsum     bool // UDP checksum field is 0
}

// parseGRODatagram inspects ip, an IPv4/UDP packet resliced to its total
// length.
func parseGRODatagram(ip IPv4) (s groSegment) {
	s.iphLen = ip.HeaderLen()
	if ip.FragmentOffset() != 0 || len(ip)-s.iphLen < UDPHeaderLen {
		return s
	}
	u := UDP(ip[s.iphLen:])
	s.tcpLen = UDPHeaderLen
	s.keyed = true
	s.key = groFlowKey{
		addrs: uint64(binary.BigEndian.Uint32(ip[ipv4Src:]))<<32 | uint64(binary.BigEndian.Uint32(ip[ipv4Dst:])),
		ports: uint32(u.SrcPort())<<16 | uint32(u.DstPort()),
		proto: ProtoUDP,
	}
	s.payload = len(u) - UDPHeaderLen
	s.noCsum = u.Checksum() == 0
	// udp_gro_receive_segment refuses a length field that disagrees with
	// the packet (padding, or a lie) and empty datagrams, which GSO cannot
	// describe.
	s.coalescing = s.iphLen == IPv4MinHeaderLen && !ip.MoreFragments() &&
		int(u.Length()) == len(u) && s.payload > 0
	return s
}

// parseGROSegment inspects ip, an IPv4/TCP packet resliced to its total
// length.
func parseGROSegment(ip IPv4) (s groSegment) {
	s.iphLen = ip.HeaderLen()
	if ip.FragmentOffset() != 0 || len(ip)-s.iphLen < TCPMinHeaderLen {
		return s // no TCP header to key on
	}
	t := TCP(ip[s.iphLen:])
	s.tcpLen = t.DataOffset()
	if s.tcpLen < TCPMinHeaderLen || s.tcpLen > len(t) {
		return s
	}
	s.keyed = true
	s.key = groFlowKey{
		addrs: uint64(binary.BigEndian.Uint32(ip[ipv4Src:]))<<32 | uint64(binary.BigEndian.Uint32(ip[ipv4Dst:])),
		ports: uint32(t.SrcPort())<<16 | uint32(t.DstPort()),
		proto: ProtoTCP,
	}
	s.payload = len(t) - s.tcpLen
	s.seq = t.Seq()
	s.flags = t.Flags()
	// IP options and fragments are what inet_gro_receive refuses; an
	// empty payload (a pure ACK) is what tcp_gro_receive flushes on.
	s.coalescing = s.iphLen == IPv4MinHeaderLen && !ip.MoreFragments() &&
		s.payload > 0 && s.flags&TCPFlagACK != 0 &&
		s.flags&(TCPFlagSYN|TCPFlagFIN|TCPFlagRST|TCPFlagURG) == 0
	return s
}

// GROOpts is what the caller knows about a packet it offers (AddWith).
type GROOpts struct {
	// Verified: the caller has checked the transport checksum and found
	// it valid, so it is not summed a second time.
	Verified bool
	// Partial: the transport checksum is partial (virtio-net NEEDS_CSUM)
	// with CsumStart at the end of the IPv4 header and CsumOffset at the
	// protocol's checksum field; nothing is verified.
	Partial bool
	// UDP: UDP datagrams may merge too; set it only when the device the
	// result goes to takes GSO_UDP_L4. Without it UDP is refused.
	UDP bool
}

// Add offers the IPv4 packet buf[off:off+n] and reports whether g took
// it. Every packet of protocol TCP is taken, merged into the pending
// packet of its flow if the rules above allow, otherwise held as a new
// entry (and maybe the head of later merges), so that Flush emits all TCP
// packets of a flow in their arrival order. Add returns false, and the
// packet stays the caller's to write, for anything that is not valid
// IPv4 carrying TCP (order against pending TCP flows does not matter for
// those), and for a TCP packet that can neither merge nor get an entry
// because g already holds maxPackets: the caller should then Flush before
// writing it, to keep its flow in order.
//
// For a taken packet, buf must stay valid and unmodified until Flush. GRO
// may write anywhere in buf[off:cap(buf)] (a merge appends the next
// segments' payload there, so buffers should be BufferSize long and hold
// one packet each); the headroom before off is not touched. Bytes of buf
// after the IPv4 total length, such as Ethernet padding, are not part of
// the packet.
//
// Checksums must be complete (AddWith takes partial ones). Each segment's
// checksum is verified before it is merged, because the merged packet
// goes out with NEEDS_CSUM, which the receiving kernel takes as "checksum
// already good" (CHECKSUM_PARTIAL): a corrupt segment inside it would
// reach the socket. A segment that fails stays a lone packet, untouched,
// and the receiving kernel drops it.
func (g *GRO) Add(buf []byte, off, n int) bool { return g.AddWith(buf, off, n, GROOpts{}) }

// AddVerified is Add for a packet whose TCP checksum the caller has just
// verified (the switch checks what arrives from a tunnel anyway): it is
// not summed a second time.
func (g *GRO) AddVerified(buf []byte, off, n int) bool {
	return g.AddWith(buf, off, n, GROOpts{Verified: true})
}

// AddWith is Add with what the caller knows of the packet: a verified or
// partial checksum, and whether UDP may merge. With opts.UDP, UDP packets
// are taken as TCP ones are (held in order, merged when the rules allow).
func (g *GRO) AddWith(buf []byte, off, n int, opts GROOpts) bool {
	if off < 0 || n < 0 || off > len(buf) || n > len(buf)-off {
		return false
	}
	ip := IPv4(buf[off : off+n])
	if ip.Validate() != ParseOK {
		return false
	}
	ip = ip[:ip.TotalLen()]
	var s groSegment
	switch {
	case ip.Protocol() == ProtoTCP:
		s = parseGROSegment(ip)
	case ip.Protocol() == ProtoUDP && opts.UDP:
		s = parseGRODatagram(ip)
	default:
		return false
	}

	slot := -1
	if s.keyed {
		slot = g.lookup(s.key)
		if i := g.slots[slot]; i != 0 {
			e := &g.entries[i-1]
			if e.open {
				if g.merge(e, ip, &s, opts) {
					return true
				}
				// Whatever failed, nothing of this flow may be appended to
				// e any more: it would overtake this packet.
				e.open = false
			}
		}
	}
	if len(g.entries) == cap(g.entries) {
		return false
	}
	open := s.coalescing
	if ip.Protocol() == ProtoTCP {
		open = open && s.flags&TCPFlagPSH == 0
	}
	g.entries = append(g.entries, groEntry{
		buf:     buf[:cap(buf)],
		off:     off,
		n:       n,
		ipLen:   len(ip),
		key:     s.key,
		keyed:   s.keyed,
		open:    open,
		segs:    1,
		gsoSize: uint16(s.payload),
		hdrLen:  uint8(s.iphLen + s.tcpLen),
		proto:   ip.Protocol(),
		nextSeq: s.seq + uint32(s.payload),
		noCsum:  s.noCsum,
		// The head is checked when a second segment comes to merge,
		// unless the caller has checked it already.
		verified: opts.Verified,
		partial:  opts.Partial,
	})
	if slot >= 0 {
		g.slots[slot] = int32(len(g.entries))
	}
	return true
}

// lookup returns the slot of key's newest entry, or the empty slot where
// it would go.
func (g *GRO) lookup(key groFlowKey) int {
	i := key.hash() & g.mask
	for {
		e := g.slots[i]
		if e == 0 || g.entries[e-1].key == key {
			return int(i)
		}
		i = (i + 1) & g.mask
	}
}

// merge appends segment ip, described by s, to the open entry e of the
// same flow if the rules in the file comment allow, and reports whether
// it did.
func (g *GRO) merge(e *groEntry, ip IPv4, s *groSegment, opts GROOpts) bool {
	if !s.coalescing || int(e.hdrLen) != s.iphLen+s.tcpLen || e.partial != opts.Partial {
		return false
	}
	if s.payload > int(e.gsoSize) || e.segs >= GROMaxSegments {
		return false
	}
	newLen := e.ipLen + s.payload
	if newLen > groMaxLen || newLen > len(e.buf)-e.off {
		return false
	}
	head := IPv4(e.buf[e.off : e.off+e.ipLen])
	// inet_gro_receive: TOS, TTL and the flag bits (DF; MF is 0 in both)
	// must match. Addresses and protocol matched through the key.
	if ip[ipv4TOS] != head[ipv4TOS] || ip[ipv4TTL] != head[ipv4TTL] ||
		ip[ipv4FlagsFrag]&0xe0 != head[ipv4FlagsFrag]&0xe0 {
		return false
	}
	if e.proto == ProtoTCP {
		if !mergeableTCP(e, head, ip, s) {
			return false
		}
	} else if s.noCsum != e.noCsum {
		return false // udp_gro_receive_segment: checksum in all or none
	}
	if !e.verified && !e.partial {
		// The head is still exactly as it arrived: merging starts here.
		if !TransportChecksumValid(head) {
			return false
		}
		e.verified = true
	}
	if !opts.Verified && !opts.Partial && !TransportChecksumValid(ip) {
		return false
	}

	copy(e.buf[e.off+e.ipLen:e.off+newLen], ip[s.iphLen+s.tcpLen:])
	e.ipLen = newLen
	e.n = newLen
	e.segs++
	e.nextSeq += uint32(s.payload)
	if e.proto == ProtoTCP && s.flags&TCPFlagPSH != 0 {
		// PSH ends the packet and is carried on it, as tcp_gro_receive
		// ORs the new segment's FIN/PSH into the held head.
		ht := TCP(head[s.iphLen:])
		ht.SetFlags(ht.Flags() | TCPFlagPSH)
		e.open = false
	}
	if s.payload < int(e.gsoSize) {
		e.open = false // only the last segment may be short
	}
	return true
}

// mergeableTCP applies the TCP rules of the file comment to segment ip
// and the head of e.
func mergeableTCP(e *groEntry, head, ip IPv4, s *groSegment) bool {
	if s.seq != e.nextSeq {
		return false
	}
	ht, st := TCP(head[s.iphLen:]), TCP(ip[s.iphLen:])
	// tcp_gro_receive compares the whole word at offset 12 (data offset,
	// reserved bits, flags, window) except CWR, FIN and PSH, and flushes
	// when the new segment has CWR: CWR may only be on the first segment,
	// which is also where tcp_gso_segment puts it back.
	return st.Flags()&^TCPFlagPSH == ht.Flags()&^TCPFlagCWR &&
		st[tcpDataOffset] == ht[tcpDataOffset] && st.Window() == ht.Window() &&
		st.Ack() == ht.Ack() &&
		bytes.Equal(st[TCPMinHeaderLen:s.tcpLen], ht[TCPMinHeaderLen:s.tcpLen])
}

// Flush calls emit for every pending packet, in the arrival order of each
// one's first segment, then empties g; it holds no buffers afterwards.
// buf[off:off+n] is a complete IPv4 packet, and hdr the virtio-net header
// to write with it, with CsumStart and HdrLen relative to the IPv4 header
// (the caller adds EthernetHeaderLen to both).
//
// A lone packet comes back untouched, with an all-zero hdr, or with just
// NEEDS_CSUM at the standard offsets when it came in partial. A merged
// one has its total length and IPv4 header checksum rewritten and, as the
// kernel's tcp_gro_complete and udp_gro_complete leave it,
// CHECKSUM_PARTIAL: the transport checksum field holds the folded
// pseudo-header sum of the whole, and hdr says VirtioNetHdrFNeedsCsum,
// GSOSize the first segment's payload, CsumStart the IPv4 header length,
// and for TCP GSOTCPv4 (with GSOECN when the head has CWR), PSH if its
// last segment had it, CsumOffset 16; for UDP GSOUDPL4, the UDP length
// field of the whole, CsumOffset 6.
//
// emit must not call g's methods. Pass a func value the caller keeps (a
// method value made once, not a fresh closure) to keep Flush free of
// allocations.
func (g *GRO) Flush(emit func(buf []byte, off, n int, hdr VirtioNetHdr)) {
	if len(g.entries) == 0 {
		return
	}
	for i := range g.entries {
		e := &g.entries[i]
		if e.segs == 1 {
			var h VirtioNetHdr
			if e.partial {
				off, _, _ := transportChecksumOffset(e.proto)
				h = VirtioNetHdr{
					Flags:      VirtioNetHdrFNeedsCsum,
					CsumStart:  uint16(IPv4(e.buf[e.off:]).HeaderLen()),
					CsumOffset: uint16(off),
				}
			}
			emit(e.buf, e.off, e.n, h)
			continue
		}
		pkt := IPv4(e.buf[e.off : e.off+e.ipLen])
		pkt.SetTotalLen(uint16(e.ipLen))
		pkt.ComputeChecksum()
		if e.proto == ProtoUDP {
			emit(e.buf, e.off, e.n, AsUDPSuperframe(pkt, int(e.gsoSize)))
			continue
		}
		iphLen := pkt.HeaderLen()
		t := TCP(pkt[iphLen:])
		t.SetChecksum(Fold(PseudoHeaderSum(ProtoTCP, pkt.SrcBytes(), pkt.DstBytes(), uint16(e.ipLen-iphLen))))
		h := VirtioNetHdr{
			Flags:      VirtioNetHdrFNeedsCsum,
			GSOType:    GSOTCPv4,
			HdrLen:     uint16(e.hdrLen),
			GSOSize:    e.gsoSize,
			CsumStart:  uint16(iphLen),
			CsumOffset: tcpChecksum,
		}
		if t.Flags()&TCPFlagCWR != 0 {
			// tcp_gro_complete sets SKB_GSO_TCP_ECN for a CWR head, so
			// that re-segmentation keeps CWR on the first segment only.
			h.GSOType |= GSOECN
		}
		emit(e.buf, e.off, e.n, h)
	}
	// Drop the buffer references, so a stale GRO pins nothing and cannot
	// write into a buffer its owner has reused.
	clear(g.entries)
	g.entries = g.entries[:0]
	clear(g.slots)
}

// AsUDPSuperframe makes ip, one IPv4/UDP packet (total length and header
// checksum set) whose payload is datagrams of gsoSize bytes, the last one
// at most that, into a GSO_UDP_L4 superframe as udp_gro_complete leaves
// one: the UDP length covers the whole and the checksum field holds the
// pseudo-header sum, a partial checksum. It returns the virtio header that
// says so, offsets counted from the IP header.
func AsUDPSuperframe(ip IPv4, gsoSize int) VirtioNetHdr {
	iphLen := ip.HeaderLen()
	u := UDP(ip[iphLen:])
	u.SetLength(uint16(len(ip) - iphLen))
	u.SetChecksum(Fold(PseudoHeaderSum(ProtoUDP, ip.SrcBytes(), ip.DstBytes(), uint16(len(ip)-iphLen))))
	return VirtioNetHdr{
		Flags:      VirtioNetHdrFNeedsCsum,
		GSOType:    GSOUDPL4,
		HdrLen:     uint16(iphLen + UDPHeaderLen),
		GSOSize:    uint16(gsoSize),
		CsumStart:  uint16(iphLen),
		CsumOffset: udpChecksum,
	}
}

// MarkUDPSegments rewrites UDP superframe ip (as AsUDPSuperframe leaves
// one) into the form in which podnet sends one whole over IP-in-IP: the
// UDP length field and the partial checksum are those of one datagram of
// gsoSize bytes instead of the whole. The kernel's segmentation writes
// that length into every datagram anyway (and adjusts the checksum from
// the field), so segments on the wire are the same either way; but where
// the superframe crosses to the receiving node whole (a veth underlay),
// the receiver has no segment size from the kernel, and this tells it
// (MarkedUDPSegments). ip must be valid with a UDP header, and gsoSize
// smaller than its payload.
func MarkUDPSegments(ip IPv4, gsoSize int) {
	u := UDP(ip[ip.HeaderLen():])
	l := uint16(UDPHeaderLen + gsoSize)
	u.SetLength(l)
	u.SetChecksum(Fold(PseudoHeaderSum(ProtoUDP, ip.SrcBytes(), ip.DstBytes(), l)))
}

// MarkedUDPSegments recognises a UDP superframe that MarkUDPSegments
// marked and that reached this node whole, and returns its segment size;
// AsUDPSuperframe then makes it an ordinary superframe again. The packet
// must be larger than mtu, the largest packet the path delivers in one
// piece (so no datagram that came over the wire as one can be taken for
// one), and hold at most GROMaxSegments datagrams of the size its UDP
// length field gives, each within mtu, with the partial checksum for that
// length. ok is false for anything else. ip must be valid
// (IPv4.Validate).
func MarkedUDPSegments(ip IPv4, mtu int) (gsoSize int, ok bool) {
	if ip.Protocol() != ProtoUDP || ip.IsFragment() {
		return 0, false
	}
	ip = ip[:ip.TotalLen()]
	iphLen := ip.HeaderLen()
	if len(ip) <= mtu || len(ip)-iphLen < UDPHeaderLen {
		return 0, false
	}
	u := UDP(ip[iphLen:])
	l := int(u.Length())
	size := l - UDPHeaderLen
	payload := len(u) - UDPHeaderLen
	if size <= 0 || l >= len(u) || iphLen+l > mtu || (payload+size-1)/size > GROMaxSegments {
		return 0, false
	}
	if u.Checksum() != Fold(PseudoHeaderSum(ProtoUDP, ip.SrcBytes(), ip.DstBytes(), uint16(l))) {
		return 0, false
	}
	return size, true
}

// KernelSuperpacket recognises a TCP superpacket that the kernel's
// receive GRO merged before a raw socket got it (IP-in-IP on an underlay
// with GRO) and describes it as a TSO superframe, so that it travels on
// whole. The kernel leaves such a packet as tcp_gro_complete made it: IP
// total length and checksum for the whole, and in the TCP checksum field
// only the pseudo-header sum, as a partial checksum. That field is what
// tells it apart from a large packet reassembled from fragments, whose
// checksum is complete (a complete checksum equal to the pseudo-header sum
// is a 1 in 65,536 coincidence that only such reassembled packets can
// meet).
//
// The segment size is not on the wire; the largest that fits mtu, the
// packet size of the path the segments came over, is what
// re-segmentation uses. ok is false for anything else: not TCP, a
// fragment, no payload, headers that leave no room in mtu, or a complete
// checksum. ip must be valid (IPv4.Validate).
func KernelSuperpacket(ip IPv4, mtu int) (h VirtioNetHdr, ok bool) {
	if ip.Protocol() != ProtoTCP || ip.IsFragment() {
		return VirtioNetHdr{}, false
	}
	ip = ip[:ip.TotalLen()]
	iphLen := ip.HeaderLen()
	if len(ip)-iphLen < TCPMinHeaderLen {
		return VirtioNetHdr{}, false
	}
	t := TCP(ip[iphLen:])
	hdrLen := iphLen + t.DataOffset()
	if t.DataOffset() < TCPMinHeaderLen || hdrLen >= len(ip) || hdrLen >= mtu || mtu-hdrLen > 0xffff {
		return VirtioNetHdr{}, false
	}
	if t.Checksum() != Fold(PseudoHeaderSum(ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(ip)-iphLen))) {
		return VirtioNetHdr{}, false
	}
	gsoType := uint8(GSOTCPv4)
	if t.Flags()&TCPFlagCWR != 0 {
		gsoType |= GSOECN
	}
	return VirtioNetHdr{
		Flags:      VirtioNetHdrFNeedsCsum,
		GSOType:    gsoType,
		HdrLen:     uint16(hdrLen),
		GSOSize:    uint16(mtu - hdrLen),
		CsumStart:  uint16(iphLen),
		CsumOffset: tcpChecksum,
	}, true
}
