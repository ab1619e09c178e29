package packet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// groSeg describes one TCP segment for the GRO tests; build makes it with
// the slow builders, both checksums correct.
type groSeg struct {
	ip      ipv4Spec
	tcp     tcpSpec
	payload []byte
}

func (s groSeg) build() []byte { return buildTCPv4(s.ip, s.tcp, s.payload) }

// groStream returns consecutive segments of one flow with the given payload
// sizes: contiguous sequence numbers, IP IDs counting up, flags ACK.
func groStream(r *rand.Rand, seq uint32, sizes ...int) []groSeg {
	segs := make([]groSeg, len(sizes))
	for i, n := range sizes {
		segs[i] = groSeg{
			ip:      ipv4Spec{ttl: 64, id: 0x100 + uint16(i), flags: IPv4FlagDontFragment, src: podA, dst: podB},
			tcp:     tcpSpec{srcPort: 40000, dstPort: 80, seq: seq, ack: 777, flags: TCPFlagACK, window: 501},
			payload: randBytes(r, n),
		}
		seq += uint32(n)
	}
	return segs
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// groInput places pkt at Headroom in a fresh BufferSize buffer, as the
// switch's readers do.
func groInput(pkt []byte) []byte {
	b := make([]byte, BufferSize)
	copy(b[Headroom:], pkt)
	return b
}

// groOut is one packet Flush emitted, copied out.
type groOut struct {
	pkt  []byte
	hdr  VirtioNetHdr
	head *byte // &buf[off]: which input the packet was built in
}

type groSink struct{ out []groOut }

func (s *groSink) emit(buf []byte, off, n int, hdr VirtioNetHdr) {
	s.out = append(s.out, groOut{pkt: bytes.Clone(buf[off : off+n]), hdr: hdr, head: &buf[off]})
}

// groMerged is the slow twin of a merge: the packet the head's sender
// would have sent with all of the group's payload, built from scratch with
// a complete TCP checksum and the last segment's PSH.
func groMerged(segs []groSeg) []byte {
	head := segs[0]
	var payload []byte
	for _, s := range segs {
		payload = append(payload, s.payload...)
	}
	head.tcp.flags |= segs[len(segs)-1].tcp.flags & TCPFlagPSH
	return buildTCPv4(head.ip, head.tcp, payload)
}

// checkGROPacket checks one emitted packet against the segments it should
// hold: a lone one must be the original bytes with a zero header, a merged
// one the slow twin once its partial checksum is completed.
func checkGROPacket(t *testing.T, got groOut, segs []groSeg, orig []byte) {
	t.Helper()
	if len(segs) == 1 {
		if got.hdr != (VirtioNetHdr{}) {
			t.Errorf("lone packet: hdr %+v, want zero", got.hdr)
		}
		if !bytes.Equal(got.pkt, orig) {
			t.Errorf("lone packet modified at byte %d", firstDiff(got.pkt, orig))
		}
		return
	}
	head := segs[0]
	iphLen := 20 + len(head.ip.options)
	hdrLen := iphLen + 20 + len(head.tcp.options)
	wantType := uint8(GSOTCPv4)
	if head.tcp.flags&TCPFlagCWR != 0 {
		wantType |= GSOECN
	}
	wantHdr := VirtioNetHdr{
		Flags:      VirtioNetHdrFNeedsCsum,
		GSOType:    wantType,
		HdrLen:     uint16(hdrLen),
		GSOSize:    uint16(len(head.payload)),
		CsumStart:  uint16(iphLen),
		CsumOffset: 16,
	}
	if got.hdr != wantHdr {
		t.Errorf("hdr: got %+v, want %+v", got.hdr, wantHdr)
	}
	ip := IPv4(got.pkt)
	if ip.Validate() != ParseOK || ip.TotalLen() != len(got.pkt) {
		t.Fatalf("merged packet: invalid IPv4 or total length %d != %d", ip.TotalLen(), len(got.pkt))
	}
	if !ip.HeaderChecksumValid() {
		t.Error("merged packet: bad IPv4 header checksum")
	}
	// The field holds the folded pseudo-header sum (CHECKSUM_PARTIAL).
	partial := slowSum(nil, slowPseudo(ProtoTCP, head.ip.src, head.ip.dst, len(got.pkt)-iphLen))
	if c := binary.BigEndian.Uint16(got.pkt[iphLen+16:]); c != partial {
		t.Errorf("partial checksum: got %#04x, want %#04x", c, partial)
	}
	h := got.hdr
	h.GSOType = GSONone // CompleteChecksum refuses superframes; the sum is the same
	completed := bytes.Clone(got.pkt)
	if err := CompleteChecksum(completed, h); err != nil {
		t.Fatalf("CompleteChecksum: %v", err)
	}
	want := groMerged(segs)
	if !bytes.Equal(completed, want) {
		t.Errorf("merged packet differs from the slow twin at byte %d (len %d, want %d)", firstDiff(completed, want), len(completed), len(want))
	}
}

func TestGRO(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	four := func() []groSeg { return groStream(r, 1_000_000, 1000, 1000, 1000, 1000) }
	with := func(segs []groSeg, from int, f func(*groSeg)) []groSeg {
		for i := from; i < len(segs); i++ {
			f(&segs[i])
		}
		return segs
	}
	at := func(segs []groSeg, i int, f func(*groSeg)) []groSeg {
		f(&segs[i])
		return segs
	}
	pick := func(segs []groSeg, idx ...int) []groSeg {
		var out []groSeg
		for _, i := range idx {
			out = append(out, segs[i])
		}
		return out
	}
	flags := func(f uint8) func(*groSeg) { return func(s *groSeg) { s.tcp.flags = f } }
	otherTS := append([]byte(nil), tsOption...)
	otherTS[7]++
	ipOpts := []byte{0x94, 4, 0, 0} // router alert

	tests := []struct {
		name    string
		segs    []groSeg
		corrupt []int   // flip a payload bit in these inputs after building
		want    [][]int // input indexes of each emitted packet, in order
	}{
		{"one segment", groStream(r, 1, 1000), nil, [][]int{{0}}},
		{"in order", four(), nil, [][]int{{0, 1, 2, 3}}},
		{"seq wraps", groStream(r, 0xffffffff-1500, 1000, 1000, 1000), nil, [][]int{{0, 1, 2}}},
		{"psh on last", at(four(), 3, flags(TCPFlagACK|TCPFlagPSH)), nil, [][]int{{0, 1, 2, 3}}},
		{"psh in middle", at(four(), 1, flags(TCPFlagACK|TCPFlagPSH)), nil, [][]int{{0, 1}, {2, 3}}},
		{"psh on head", at(four(), 0, flags(TCPFlagACK|TCPFlagPSH)), nil, [][]int{{0}, {1, 2, 3}}},
		{"short last", groStream(r, 5, 1000, 1000, 1000, 10), nil, [][]int{{0, 1, 2, 3}}},
		{"short in middle", groStream(r, 5, 1000, 500, 1000, 1000), nil, [][]int{{0, 1}, {2, 3}}},
		{"longer after short head", groStream(r, 5, 500, 1000, 1000), nil, [][]int{{0}, {1, 2}}},
		{"gap", pick(four(), 0, 1, 3), nil, [][]int{{0, 1}, {2}}},
		{"out of order", pick(four(), 0, 2, 1, 3), nil, [][]int{{0}, {1}, {2}, {3}}},
		{"duplicate", pick(four(), 0, 1, 1, 2), nil, [][]int{{0, 1}, {2, 3}}},
		{"ack differs", with(four(), 2, func(s *groSeg) { s.tcp.ack += 1448 }), nil, [][]int{{0, 1}, {2, 3}}},
		{"window differs", with(four(), 2, func(s *groSeg) { s.tcp.window++ }), nil, [][]int{{0, 1}, {2, 3}}},
		{"syn", at(four(), 0, flags(TCPFlagACK|TCPFlagSYN)), nil, [][]int{{0}, {1, 2, 3}}},
		{"fin", at(four(), 2, flags(TCPFlagACK|TCPFlagFIN)), nil, [][]int{{0, 1}, {2}, {3}}},
		{"rst", at(four(), 2, flags(TCPFlagACK|TCPFlagRST)), nil, [][]int{{0, 1}, {2}, {3}}},
		{"urg", at(four(), 1, flags(TCPFlagACK|TCPFlagURG)), nil, [][]int{{0}, {1}, {2, 3}}},
		{"no ack", at(four(), 1, flags(0)), nil, [][]int{{0}, {1}, {2, 3}}},
		{"ece on all", with(four(), 0, flags(TCPFlagACK|TCPFlagECE)), nil, [][]int{{0, 1, 2, 3}}},
		{"ece differs", with(four(), 2, flags(TCPFlagACK|TCPFlagECE)), nil, [][]int{{0, 1}, {2, 3}}},
		{"cwr on head", at(four(), 0, flags(TCPFlagACK|TCPFlagCWR|TCPFlagECE)), nil, [][]int{{0}, {1, 2, 3}}},
		{"cwr head ece all", at(with(four(), 0, flags(TCPFlagACK|TCPFlagECE)), 0, flags(TCPFlagACK|TCPFlagCWR|TCPFlagECE)), nil, [][]int{{0, 1, 2, 3}}},
		{"cwr in middle", at(four(), 2, flags(TCPFlagACK|TCPFlagCWR)), nil, [][]int{{0, 1}, {2, 3}}},
		{"tos differs", with(four(), 2, func(s *groSeg) { s.ip.tos = 0x02 }), nil, [][]int{{0, 1}, {2, 3}}},
		{"ttl differs", with(four(), 2, func(s *groSeg) { s.ip.ttl = 63 }), nil, [][]int{{0, 1}, {2, 3}}},
		{"df differs", with(four(), 2, func(s *groSeg) { s.ip.flags = 0 }), nil, [][]int{{0, 1}, {2, 3}}},
		{"id ignored", with(four(), 0, func(s *groSeg) { s.ip.id = uint16(r.Uint32()) }), nil, [][]int{{0, 1, 2, 3}}},
		{"options equal", with(four(), 0, func(s *groSeg) { s.tcp.options = tsOption }), nil, [][]int{{0, 1, 2, 3}}},
		{"options differ", with(with(four(), 0, func(s *groSeg) { s.tcp.options = tsOption }), 2, func(s *groSeg) { s.tcp.options = otherTS }), nil, [][]int{{0, 1}, {2, 3}}},
		{"options length differs", with(four(), 2, func(s *groSeg) { s.tcp.options = tsOption }), nil, [][]int{{0, 1}, {2, 3}}},
		{"ip options", with(four(), 0, func(s *groSeg) { s.ip.options = ipOpts }), nil, [][]int{{0}, {1}, {2}, {3}}},
		{"fragment", at(four(), 1, func(s *groSeg) { s.ip.flags |= IPv4FlagMoreFragments }), nil, [][]int{{0}, {1}, {2, 3}}},
		{"all first fragments", with(four(), 0, func(s *groSeg) { s.ip.flags |= IPv4FlagMoreFragments }), nil, [][]int{{0}, {1}, {2}, {3}}},
		{"pure ack between", append(append(four()[:2:2], groStream(r, 1_002_000, 0)...), groStream(r, 1_002_000, 1000, 1000)...), nil, [][]int{{0, 1}, {2}, {3, 4}}},
		{"bad checksum head", four(), []int{0}, [][]int{{0}, {1, 2, 3}}},
		{"bad checksum middle", four(), []int{2}, [][]int{{0, 1}, {2}, {3}}},
		{"bad checksum last", four(), []int{3}, [][]int{{0, 1, 2}, {3}}},
		// 52 header bytes + 45*1448 = 65212 fits in 65535, a 46th does not.
		{"64 KiB", with(groStream(r, 9, repeat(47, 1448)...), 0, func(s *groSeg) { s.tcp.options = tsOption }), nil, [][]int{seq(0, 45), {45, 46}}},
		{"64 segments", groStream(r, 9, repeat(70, 100)...), nil, [][]int{seq(0, 64), seq(64, 70)}},
		{"two flows interleaved", interleave(groStream(r, 1, 1000, 1000, 1000), with(groStream(r, 2, 900, 900, 900), 0, func(s *groSeg) { s.tcp.srcPort = 40001 })),
			nil, [][]int{{0, 2, 4}, {1, 3, 5}}},
		{"reverse direction", interleave(groStream(r, 1, 1000, 1000), with(groStream(r, 1001, 1000, 1000), 0, func(s *groSeg) { s.ip.src, s.ip.dst = s.ip.dst, s.ip.src })),
			nil, [][]int{{0, 2}, {1, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGRO(len(tt.segs))
			var sink groSink
			bufs := make([][]byte, len(tt.segs))
			orig := make([][]byte, len(tt.segs))
			for i, s := range tt.segs {
				orig[i] = s.build()
				for _, c := range tt.corrupt {
					if c == i {
						orig[i][len(orig[i])-1] ^= 0x40
					}
				}
				bufs[i] = groInput(orig[i])
				if !g.Add(bufs[i], Headroom, len(orig[i])) {
					t.Fatalf("Add(input %d) = false, want true", i)
				}
			}
			g.Flush(sink.emit)
			if len(sink.out) != len(tt.want) {
				t.Fatalf("got %d packets, want %d", len(sink.out), len(tt.want))
			}
			for j, group := range tt.want {
				got := sink.out[j]
				if got.head != &bufs[group[0]][Headroom] {
					t.Errorf("packet %d was not built in input %d's buffer", j, group[0])
				}
				var segs []groSeg
				for _, i := range group {
					segs = append(segs, tt.segs[i])
				}
				t.Run(fmt.Sprint("packet", j), func(t *testing.T) { checkGROPacket(t, got, segs, orig[group[0]]) })
			}
			sink.out = nil
			g.Flush(sink.emit)
			if len(sink.out) != 0 {
				t.Errorf("second Flush emitted %d packets, want 0", len(sink.out))
			}
		})
	}
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// interleave alternates the segments of a and b, which have equal length.
func interleave(a, b []groSeg) []groSeg {
	var out []groSeg
	for i := range a {
		out = append(out, a[i], b[i])
	}
	return out
}

func TestGROPassThrough(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	base := ipv4Spec{ttl: 64, src: podA, dst: podB}
	tcp := groStream(r, 1, 1000, 1000)
	badTotal := tcp[0].build()
	binary.BigEndian.PutUint16(badTotal[2:], uint16(len(badTotal)+1))
	tests := []struct {
		name   string
		pkt    []byte
		off, n int // n < 0: len(pkt)
	}{
		{"udp", buildUDPv4(base, 1, 2, randBytes(r, 1000)), Headroom, -1},
		{"icmp", buildICMPv4(base, ICMPEcho, 0, 1, randBytes(r, 56)), Headroom, -1},
		{"ipip", buildIPv4(ipv4Spec{ttl: 64, proto: ProtoIPIP, src: podA, dst: podB}, tcp[0].build()), Headroom, -1},
		{"empty", nil, Headroom, 0},
		{"not ipv4", append([]byte{0x60}, make([]byte, 59)...), Headroom, -1},
		{"total length beyond n", badTotal, Headroom, -1},
		{"n beyond buffer", tcp[0].build(), Headroom, BufferSize},
		{"negative off", tcp[0].build(), -1, -1},
		{"negative n", tcp[0].build(), Headroom, -5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGRO(4)
			var sink groSink
			// A TCP flow around the refused packet still merges.
			first, second := tcp[0].build(), tcp[1].build()
			if !g.Add(groInput(first), Headroom, len(first)) {
				t.Fatal("Add(tcp) = false")
			}
			buf := make([]byte, BufferSize)
			off := max(tt.off, 0)
			copy(buf[off:], tt.pkt)
			n := tt.n
			if n == -1 {
				n = len(tt.pkt)
			}
			if g.Add(buf, tt.off, n) {
				t.Error("Add = true, want false")
			}
			if !g.Add(groInput(second), Headroom, len(second)) {
				t.Fatal("Add(tcp) = false")
			}
			g.Flush(sink.emit)
			if len(sink.out) != 1 || sink.out[0].hdr.GSOType != GSOTCPv4 {
				t.Fatalf("got %d packets (%+v), want 1 merged", len(sink.out), sink.out)
			}
		})
	}
}

// TestGROTakesAllTCP checks the ordering contract: TCP packets that cannot
// merge are still taken and come out of Flush in arrival order.
func TestGROTakesAllTCP(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	s := groStream(r, 1, 1000, 0, 0)
	s[1].tcp.flags = TCPFlagSYN
	s[2].tcp.flags = TCPFlagACK | TCPFlagFIN
	cut := s[0].build()[:30] // TCP header cut short: no flow key
	binary.BigEndian.PutUint16(cut[2:], 30)
	binary.BigEndian.PutUint16(cut[10:], 0)
	binary.BigEndian.PutUint16(cut[10:], slowChecksum(cut[:20], 0))
	pkts := [][]byte{s[0].build(), s[1].build(), cut, s[2].build()}
	g := NewGRO(len(pkts))
	var sink groSink
	for i, p := range pkts {
		if !g.Add(groInput(p), Headroom, len(p)) {
			t.Fatalf("Add(%d) = false, want true", i)
		}
	}
	g.Flush(sink.emit)
	if len(sink.out) != len(pkts) {
		t.Fatalf("got %d packets, want %d", len(sink.out), len(pkts))
	}
	for i, p := range pkts {
		if !bytes.Equal(sink.out[i].pkt, p) || sink.out[i].hdr != (VirtioNetHdr{}) {
			t.Errorf("packet %d: not the input, untouched", i)
		}
	}
}

func TestGROFull(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	a := groStream(r, 1, 1000, 1000, 1000)
	b := with1(groStream(r, 1, 1000), func(s *groSeg) { s.tcp.srcPort = 1 })
	g := NewGRO(1)
	var sink groSink
	add := func(s groSeg) bool { p := s.build(); return g.Add(groInput(p), Headroom, len(p)) }
	if !add(a[0]) {
		t.Fatal("Add(a0) = false")
	}
	if add(b[0]) {
		t.Error("Add(b0) on a full GRO = true, want false")
	}
	// Merging needs no new entry, so a full GRO still merges.
	if !add(a[1]) || !add(a[2]) {
		t.Error("Add(a1, a2) on a full GRO = false, want true")
	}
	g.Flush(sink.emit)
	if len(sink.out) != 1 || sink.out[0].hdr.GSOType != GSOTCPv4 {
		t.Fatalf("got %d packets, want 1 merged", len(sink.out))
	}
	checkGROPacket(t, sink.out[0], a, nil)

	// A refused segment of a pending flow closes the flow's packet: what
	// comes after it must not overtake it.
	c := groStream(r, 1, 1000, 1000, 1000)
	if !add(c[0]) {
		t.Fatal("Add(c0) = false")
	}
	if add(c[2]) {
		t.Error("Add(c2) with a gap on a full GRO = true, want false")
	}
	if add(c[1]) {
		t.Error("Add(c1) after a refused segment = true, want false")
	}
}

func with1(segs []groSeg, f func(*groSeg)) []groSeg {
	for i := range segs {
		f(&segs[i])
	}
	return segs
}

// TestGROBuffers checks what GRO does with the caller's buffers: no merge
// past a buffer's capacity, padding after the total length, and no
// references kept after Flush.
func TestGROBuffers(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	segs := groStream(r, 1, 1000, 1000, 1000)
	pkts := make([][]byte, len(segs))
	for i, s := range segs {
		pkts[i] = s.build()
	}

	t.Run("tight head buffer", func(t *testing.T) {
		g := NewGRO(4)
		var sink groSink
		// The head's buffer ends with the packet: nothing can be appended.
		tight := make([]byte, Headroom+len(pkts[0]), Headroom+len(pkts[0]))
		copy(tight[Headroom:], pkts[0])
		g.Add(tight, Headroom, len(pkts[0]))
		g.Add(groInput(pkts[1]), Headroom, len(pkts[1]))
		g.Add(groInput(pkts[2]), Headroom, len(pkts[2]))
		g.Flush(sink.emit)
		if len(sink.out) != 2 || sink.out[0].hdr.GSOType != GSONone || sink.out[1].hdr.GSOType != GSOTCPv4 {
			t.Fatalf("got %d packets, want a lone head and a merged pair", len(sink.out))
		}
		checkGROPacket(t, sink.out[0], segs[:1], pkts[0])
		checkGROPacket(t, sink.out[1], segs[1:], nil)
	})

	t.Run("spare capacity beyond len", func(t *testing.T) {
		g := NewGRO(4)
		var sink groSink
		// len(buf) ends with the packet but cap does not: GRO may use it.
		b := groInput(pkts[0])[:Headroom+len(pkts[0])]
		g.Add(b, Headroom, len(pkts[0]))
		g.Add(groInput(pkts[1]), Headroom, len(pkts[1]))
		g.Flush(sink.emit)
		if len(sink.out) != 1 {
			t.Fatalf("got %d packets, want 1", len(sink.out))
		}
		checkGROPacket(t, sink.out[0], segs[:2], nil)
	})

	t.Run("padding", func(t *testing.T) {
		g := NewGRO(4)
		var sink groSink
		// Padding after the total length (a short frame padded to the
		// Ethernet minimum) is not payload: a lone packet keeps its n, a
		// merged one is cut to its total length.
		pad := groStream(r, 1, 6, 6)
		p0, p1 := pad[0].build(), pad[1].build()
		lone := groStream(r, 1, 6)
		lone[0].tcp.srcPort = 9
		p2 := lone[0].build()
		g.Add(groInput(p0), Headroom, len(p0)+6)
		g.Add(groInput(p2), Headroom, len(p2)+6)
		g.Add(groInput(p1), Headroom, len(p1)+6)
		g.Flush(sink.emit)
		if len(sink.out) != 2 {
			t.Fatalf("got %d packets, want 2", len(sink.out))
		}
		checkGROPacket(t, sink.out[0], pad, nil)
		if want := append(p2, make([]byte, 6)...); !bytes.Equal(sink.out[1].pkt, want) {
			t.Errorf("lone padded packet: got %x, want %x", sink.out[1].pkt, want)
		}
	})

	t.Run("64 KiB in a larger buffer", func(t *testing.T) {
		// The buffer has room for more, so only the IPv4 total length
		// limit stops the merge: 52 header bytes + 45*1448 = 65212, and a
		// 46th segment of 323 bytes makes exactly 65535.
		for _, tc := range []struct {
			last int
			want [][]int
		}{{323, [][]int{seq(0, 46)}}, {324, [][]int{seq(0, 45), {45}}}} {
			segs := with1(groStream(r, 7, append(repeat(45, 1448), tc.last)...), func(s *groSeg) { s.tcp.options = tsOption })
			g := NewGRO(len(segs))
			var sink groSink
			var orig [][]byte
			for _, s := range segs {
				p := s.build()
				orig = append(orig, p)
				buf := make([]byte, 2*BufferSize)
				copy(buf[Headroom:], p)
				g.Add(buf, Headroom, len(p))
			}
			g.Flush(sink.emit)
			if len(sink.out) != len(tc.want) {
				t.Fatalf("last segment %d bytes: got %d packets, want %d", tc.last, len(sink.out), len(tc.want))
			}
			for j, group := range tc.want {
				checkGROPacket(t, sink.out[j], segs[group[0]:group[len(group)-1]+1], orig[group[0]])
			}
		}
	})

	t.Run("no references after flush", func(t *testing.T) {
		g := NewGRO(4)
		for _, p := range pkts {
			g.Add(groInput(p), Headroom, len(p))
		}
		g.Add(groInput(buildUDPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, 1, 2, nil)), Headroom, 28)
		g.Flush(func([]byte, int, int, VirtioNetHdr) {})
		for i, e := range g.entries[:cap(g.entries)] {
			if e.buf != nil {
				t.Errorf("entry %d still holds a buffer", i)
			}
		}
		for i, s := range g.slots {
			if s != 0 {
				t.Errorf("slot %d not cleared", i)
			}
		}
	})
}

// TestGRORoundTrip is the property test: superframes cut by SegmentTCPv4
// and fed to GRO, interleaved across flows, come back as the same
// superframes.
func TestGRORoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	iters := 300
	if testing.Short() {
		iters = 30
	}
	for iter := range iters {
		nflows := 1 + r.IntN(3)
		type flow struct {
			sf    superframe
			pkt   []byte
			hdr   VirtioNetHdr
			segs  [][]byte
			sizes []int
		}
		flows := make([]flow, nflows)
		total := 0
		for f := range flows {
			var opts []byte
			if r.IntN(2) == 0 {
				opts = tsOption
			}
			hdrLen := 40 + len(opts)
			mss := 1 + r.IntN(1460)
			if r.IntN(2) == 0 {
				mss = 1448
			}
			maxPayload := min(GROMaxSegments*mss, groMaxLen-hdrLen)
			if maxPayload <= mss {
				mss = maxPayload / 2
			}
			flags := uint8(TCPFlagACK)
			gsoType := uint8(GSOTCPv4)
			if r.IntN(2) == 0 {
				flags |= TCPFlagPSH
			}
			if r.IntN(4) == 0 {
				flags |= TCPFlagECE
			}
			if r.IntN(4) == 0 {
				flags |= TCPFlagCWR
				gsoType |= GSOECN
			}
			sf := superframe{
				ip: ipv4Spec{tos: uint8(r.IntN(256)), id: uint16(r.Uint32()), flags: uint8(r.IntN(2)) * IPv4FlagDontFragment,
					ttl: uint8(1 + r.IntN(255)), src: podA, dst: [4]byte{10, 0, 0, byte(f)}},
				tcp: tcpSpec{srcPort: uint16(r.Uint32()), dstPort: 443, seq: r.Uint32(), ack: r.Uint32(), flags: flags,
					window: uint16(r.Uint32()), options: opts},
				payload: randBytes(r, mss+1+r.IntN(maxPayload-mss)),
				mss:     mss,
				gsoType: gsoType,
			}
			pkt, hdr := sf.build()
			out, sizes := makeOut(GROMaxSegments, BufferSize)
			n, err := SegmentTCPv4(pkt, hdr, out, sizes, Headroom)
			if err != nil {
				t.Fatalf("iter %d: SegmentTCPv4: %v", iter, err)
			}
			flows[f] = flow{sf: sf, pkt: pkt, hdr: hdr, segs: out[:n], sizes: sizes[:n]}
			total += n
		}
		g := NewGRO(total)
		var sink groSink
		next := make([]int, nflows)
		var firstSeen []int // flow indexes in order of their first segment
		for range total {
			f := r.IntN(nflows)
			for next[f] == len(flows[f].segs) {
				f = (f + 1) % nflows
			}
			if next[f] == 0 {
				firstSeen = append(firstSeen, f)
			}
			fl := &flows[f]
			if !g.Add(fl.segs[next[f]], Headroom, fl.sizes[next[f]]) {
				t.Fatalf("iter %d: Add = false", iter)
			}
			next[f]++
		}
		g.Flush(sink.emit)
		if len(sink.out) != nflows {
			t.Fatalf("iter %d: got %d packets from %d flows, want one per flow", iter, len(sink.out), nflows)
		}
		for j, f := range firstSeen {
			got, fl := sink.out[j], flows[f]
			wantHdr := fl.hdr
			if got.hdr != wantHdr {
				t.Errorf("iter %d flow %d: hdr got %+v, want %+v", iter, f, got.hdr, wantHdr)
			}
			if got.hdr.GSOSize != uint16(fl.sf.mss) {
				t.Errorf("iter %d flow %d: GSOSize %d, want MSS %d", iter, f, got.hdr.GSOSize, fl.sf.mss)
			}
			ip, want := IPv4(got.pkt), IPv4(fl.pkt)
			if len(ip) != len(want) || ip.Validate() != ParseOK {
				t.Fatalf("iter %d flow %d: length %d, want %d", iter, f, len(ip), len(want))
			}
			if ip.TotalLen() != want.TotalLen() || ip.TOS() != want.TOS() || ip.TTL() != want.TTL() ||
				ip.Flags() != want.Flags() || ip.Src() != want.Src() || ip.Dst() != want.Dst() || ip.Protocol() != ProtoTCP {
				t.Errorf("iter %d flow %d: IPv4 header fields differ", iter, f)
			}
			if ip.ID() != want.ID() {
				// The head segment keeps the superframe's ID.
				t.Errorf("iter %d flow %d: ID %#x, want %#x", iter, f, ip.ID(), want.ID())
			}
			if !ip.HeaderChecksumValid() {
				t.Errorf("iter %d flow %d: bad IPv4 header checksum", iter, f)
			}
			// Everything else, the TCP header with its partial checksum
			// included, is byte for byte the superframe's.
			masked := func(b []byte) []byte {
				b = bytes.Clone(b)
				clear(b[ipv4ID : ipv4ID+2])
				clear(b[ipv4Checksum : ipv4Checksum+2])
				return b
			}
			if g, w := masked(ip), masked(want); !bytes.Equal(g, w) {
				t.Errorf("iter %d flow %d: differs from the superframe at byte %d", iter, f, firstDiff(g, w))
			}
		}
	}
}

// groFuzzPackets splits fuzz data into packets: each record is a control
// byte, a 16-bit length and that many bytes. Control bit 0 asks for a
// correct TCP checksum, bit 1 for a buffer with no spare capacity, and bits
// 2-3 for that many padding bytes after the packet.
func groFuzzPackets(data []byte) (pkts [][]byte, ctl []byte) {
	for len(data) >= 3 && len(pkts) < 64 {
		c, n := data[0], int(binary.BigEndian.Uint16(data[1:]))
		data = data[3:]
		n = min(n, len(data))
		pkts = append(pkts, data[:n])
		ctl = append(ctl, c)
		data = data[n:]
	}
	return pkts, ctl
}

func groFuzzRecord(ctl byte, pkt []byte) []byte {
	return append([]byte{ctl, byte(len(pkt) >> 8), byte(len(pkt))}, pkt...)
}

// groPayloadLen is the TCP or UDP payload length of a packet as the fuzz
// target counts it: 0 unless it is IPv4/TCP or UDP with a complete header.
func groPayloadLen(b []byte) int {
	ip := IPv4(b)
	if ip.Validate() != ParseOK || ip.FragmentOffset() != 0 {
		return 0
	}
	ip = ip[:ip.TotalLen()]
	p := ip.Payload()
	if ip.Protocol() == ProtoUDP && len(p) >= UDPHeaderLen {
		return len(p) - UDPHeaderLen
	}
	if ip.Protocol() != ProtoTCP {
		return 0
	}
	if len(p) < TCPMinHeaderLen {
		return 0
	}
	if d := TCP(p).DataOffset(); d >= TCPMinHeaderLen && d <= len(p) {
		return len(p) - d
	}
	return 0
}

func FuzzGRO(f *testing.F) {
	r := rand.New(rand.NewPCG(33, 34))
	seed := func(ctl byte, segs ...[]groSeg) {
		var data []byte
		for _, ss := range segs {
			for _, s := range ss {
				data = append(data, groFuzzRecord(ctl, s.build())...)
			}
		}
		f.Add(data)
	}
	seed(1, groStream(r, 1, 100, 100, 100, 50))
	seed(0, groStream(r, 1, 100, 100, 100, 50))
	seed(3, groStream(r, 1, 100, 100))
	seed(1|8, groStream(r, 1, 6, 6, 6))
	seed(1, interleave(groStream(r, 1, 30, 30), with1(groStream(r, 5, 30, 30), func(s *groSeg) { s.tcp.srcPort = 7 })))
	seed(1, with1(groStream(r, 1, 40, 40, 40), func(s *groSeg) { s.tcp.options = tsOption; s.tcp.flags |= TCPFlagECE }))
	seed(1, groStream(r, 1, repeat(70, 10)...))
	seed(1, groStream(r, 1, repeat(3, 30000)...))
	f.Add(groFuzzRecord(1, buildUDPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, 1, 2, []byte("x"))))
	var udp []byte
	for _, p := range udpFlow(r, 30, 30, 30, 10) {
		udp = append(udp, groFuzzRecord(0x11, p)...)
	}
	f.Add(udp)
	udp = nil
	for _, p := range udpFlow(r, 30, 30, 30) {
		udp = append(udp, groFuzzRecord(0x31, p)...)
	}
	f.Add(udp)

	f.Fuzz(func(t *testing.T, data []byte) {
		pkts, ctl := groFuzzPackets(data)
		g := NewGRO(16)
		orig := make([][]byte, len(pkts))
		heads := make(map[*byte]int)
		taken := make([]bool, len(pkts))
		partial := make([]bool, len(pkts))
		payloadIn := 0
		for i, p := range pkts {
			n := len(p) + int(ctl[i]>>2&3)
			size := BufferSize
			if ctl[i]&2 != 0 {
				size = Headroom + n
			}
			buf := make([]byte, size)
			copy(buf[Headroom:], p)
			// Every packet gets a valid IPv4 header checksum, so that every
			// emitted one must have one too. Most mutations break the
			// transport checksum, which stops all merging; repair it on
			// request (or make it partial) so the merge paths get
			// exercised. Bit 0x10 lets UDP merge, 0x20 marks the packet
			// partial.
			opts := GROOpts{UDP: ctl[i]&0x10 != 0, Partial: ctl[i]&0x20 != 0}
			ip := IPv4(buf[Headroom : Headroom+n])
			valid := ip.Validate() == ParseOK
			isTCP := valid && ip.Protocol() == ProtoTCP
			isUDP := valid && ip.Protocol() == ProtoUDP
			if !isTCP && !isUDP {
				opts.Partial = false
			}
			if valid {
				ip.ComputeChecksum()
				ip = ip[:ip.TotalLen()]
				if off, minLen, ok := transportChecksumOffset(ip.Protocol()); ok && (isTCP || isUDP) && !ip.IsFragment() && len(ip.Payload()) >= minLen {
					pl := ip.Payload()
					switch {
					case opts.Partial:
						binary.BigEndian.PutUint16(pl[off:], Fold(PseudoHeaderSum(ip.Protocol(), ip.SrcBytes(), ip.DstBytes(), uint16(len(pl)))))
					case ctl[i]&1 != 0:
						binary.BigEndian.PutUint16(pl[off:], TransportChecksum(ip))
					}
				}
			}
			orig[i] = bytes.Clone(buf[Headroom : Headroom+n])
			partial[i] = opts.Partial
			full := len(g.entries) == cap(g.entries)
			if g.AddWith(buf, Headroom, n, opts) {
				taken[i] = true
				heads[&buf[Headroom]] = i
				payloadIn += groPayloadLen(orig[i])
			} else if (isTCP || isUDP && opts.UDP) && !full {
				t.Fatalf("AddWith(%d) = false for an IPv4/TCP or UDP packet with room left", i)
			}
		}
		payloadOut, last, nOut := 0, -1, 0
		g.Flush(func(buf []byte, off, n int, hdr VirtioNetHdr) {
			nOut++
			pkt := buf[off : off+n]
			i, ok := heads[&buf[off]]
			if !ok || !taken[i] {
				t.Fatalf("emitted a packet that is not in a taken input's buffer")
			}
			if i <= last {
				t.Fatalf("input %d emitted after input %d", i, last)
			}
			last = i
			payloadOut += groPayloadLen(pkt)
			ip := IPv4(pkt)
			if ip.Validate() != ParseOK || !ip.HeaderChecksumValid() {
				t.Fatalf("emitted packet %d: invalid IPv4 header or header checksum", i)
			}
			if hdr.GSOType == GSONone {
				if !bytes.Equal(pkt, orig[i]) {
					t.Fatalf("lone packet %d modified", i)
				}
				if (hdr != VirtioNetHdr{}) != partial[i] || partial[i] && int(hdr.CsumStart) != ip.HeaderLen() {
					t.Fatalf("lone packet %d (partial %v): hdr %+v", i, partial[i], hdr)
				}
				return
			}
			if ip.Protocol() == ProtoUDP && int(UDP(ip.Payload()).Length()) != len(ip.Payload()) {
				t.Fatalf("merged datagram %d: UDP length %d for %d bytes", i, UDP(ip.Payload()).Length(), len(ip.Payload()))
			}
			if ip.TotalLen() != n || hdr.GSOSize == 0 || int(hdr.CsumStart) != ip.HeaderLen() {
				t.Fatalf("merged packet %d: total length %d, n %d, hdr %+v", i, ip.TotalLen(), n, hdr)
			}
			if segs := (groPayloadLen(pkt) + int(hdr.GSOSize) - 1) / int(hdr.GSOSize); segs < 2 || segs > GROMaxSegments {
				t.Fatalf("merged packet %d: %d segments", i, segs)
			}
			h := hdr
			h.GSOType = GSONone
			c := bytes.Clone(pkt)
			if err := CompleteChecksum(c, h); err != nil || !TransportChecksumValid(IPv4(c)) {
				t.Fatalf("merged packet %d: completed transport checksum invalid (%v)", i, err)
			}
		})
		if payloadOut != payloadIn {
			t.Fatalf("payload bytes: got %d out, want %d in", payloadOut, payloadIn)
		}
		if nOut > len(heads) {
			t.Fatalf("%d packets out from %d taken", nOut, len(heads))
		}
	})
}

// groBench holds a burst of segments in their buffers and the head's
// original bytes, which each Flush rewrites and each round restores.
type groBench struct {
	bufs  [][]byte
	sizes []int
	head  []byte
	g     *GRO
	out   int
	emit  func([]byte, int, int, VirtioNetHdr)
}

func newGROBench(nseg, mss int) *groBench {
	r := rand.New(rand.NewPCG(35, 36))
	segs := with1(groStream(r, 1, repeat(nseg, mss)...), func(s *groSeg) { s.tcp.options = tsOption })
	b := &groBench{g: NewGRO(nseg)}
	for _, s := range segs {
		p := s.build()
		b.bufs = append(b.bufs, groInput(p))
		b.sizes = append(b.sizes, len(p))
	}
	b.head = bytes.Clone(b.bufs[0][Headroom : Headroom+b.sizes[0]])
	b.emit = b.count
	return b
}

func (b *groBench) count([]byte, int, int, VirtioNetHdr) { b.out++ }

func (b *groBench) round() {
	copy(b.bufs[0][Headroom:], b.head)
	for i, buf := range b.bufs {
		b.g.Add(buf, Headroom, b.sizes[i])
	}
	b.g.Flush(b.emit)
}

func TestGROAllocs(t *testing.T) {
	b := newGROBench(45, 1448)
	b.round()
	if b.out != 1 {
		t.Fatalf("45 segments: got %d packets, want 1", b.out)
	}
	if n := testing.AllocsPerRun(100, b.round); n != 0 {
		t.Errorf("Add+Flush: got %v allocs per run, want 0", n)
	}
}

func BenchmarkGRO(b *testing.B) {
	for _, nseg := range []int{2, 8, 45} {
		b.Run(fmt.Sprintf("segs=%d", nseg), func(b *testing.B) {
			gb := newGROBench(nseg, 1448)
			b.ReportAllocs()
			b.SetBytes(int64(nseg * 1448))
			rounds := 0
			for b.Loop() {
				gb.round()
				rounds++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(rounds*nseg), "ns/segment")
			b.ReportMetric(float64(gb.out)/float64(rounds), "packets/op")
		})
	}
}

// TestKernelSuperpacket: a merged packet as GRO leaves it (the kernel's
// does the same) is recognised with the header GRO would give it when mtu
// fits the segments exactly; the same bytes with a complete checksum, a
// fragment, UDP, or an mtu with no room past the headers are not.
func TestKernelSuperpacket(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	segs := groStream(r, 1000, repeat(4, 1400)...)
	g := NewGRO(8)
	var sink groSink
	bufs := make([][]byte, len(segs))
	for i, s := range segs {
		bufs[i] = groInput(s.build())
		if !g.Add(bufs[i], Headroom, len(s.build())) {
			t.Fatalf("GRO refused segment %d", i)
		}
	}
	g.Flush(sink.emit)
	if len(sink.out) != 1 {
		t.Fatalf("GRO emitted %d packets, want 1 merged", len(sink.out))
	}
	merged, want := sink.out[0].pkt, sink.out[0].hdr
	mtu := int(want.HdrLen) + int(want.GSOSize) // the segments filled the path

	if h, ok := KernelSuperpacket(IPv4(merged), mtu); !ok || h != want {
		t.Errorf("merged packet: got (%+v, %v), want (%+v, true)", h, ok, want)
	}
	complete := bytes.Clone(merged)
	csumOnly := want
	csumOnly.GSOType, csumOnly.GSOSize = GSONone, 0
	if err := CompleteChecksum(complete, csumOnly); err != nil {
		t.Fatal(err)
	}
	fragment := bytes.Clone(merged)
	IPv4(fragment)[6] |= 0x20 // more fragments
	udp := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, make([]byte, 3000))
	for _, tt := range []struct {
		name string
		pkt  []byte
		mtu  int
	}{
		{"complete checksum (reassembled)", complete, mtu},
		{"fragment", fragment, mtu},
		{"UDP", udp, mtu},
		{"mtu no larger than the headers", merged, int(want.HdrLen)},
	} {
		if h, ok := KernelSuperpacket(IPv4(tt.pkt), tt.mtu); ok {
			t.Errorf("%s: recognised as a superpacket (%+v)", tt.name, h)
		}
	}
}

// AddVerified trusts the caller's check: a segment whose checksum is
// wrong stays lone through Add, and merges through AddVerified (the
// switch uses it only for what VXLAN's decap has just verified).
func TestGROAddVerifiedTrusts(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	segs := groStream(r, 1, 100, 100)
	for _, tt := range []struct {
		name   string
		add    func(g *GRO, b []byte, n int) bool
		merged bool
	}{
		{"Add", func(g *GRO, b []byte, n int) bool { return g.Add(b, Headroom, n) }, false},
		{"AddVerified", func(g *GRO, b []byte, n int) bool { return g.AddVerified(b, Headroom, n) }, true},
	} {
		g := NewGRO(8)
		first, second := segs[0].build(), segs[1].build()
		second[20+16] ^= 0xff // corrupt the TCP checksum
		tt.add(g, groInput(first), len(first))
		tt.add(g, groInput(second), len(second))
		var sink groSink
		g.Flush(sink.emit)
		if got := len(sink.out) == 1; got != tt.merged {
			t.Errorf("%s: %d packets out, merged %v; want merged %v", tt.name, len(sink.out), got, tt.merged)
		}
	}
}

// udpFlow builds datagrams of one UDP flow with the given payload sizes,
// both checksums correct.
func udpFlow(r *rand.Rand, sizes ...int) [][]byte {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		out[i] = buildUDPv4(ipv4Spec{ttl: 64, id: 0x200 + uint16(i), flags: IPv4FlagDontFragment, src: podA, dst: podB},
			5353, 53, randBytes(r, n))
	}
	return out
}

// asPartial turns a datagram's checksum into the partial one a local
// kernel leaves for the device (the pseudo-header sum).
func asPartial(p []byte) []byte {
	ip := IPv4(p)
	UDP(ip.Payload()).SetChecksum(Fold(PseudoHeaderSum(ProtoUDP, ip.SrcBytes(), ip.DstBytes(), uint16(len(ip.Payload())))))
	return p
}

// TestGROUDP: datagrams of one flow merge into a GSO_UDP_L4 superframe
// under udp_gro_receive_segment's rules, and only with GROOpts.UDP.
func TestGROUDP(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	edit := func(p []byte, f func(ip IPv4)) []byte { f(IPv4(p)); return p }
	tests := []struct {
		name  string
		pkts  [][]byte
		opts  GROOpts
		want  []int // datagrams per emitted packet, in order
		taken bool  // Add takes them at all
	}{
		{"equal sizes", udpFlow(r, 64, 64, 64, 64, 64), GROOpts{UDP: true}, []int{5}, true},
		{"shorter last", udpFlow(r, 100, 100, 40), GROOpts{UDP: true}, []int{3}, true},
		{"bigger after smaller", udpFlow(r, 40, 100), GROOpts{UDP: true}, []int{1, 1}, true},
		{"equal after shorter", udpFlow(r, 100, 40, 100), GROOpts{UDP: true}, []int{2, 1}, true},
		{"without opts.UDP", udpFlow(r, 64, 64), GROOpts{}, nil, false},
		{"empty payloads", udpFlow(r, 0, 0), GROOpts{UDP: true}, []int{1, 1}, true},
		{"checksum in one only", func() [][]byte {
			p := udpFlow(r, 64, 64)
			UDP(IPv4(p[0]).Payload()).SetChecksum(0)
			return p
		}(), GROOpts{UDP: true}, []int{1, 1}, true},
		{"checksum in none", func() [][]byte {
			p := udpFlow(r, 64, 64, 64)
			for _, q := range p {
				UDP(IPv4(q).Payload()).SetChecksum(0)
			}
			return p
		}(), GROOpts{UDP: true}, []int{3}, true},
		{"bad checksum", func() [][]byte {
			p := udpFlow(r, 64, 64)
			p[1][len(p[1])-1] ^= 0x55
			return p
		}(), GROOpts{UDP: true}, []int{1, 1}, true},
		{"length field disagrees", func() [][]byte {
			p := udpFlow(r, 64, 64)
			u := UDP(IPv4(p[1]).Payload())
			u.SetLength(u.Length() - 4)
			return p
		}(), GROOpts{UDP: true}, []int{1, 1}, true},
		{"TOS differs", func() [][]byte {
			p := udpFlow(r, 64, 64)
			edit(p[1], func(ip IPv4) { ip[1] = 0x10; ip.ComputeChecksum() })
			return p
		}(), GROOpts{UDP: true}, []int{1, 1}, true},
		{"partial checksums", func() [][]byte {
			p := udpFlow(r, 64, 64, 64)
			for _, q := range p {
				asPartial(q)
			}
			return p
		}(), GROOpts{UDP: true, Partial: true}, []int{3}, true},
		{"lone partial", [][]byte{asPartial(udpFlow(r, 64)[0])}, GROOpts{UDP: true, Partial: true}, []int{1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGRO(8)
			for i, p := range tt.pkts {
				if got := g.AddWith(groInput(bytes.Clone(p)), Headroom, len(p), tt.opts); got != tt.taken {
					t.Fatalf("AddWith(%d) = %v, want %v", i, got, tt.taken)
				}
			}
			var sink groSink
			g.Flush(sink.emit)
			if len(sink.out) != len(tt.want) {
				t.Fatalf("got %d packets, want %d", len(sink.out), len(tt.want))
			}
			next := 0
			for i, n := range tt.want {
				checkUDPPacket(t, sink.out[i], tt.pkts[next:next+n], tt.opts.Partial)
				next += n
			}
		})
	}
}

// checkUDPPacket checks one emitted packet against the datagrams it
// should hold: a lone one is the original bytes (with NEEDS_CSUM when it
// came in partial), a merged one the datagram of all their payload once
// its partial checksum is completed, with a GSO_UDP_L4 header.
func checkUDPPacket(t *testing.T, got groOut, in [][]byte, partial bool) {
	t.Helper()
	if len(in) == 1 {
		want := VirtioNetHdr{}
		if partial {
			want = VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 6}
		}
		if got.hdr != want || !bytes.Equal(got.pkt, in[0]) {
			t.Errorf("lone datagram: hdr %+v (want %+v), unchanged %v", got.hdr, want, bytes.Equal(got.pkt, in[0]))
		}
		return
	}
	head := IPv4(in[0])
	size := len(head.Payload()) - UDPHeaderLen
	wantHdr := VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: uint16(size), CsumStart: 20, CsumOffset: 6}
	if got.hdr != wantHdr {
		t.Errorf("hdr: got %+v, want %+v", got.hdr, wantHdr)
	}
	ip := IPv4(got.pkt)
	if ip.Validate() != ParseOK || ip.TotalLen() != len(got.pkt) || !ip.HeaderChecksumValid() {
		t.Fatal("merged datagram: bad IPv4 header")
	}
	var payload []byte
	for _, p := range in {
		payload = append(payload, IPv4(p).Payload()[UDPHeaderLen:]...)
	}
	spec := ipv4Spec{ttl: head.TTL(), tos: head.TOS(), id: head.ID(), flags: head.Flags(), src: head.SrcBytes(), dst: head.DstBytes()}
	want := buildUDPv4(spec, 5353, 53, payload)
	completed := bytes.Clone(got.pkt)
	h := got.hdr
	h.GSOType = GSONone
	if err := CompleteChecksum(completed, h); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(completed, want) {
		t.Errorf("merged datagram differs from the slow twin at byte %d", firstDiff(completed, want))
	}
}

// TCP and UDP packets with the same addresses and ports are two flows.
func TestGROProtocolsApart(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	tcp := groStream(r, 1, 64, 64)
	udp := udpFlow(r, 64, 64)
	for i := range tcp {
		tcp[i].tcp.srcPort, tcp[i].tcp.dstPort = 5353, 53
	}
	g := NewGRO(8)
	for _, p := range [][]byte{tcp[0].build(), udp[0], tcp[1].build(), udp[1]} {
		if !g.AddWith(groInput(p), Headroom, len(p), GROOpts{UDP: true}) {
			t.Fatal("AddWith refused a packet")
		}
	}
	var sink groSink
	g.Flush(sink.emit)
	if len(sink.out) != 2 || sink.out[0].hdr.GSOType != GSOTCPv4 || sink.out[1].hdr.GSOType != GSOUDPL4 {
		t.Fatalf("got %d packets, want a TCP and a UDP superframe", len(sink.out))
	}
}

// A UDP superframe marked for the wire (MarkUDPSegments) is recognised
// with its segment size once it arrives whole, and made an ordinary
// superframe again byte for byte; nothing a single datagram off the wire
// can be is taken for one.
func TestMarkedUDPSegments(t *testing.T) {
	const size, count, mtu = 100, 10, 500
	spec := ipv4Spec{ttl: 64, src: podA, dst: podB}
	superframe := func() (IPv4, VirtioNetHdr) {
		payload := make([]byte, size*count-30) // the last datagram is 70 bytes
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		ip := IPv4(buildUDPv4(spec, 5000, 53, payload))
		return ip, AsUDPSuperframe(ip, size)
	}
	ip, h := superframe()
	orig := bytes.Clone(ip)
	MarkUDPSegments(ip, size)
	if got := UDP(ip.Payload()).Length(); got != UDPHeaderLen+size {
		t.Fatalf("marked UDP length %d, want %d", got, UDPHeaderLen+size)
	}
	marked := bytes.Clone(ip)
	got, ok := MarkedUDPSegments(ip, mtu)
	if !ok || got != size {
		t.Fatalf("MarkedUDPSegments = %d, %v; want %d, true", got, ok, size)
	}
	if !bytes.Equal(ip, marked) {
		t.Error("MarkedUDPSegments changed the packet")
	}
	if h2 := AsUDPSuperframe(ip, got); h2 != h || !bytes.Equal(ip, orig) {
		t.Errorf("unmarked again: header %+v and %d bytes differ from the superframe's %+v", h2, len(ip), h)
	}

	marked64 := func(datagrams int) IPv4 {
		ip := IPv4(buildUDPv4(spec, 5000, 53, make([]byte, datagrams*30)))
		AsUDPSuperframe(ip, 30)
		MarkUDPSegments(ip, 30)
		return ip
	}
	if got, ok := MarkedUDPSegments(marked64(GROMaxSegments), mtu); !ok || got != 30 {
		t.Errorf("%d datagrams, the most: MarkedUDPSegments = %d, %v; want 30, true", GROMaxSegments, got, ok)
	}
	tooMany := marked64(GROMaxSegments + 1)
	unmarked, _ := superframe()
	complete := IPv4(buildUDPv4(spec, 5000, 53, make([]byte, 900)))
	UDP(complete.Payload()).SetLength(UDPHeaderLen + size) // a datagram with 800 bytes past its end (UDP options)
	fragment := IPv4(bytes.Clone(marked))
	fragment[6] |= 0x20
	fragment.SetChecksum(0)
	fragment.SetChecksum(Checksum(fragment[:20], 0))
	for _, tt := range []struct {
		name string
		ip   IPv4
		mtu  int
	}{
		{"no larger than the path", marked, len(marked)},
		{"a datagram larger than the path", marked, IPv4MinHeaderLen + UDPHeaderLen + size - 1},
		{"not marked (length covers the whole)", unmarked, mtu},
		{"complete checksum", complete, mtu},
		{"more than GROMaxSegments datagrams", tooMany, mtu},
		{"fragment", fragment, mtu},
	} {
		if got, ok := MarkedUDPSegments(tt.ip, tt.mtu); ok {
			t.Errorf("%s: recognised, segment size %d", tt.name, got)
		}
	}
}
