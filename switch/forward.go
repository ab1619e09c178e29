package vswitch

import (
	"net/netip"
	"sync/atomic"
	"time"

	"podnet/internal/packet"
	"podnet/internal/turn"
)

// Buffer layout of every read slot: the port reads at offset
// packet.Headroom.
//
//	[0 ........ Headroom) [what the port reads: virtio hdr, Ethernet, outer headers ...] [IPv4 ...]
//
// Whatever the ingress, the IPv4 packet ends up with at least Headroom
// bytes in front of it, where egresses write their own headers in place:
// virtio and Ethernet for pods, the TUN's virtio room for the host, outer
// headers for tunnels.
const (
	vnetLen = packet.VirtioNetHdrLen
	ethLen  = packet.EthernetHeaderLen
	// laneMax bounds the packets one lane holds before it flushes.
	laneMax = 128
	// icmpScratchLen holds one generated ICMP error with headroom.
	icmpScratchLen = packet.Headroom + 576
)

// segScratch holds buffers that TSO superframes are split into. Each is a
// full buffer, headroom included: egresses write their headers in place
// in front of each segment.
type segScratch struct {
	bufs  [][]byte
	sizes []int
}

const segScratchLen = 64 // a 64 KiB superframe at MSS ≥ 1024 fits in one round

func newSegScratch() *segScratch {
	s := &segScratch{bufs: make([][]byte, segScratchLen), sizes: make([]int, segScratchLen)}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, packet.BufferSize)
	}
	return s
}

// forwarder is one reader goroutine's state: the snapshots of the current
// batch and scratch space allocated once and reused for every batch.
type forwarder struct {
	s     *Switch
	fib   *fib
	nodes NodeSet
	now   time.Time // when the batch was read: one clock read per batch

	icmp []byte // scratch for ARP replies and ICMP errors

	seg     *segScratch // borrowed while segments are queued
	segUsed int

	lanes       []lane // this reader's queue per batching egress, by lane ID
	dirty       []lane // lanes holding packets
	retiredSeen int    // how much of Switch.retiredLanes dropRetiredLanes has dropped

	// replyFrom is the pollable pod the batch last sent to: the reader
	// polls it for the answer (replies.go). spinUntil, when set, is how
	// long the reader polls its own pod before it parks.
	replyFrom *podPort
	spinUntil time.Time

	// dry, when set, makes this a tracing forwarder: what would be sent
	// is recorded instead (trace.go).
	dry *traceRecorder

	// The last FIB answer of this batch: a batch's packets mostly share
	// one destination (route).
	lastDst netip.Addr
	lastHop *hop
	// The last inner source of this batch that passed the reverse-path
	// check, and the node it came from: a tunnel batch is mostly one
	// flow's segments.
	lastSrc, lastSrcNode netip.Addr

	gro         *packet.GRO // packets bound for pods, podnet0 and NAT (UDP also IP-in-IP), merged per flow
	groIn       ingress     // where the held segments came from
	groFlushing bool        // flushGRO is under way
	groEmit     func(buf []byte, off, n int, hdr packet.VirtioNetHdr)
}

func newForwarder(s *Switch) *forwarder {
	f := &forwarder{
		s:     s,
		icmp:  make([]byte, icmpScratchLen),
		dirty: make([]lane, 0, 8),
		gro:   packet.NewGRO(groMax),
	}
	f.groEmit = f.emitGRO // a method value made once: no allocation per flush
	return f
}

// begin loads the snapshots for one batch.
func (f *forwarder) begin() {
	f.now = time.Now()
	// Before the FIB: a FIB loaded after a retirement was seen no longer
	// has the retired egress, so no lane for it is made again.
	f.dropRetiredLanes()
	f.fib = f.s.fib.Load()
	f.lastHop = nil
	f.lastSrc = netip.Addr{}
	if n := f.s.nodes.Load(); n != nil {
		f.nodes = *n
	} else {
		f.nodes = nil
	}
}

// end flushes what the batch queued and drops the snapshots.
func (f *forwarder) end() {
	f.flushAll()
	f.fib, f.nodes, f.lastHop = nil, nil, nil
}

// route returns the hop for dst from the batch's FIB, remembering the
// last answer.
func (f *forwarder) route(dst netip.Addr) (*hop, bool) {
	if f.lastHop != nil && dst == f.lastDst {
		return f.lastHop, true
	}
	h, ok := f.fib.lookup(dst)
	if ok {
		f.lastDst, f.lastHop = dst, h
	}
	return h, ok
}

// routedVia reports whether the FIB routes inner via node, the reverse-path
// check on what a node sends through a tunnel.
func (f *forwarder) routedVia(inner, node netip.Addr) bool {
	if inner == f.lastSrc && node == f.lastSrcNode {
		return true
	}
	h, ok := f.fib.lookup(inner)
	if !ok || h.r.NextHop != node {
		return false
	}
	f.lastSrc, f.lastSrcNode = inner, node
	return true
}

// readLoop is the body of every port reader: read a batch into buffers
// with packet.Headroom in front, load the snapshots once, classify each
// packet, flush, count. It returns when read reports the device closed;
// other read errors are logged and retried after a pause, so a persistent
// error cannot spin a core.
//
// read fills bufs[i][packet.Headroom:] and sizes; classify takes packet i
// of the batch. Both are made once per reader, so the loop allocates
// nothing, except that a batch of batch buffers grows towards maxBatch
// (readBuffers).
//
// When a capture is attached to capt, each packet read is copied to it
// from byte skip on (past a virtio header) as link.
func (s *Switch) readLoop(name string, c *counters, batch, maxBatch int,
	capt *atomic.Pointer[Capture], skip int, link LinkType, self *podPort,
	read func(bufs [][]byte, sizes []int) (int, error),
	classify func(f *forwarder, i int, buf []byte, size int)) {
	s.log.Debug("reader started", "port", name)
	defer s.log.Debug("reader stopped", "port", name)
	rb := newReadBuffers(batch, maxBatch)
	f := newForwarder(s)
	var tn *turn.Turn // taken by every read that returns packets
	if self != nil && self.poll != nil {
		tn = &self.turn
	}
	for {
		bufs, sizes := rb.active()
		n, err := 0, error(nil)
		if !f.spinUntil.IsZero() {
			n, err = s.spinOwn(self, bufs, sizes, f.spinUntil)
			f.spinUntil = time.Time{}
		}
		if n == 0 && err == nil {
			n, err = read(bufs, sizes)
		}
		if err != nil && n == 0 {
			if isClosed(err) {
				return
			}
			s.log.Warn("port read failed", "port", name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		small := smallBatch(n, bufs, sizes, skip) // before forwarding rewrites the headroom
		s.forwardBatch(f, c, n, bufs, sizes, capt, skip, link, classify)
		rb.adjust(sizes[:n])
		if tn != nil && n > 0 {
			tn.Done() // read returned frames holding the turn
		}
		if p := f.replyFrom; p != nil {
			f.replyFrom = nil
			if small && s.pollReply(f, p, bufs, sizes) && tn != nil {
				// An answer went back to our own pod, whose next request
				// may follow as quickly: look for it before parking.
				f.spinUntil = time.Now().Add(s.replyPoll)
			}
		}
	}
}

// readBuffers are a reader's buffers, of which it reads into the first
// n. Each holds a 64 KiB superframe. A burst of small datagrams is
// merged (GRO) and written a batch at a time, so a deeper batch saves
// writes: n doubles, up to max, after each read that came back full of
// small frames (datagrams, not superframes). A bulk transfer's batch of
// superframes gains nothing from depth but latency and cache misses, so
// the first frame over growFrameMax (a superframe, in practice) takes n
// back to min; the buffers stay for the next burst (64 of them are 4 MiB
// of memory, for a pod that has sent bursts). Frames of a plain TAP are
// never over it: a bulk transfer there reads 64 MTU-sized frames deep,
// 96 KiB, as a burst of datagrams does.
type readBuffers struct {
	bufs     [][]byte
	sizes    []int
	n        int
	min, max int
}

// growFrameMax is the largest frame, virtio header included, that
// counts as small for readBuffers.
const growFrameMax = 2048

func newReadBuffers(min, max int) *readBuffers {
	rb := &readBuffers{sizes: make([]int, max), n: min, min: min, max: max}
	rb.grow(min)
	return rb
}

// active returns the buffers to read into and their sizes.
func (rb *readBuffers) active() ([][]byte, []int) { return rb.bufs[:rb.n], rb.sizes[:rb.n] }

// adjust sets the next batch's depth from the sizes of the frames the
// last one read.
func (rb *readBuffers) adjust(sizes []int) {
	for _, sz := range sizes {
		if sz > growFrameMax {
			rb.n = rb.min
			return
		}
	}
	if len(sizes) == rb.n && rb.n < rb.max {
		rb.n = min(2*rb.n, rb.max)
		rb.grow(rb.n)
	}
}

// grow makes sure there are n buffers.
func (rb *readBuffers) grow(n int) {
	for len(rb.bufs) < n {
		rb.bufs = append(rb.bufs, make([]byte, packet.BufferSize))
	}
}

// smallBatch says whether a batch looks like a request that waits for its
// answer (a ping, an RPC): at most pollBatch packets of at most
// pollFrameSize bytes, none a superframe (its virtio header, the first
// skip bytes of a frame read at packet.Headroom, says so: a burst of
// small datagrams sent with UDP_SEGMENT is one small frame). Bulk
// transfers, whose batches are full or carry superframes, keep their
// readers on their own ports.
func smallBatch(n int, bufs [][]byte, sizes []int, skip int) bool {
	if n > pollBatch {
		return false
	}
	for i, sz := range sizes[:n] {
		if sz > pollFrameSize {
			return false
		}
		var h packet.VirtioNetHdr
		if skip >= packet.VirtioNetHdrLen && h.Decode(bufs[i][packet.Headroom:packet.Headroom+sz]) == nil && h.GSOType != packet.GSONone {
			return false
		}
	}
	return true
}

// forwardBatch captures, classifies and forwards the n packets read into
// bufs, flushes what they queued, and counts them on c.
func (s *Switch) forwardBatch(f *forwarder, c *counters, n int, bufs [][]byte, sizes []int,
	capt *atomic.Pointer[Capture], skip int, link LinkType,
	classify func(f *forwarder, i int, buf []byte, size int)) {
	if cp := capt.Load(); cp != nil {
		for i := 0; i < n; i++ {
			if sizes[i] > skip {
				cp.put(false, link, bufs[i][packet.Headroom+skip:packet.Headroom+sizes[i]])
			}
		}
	}
	f.begin()
	var bytes uint64
	for i := 0; i < n; i++ {
		bytes += uint64(sizes[i])
		classify(f, i, bufs[i], sizes[i])
	}
	f.end()
	c.rxFrames.Add(uint64(n))
	c.rxBytes.Add(bytes)
}

// forward routes one IPv4 packet that an ingress has classified: TTL,
// lookup, the ingress's rules, then the egress. The packet's header is
// valid and its length is p.n.
func (f *forwarder) forward(in ingress, p packetRef) {
	ip := p.ipv4()
	if ip.TTL() <= 1 {
		in.stats().drop(DropTTLExceeded)
		f.icmpError(in, ip, packet.ICMPTimeExceeded, packet.ICMPTTLExceeded, 0)
		return
	}
	h, ok := f.route(ip.Dst())
	if !ok {
		in.stats().drop(DropNoRoute)
		f.icmpError(in, ip, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable, 0)
		return
	}
	if ok, reason := in.mayReach(h.eg.kind(), h.r); !ok {
		in.stats().drop(reason)
		return
	}
	if a, ok := h.eg.(admitter); ok {
		if h, ok = a.admit(f, in, ip, h); !ok {
			return
		}
	}
	if h.eg.kind() != egressDrop {
		ip.DecrementTTL()
	}
	f.shape(in, p, h)
}

// shape makes p fit what h's egress takes and sends it: the one place
// where superframes are segmented, partial checksums completed and the
// tunnel MTU enforced.
func (f *forwarder) shape(in ingress, p packetRef, h *hop) {
	caps := h.eg.caps()
	if caps.innerMTU > 0 && wireLen(p) > caps.innerMTU && p.ipv4().DontFragment() {
		// A superframe is judged by its segments, as the kernel judges
		// a GSO packet it forwards: the sender (a pod that set a larger
		// MTU than podnet gave it, say) learns the tunnel's MTU. Without
		// DF the kernel fragments the outer packet.
		in.stats().drop(DropFragNeeded)
		f.icmpError(in, p.ipv4(), packet.ICMPDestUnreachable, packet.ICMPFragmentationNeeded, uint16(caps.innerMTU))
		return
	}
	if p.superframe() && !caps.takesWhole(p) {
		// What GRO holds for this egress goes first: it may be this
		// flow's (a datagram held for a tunnel, before a superframe the
		// tunnel cuts).
		if caps.merges() {
			f.flushGRO()
		}
		f.segment(in, p, h)
		return
	}
	// A superframe's checksum is partial by nature; an egress that takes
	// superframes has the kernel complete it in every segment.
	if p.partialChecksum() && !caps.partialChecksums && !p.superframe() {
		if err := packet.CompleteChecksum(p.ipv4(), p.gso); err != nil {
			in.stats().drop(DropBadVirtioHeader)
			return
		}
		p.gso = packet.VirtioNetHdr{}
		p.verified = true // computed here: GRO need not check it again
	}
	if caps.merges() && f.dry == nil && f.coalesce(in, p, h, caps) {
		return
	}
	f.send(in, p, h)
}

// send hands p to h's egress (or to the trace recorder).
func (f *forwarder) send(in ingress, p packetRef, h *hop) {
	if f.dry != nil {
		f.dry.sent(h, p)
		return
	}
	h.eg.send(f, in, p, h)
}

// segment splits superframe p into segments (TCP: MSS-sized; UDP: its
// datagrams) in the batch's scratch and sends each one. A superframe of
// more segments than the scratch holds (a small MSS) is cut in rounds,
// what the lanes hold written out between them.
func (f *forwarder) segment(in ingress, p packetRef, h *hop) {
	seg := f.borrowSeg()
	if segScratchLen-f.segUsed < min(maxSegments(p), segScratchLen) {
		f.flushAll()
		seg = f.borrowSeg()
	}
	cut := packet.SegmentTCPv4From
	if p.gso.GSOType == packet.GSOUDPL4 {
		cut = packet.SegmentUDPv4From
	}
	for first := 0; ; {
		bufs, sizes := seg.bufs[f.segUsed:], seg.sizes[f.segUsed:]
		cnt, total, err := cut(p.ipv4(), p.gso, first, bufs, sizes, packet.Headroom)
		if err != nil {
			in.stats().drop(DropBadGSO)
			return
		}
		f.segUsed += cnt
		for i := 0; i < cnt; i++ {
			f.send(in, packetRef{buf: bufs[i], ip: packet.Headroom, n: sizes[i]}, h)
		}
		if first += cnt; first == total {
			return
		}
		f.flushAll()
		seg = f.borrowSeg()
	}
}

// wireLen is the length of the IPv4 packets p leaves as: its own, or
// for a superframe its segments' (headers and one segment of payload).
func wireLen(p packetRef) int {
	if !p.superframe() {
		return p.n
	}
	ip := p.ipv4()
	n := ip.HeaderLen() + int(p.gso.GSOSize)
	switch p.gso.GSOType {
	case packet.GSOTCPv4:
		if t := ip.Payload(); len(t) >= packet.TCPMinHeaderLen {
			n += packet.TCP(t).DataOffset()
		}
	case packet.GSOUDPL4:
		n += packet.UDPHeaderLen
	}
	return n
}

// maxSegments bounds how many segments p splits into.
func maxSegments(p packetRef) int {
	if p.gso.GSOSize == 0 {
		return 1
	}
	return p.n/int(p.gso.GSOSize) + 1
}

func (f *forwarder) borrowSeg() *segScratch {
	if f.seg == nil {
		f.seg = f.s.segPool.Get().(*segScratch)
		f.segUsed = 0
	}
	return f.seg
}

// laneOf returns this reader's lane toward b, making it on first use.
func (f *forwarder) laneOf(b batcher) lane {
	id := b.laneID()
	if id < len(f.lanes) && f.lanes[id] != nil {
		return f.lanes[id]
	}
	if id >= len(f.lanes) {
		f.lanes = append(f.lanes, make([]lane, id+1-len(f.lanes))...)
	}
	l := b.newLane()
	f.lanes[id] = l
	return l
}

// dropRetiredLanes lets go of this reader's lanes toward egresses
// detached since it last looked (a tunnel closed when no pool uses its
// encapsulation any more): each holds a sender's queues, and a mode
// switched back and forth would otherwise add one per reader each time.
// Only between batches: no lane holds packets then.
func (f *forwarder) dropRetiredLanes() {
	r := f.s.retiredLanes.Load()
	if r == nil || len(*r) == f.retiredSeen {
		return
	}
	for _, id := range (*r)[f.retiredSeen:] {
		if id < len(f.lanes) {
			f.lanes[id] = nil
		}
	}
	f.retiredSeen = len(*r)
}

// markDirty records that l holds packets to flush.
func (f *forwarder) markDirty(l lane) { f.dirty = append(f.dirty, l) }

// flushAll sends everything held (GRO, then every lane) and gives back
// the segment scratch the lanes pointed into.
func (f *forwarder) flushAll() {
	f.flushGRO()
	f.flushLanes()
	if f.seg != nil {
		f.s.segPool.Put(f.seg)
		f.seg, f.segUsed = nil, 0
	}
}

// flushLanes sends what every lane holds.
func (f *forwarder) flushLanes() {
	for i, l := range f.dirty {
		l.flush()
		f.dirty[i] = nil
	}
	f.dirty = f.dirty[:0]
}

// toL3 converts a virtio header whose offsets count from the Ethernet
// header (as a TAP writes it) into one counting from the IP header.
func toL3(h packet.VirtioNetHdr) packet.VirtioNetHdr {
	if h.CsumStart >= ethLen {
		h.CsumStart -= ethLen
	}
	if h.HdrLen >= ethLen {
		h.HdrLen -= ethLen
	}
	return h
}

// toL2 is the inverse of toL3 for a header that asks for offload work.
func toL2(h packet.VirtioNetHdr) packet.VirtioNetHdr {
	if h.Flags&packet.VirtioNetHdrFNeedsCsum != 0 {
		h.CsumStart += ethLen
	}
	if h.GSOType != packet.GSONone {
		h.HdrLen += ethLen
	}
	return h
}
