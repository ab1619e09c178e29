package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// superframe describes a TSO superframe by its parts, so the test can build
// both the frame the kernel would hand us and, independently, the segments
// tcp_gso_segment would cut it into.
type superframe struct {
	ip      ipv4Spec
	tcp     tcpSpec
	payload []byte
	mss     int
	gsoType uint8
}

// build returns the superframe as the kernel leaves it with
// CHECKSUM_PARTIAL: the TCP checksum field holds only the folded
// pseudo-header sum. It also returns the matching virtio-net header, with
// csum_start already relative to the IPv4 header.
func (s superframe) build() ([]byte, VirtioNetHdr) {
	pkt := buildTCPv4(s.ip, s.tcp, s.payload)
	ihl := 20 + len(s.ip.options)
	partial := slowSum(nil, slowPseudo(ProtoTCP, s.ip.src, s.ip.dst, len(pkt)-ihl))
	binary.BigEndian.PutUint16(pkt[ihl+16:], partial)
	gt := s.gsoType
	if gt == 0 {
		gt = GSOTCPv4
	}
	return pkt, VirtioNetHdr{
		Flags:      VirtioNetHdrFNeedsCsum,
		GSOType:    gt,
		HdrLen:     uint16(ihl + 20 + len(s.tcp.options)),
		GSOSize:    uint16(s.mss),
		CsumStart:  uint16(ihl),
		CsumOffset: 16,
	}
}

// expected returns the segments built from scratch with the slow builders.
func (s superframe) expected() [][]byte {
	var segs [][]byte
	n := max(1, (len(s.payload)+s.mss-1)/s.mss)
	for i := range n {
		chunk := s.payload[i*s.mss : min((i+1)*s.mss, len(s.payload))]
		ip, tcp := s.ip, s.tcp
		ip.id += uint16(i)
		tcp.seq += uint32(i * s.mss)
		if i != n-1 {
			tcp.flags &^= TCPFlagFIN | TCPFlagPSH
		}
		if i != 0 {
			tcp.flags &^= TCPFlagCWR
		}
		segs = append(segs, buildTCPv4(ip, tcp, chunk))
	}
	return segs
}

func makeOut(n, size int) ([][]byte, []int) {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
	}
	return out, make([]int, n)
}

var tsOption = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78} // NOP NOP timestamps

func TestSegmentTCPv4(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	base := ipv4Spec{ttl: 64, id: 0x1000, flags: IPv4FlagDontFragment, src: podA, dst: podB}
	tests := []struct {
		name   string
		sf     superframe
		hdrLen int // if nonzero, override h.HdrLen with a wrong value
		offset int
	}{
		{"64k mss 1448", superframe{ip: base, tcp: tcpSpec{srcPort: 1, dstPort: 2, seq: 1000, flags: TCPFlagACK | TCPFlagPSH, window: 100, options: tsOption}, payload: randBytes(r, 65535-20-32), mss: 1448}, 0, Headroom},
		{"exact multiple", superframe{ip: base, tcp: tcpSpec{seq: 5, flags: TCPFlagACK}, payload: randBytes(r, 4*1000), mss: 1000}, 0, 0},
		{"odd tail", superframe{ip: base, tcp: tcpSpec{seq: 5, flags: TCPFlagACK | TCPFlagFIN | TCPFlagPSH}, payload: randBytes(r, 2*1000+7), mss: 1000}, 0, 3},
		{"single segment", superframe{ip: base, tcp: tcpSpec{flags: TCPFlagACK | TCPFlagPSH | TCPFlagCWR}, payload: randBytes(r, 99), mss: 1448}, 0, 0},
		{"no payload", superframe{ip: base, tcp: tcpSpec{flags: TCPFlagACK | TCPFlagFIN}, mss: 1448}, 0, 0},
		{"cwr ecn", superframe{ip: base, tcp: tcpSpec{flags: TCPFlagACK | TCPFlagCWR | TCPFlagECE | TCPFlagPSH}, payload: randBytes(r, 3001), mss: 1448, gsoType: GSOTCPv4 | GSOECN}, 0, 0},
		{"ip options", superframe{ip: ipv4Spec{ttl: 9, src: podA, dst: podB, options: []byte{0x94, 4, 0, 0, 1, 1, 1, 0}}, tcp: tcpSpec{flags: TCPFlagACK, options: tsOption}, payload: randBytes(r, 5000), mss: 1200}, 0, 0},
		{"id and seq wrap", superframe{ip: ipv4Spec{ttl: 64, id: 0xfffe, src: podA, dst: podB}, tcp: tcpSpec{seq: 0xffffff00, flags: TCPFlagACK}, payload: randBytes(r, 1000), mss: 100}, 0, 0},
		{"mss 1", superframe{ip: base, tcp: tcpSpec{flags: TCPFlagACK}, payload: randBytes(r, 17), mss: 1}, 0, 0},
		{"wrong hdr_len 0", superframe{ip: base, tcp: tcpSpec{flags: TCPFlagACK, options: tsOption}, payload: randBytes(r, 3000), mss: 1448}, -1, 0},
		{"wrong hdr_len big", superframe{ip: base, tcp: tcpSpec{flags: TCPFlagACK}, payload: randBytes(r, 3000), mss: 1448}, 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt, h := tt.sf.build()
			switch {
			case tt.hdrLen < 0:
				h.HdrLen = 0
			case tt.hdrLen > 0:
				h.HdrLen = uint16(tt.hdrLen)
			}
			want := tt.sf.expected()
			out, sizes := makeOut(len(want)+2, tt.offset+1600)
			orig := append([]byte(nil), pkt...)
			n, err := SegmentTCPv4(pkt, h, out, sizes, tt.offset)
			if err != nil {
				t.Fatalf("err: %v", err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Error("input superframe was modified")
			}
			if n != len(want) {
				t.Fatalf("n: got %d, want %d", n, len(want))
			}
			var joined []byte
			for i := range n {
				got := out[i][tt.offset : tt.offset+sizes[i]]
				if !bytes.Equal(got, want[i]) {
					t.Fatalf("segment %d differs at byte %d:\n got %x\nwant %x", i, firstDiff(got, want[i]), got, want[i])
				}
				ip := IPv4(got)
				if ip.Validate() != ParseOK || !ip.HeaderChecksumValid() || !TransportChecksumValid(ip) {
					t.Fatalf("segment %d: invalid IPv4 or checksum", i)
				}
				joined = append(joined, ip.Payload()[TCP(ip.Payload()).DataOffset():]...)
			}
			if !bytes.Equal(joined, tt.sf.payload) {
				t.Errorf("concatenated payload: got %d bytes, want %d", len(joined), len(tt.sf.payload))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Cross-check one segment with an independent decoder and checksum code.
func TestSegmentTCPv4Gopacket(t *testing.T) {
	sf := superframe{ip: ipv4Spec{ttl: 64, id: 7, src: podA, dst: podB}, tcp: tcpSpec{srcPort: 80, dstPort: 5000, seq: 42, ack: 9, flags: TCPFlagACK | TCPFlagPSH, window: 1000},
		payload: randBytes(rand.New(rand.NewPCG(1, 5)), 3000), mss: 1400}
	pkt, h := sf.build()
	out, sizes := makeOut(3, 1500)
	n, err := SegmentTCPv4(pkt, h, out, sizes, 0)
	if err != nil || n != 3 {
		t.Fatalf("got %d, %v", n, err)
	}
	for i := range n {
		seg := out[i][:sizes[i]]
		p := gopacket.NewPacket(seg, layers.LayerTypeIPv4, gopacket.Default)
		ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip4 == nil || tcp == nil {
			t.Fatalf("segment %d: gopacket could not decode: %v", i, p.ErrorLayer())
		}
		if int(ip4.Length) != len(seg) || ip4.Id != uint16(7+i) || tcp.Seq != uint32(42+1400*i) || tcp.PSH != (i == n-1) || !tcp.ACK {
			t.Errorf("segment %d: len %d id %d seq %d psh %v", i, ip4.Length, ip4.Id, tcp.Seq, tcp.PSH)
		}
		// Re-serialise with gopacket computing both checksums.
		wantIP, wantTCP := ip4.Checksum, tcp.Checksum
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ip4, tcp, gopacket.Payload(tcp.Payload)); err != nil {
			t.Fatal(err)
		}
		re := gopacket.NewPacket(buf.Bytes(), layers.LayerTypeIPv4, gopacket.Default)
		gotIP := re.Layer(layers.LayerTypeIPv4).(*layers.IPv4).Checksum
		gotTCP := re.Layer(layers.LayerTypeTCP).(*layers.TCP).Checksum
		if gotIP != wantIP || gotTCP != wantTCP {
			t.Errorf("segment %d: gopacket checksums ip %#04x tcp %#04x, ours ip %#04x tcp %#04x", i, gotIP, gotTCP, wantIP, wantTCP)
		}
	}
}

func TestSegmentTCPv4Errors(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	sf := superframe{ip: ipv4Spec{ttl: 64, src: podA, dst: podB}, tcp: tcpSpec{flags: TCPFlagACK}, payload: randBytes(r, 3000), mss: 1000}
	good, goodH := sf.build()
	udp := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, make([]byte, 3000))
	frag := buildIPv4(ipv4Spec{ttl: 64, proto: ProtoTCP, flags: IPv4FlagMoreFragments, src: podA, dst: podB}, make([]byte, 3000))
	badDoff := append([]byte(nil), good...)
	badDoff[20+12] = 0xf0 // 60-byte TCP header in a 40-byte... still fits; make it too small instead
	badDoff[20+12] = 0x40
	cutTCP := append([]byte(nil), good[:30]...)
	binary.BigEndian.PutUint16(cutTCP[2:], 30)

	tests := []struct {
		name   string
		pkt    []byte
		h      func(h *VirtioNetHdr)
		nOut   int
		size   int
		offset int
		want   ParseError
	}{
		{"not ipv4", []byte{0x60, 0, 0, 0}, nil, 3, 1100, 0, ErrTooShort},
		{"bad version", append([]byte{0x65}, good[1:]...), nil, 3, 1100, 0, ErrBadVersion},
		{"udp", udp, nil, 3, 1100, 0, ErrBadGSO},
		{"fragment", frag, nil, 3, 1100, 0, ErrBadGSO},
		{"gso udp_l4", good, func(h *VirtioNetHdr) { h.GSOType = GSOUDPL4 }, 3, 1100, 0, ErrBadGSO},
		{"gso tcpv6", good, func(h *VirtioNetHdr) { h.GSOType = GSOTCPv6 }, 3, 1100, 0, ErrBadGSO},
		{"gso size 0", good, func(h *VirtioNetHdr) { h.GSOSize = 0 }, 3, 1100, 0, ErrBadGSO},
		{"csum_start", good, func(h *VirtioNetHdr) { h.CsumStart = 34 }, 3, 1100, 0, ErrBadVirtioHeader},
		{"tcp data offset 16", badDoff, nil, 3, 1100, 0, ErrTruncatedL4},
		{"tcp cut", cutTCP, nil, 3, 1100, 0, ErrTruncatedL4},
		{"out too short", good, nil, 2, 1100, 0, ErrTooManySegments},
		{"out buffer too small", good, nil, 3, 1039, 0, ErrBufferTooSmall},
		{"offset eats buffer", good, nil, 3, 1100, 61, ErrBufferTooSmall},
		{"offset beyond buffer", good, nil, 3, 1100, 2000, ErrBufferTooSmall},
		{"negative offset", good, nil, 3, 1100, -1, ErrBufferTooSmall},
		{"none: out empty", good, func(h *VirtioNetHdr) { h.GSOType = GSONone }, 0, 1100, 0, ErrTooManySegments},
		{"none: too small", good, func(h *VirtioNetHdr) { h.GSOType = GSONone }, 1, 1100, 0, ErrBufferTooSmall},
		{"none: csum beyond", good, func(h *VirtioNetHdr) { h.GSOType = GSONone; h.CsumOffset = 4000 }, 1, 4000, 0, ErrBadVirtioHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := goodH
			if tt.h != nil {
				tt.h(&h)
			}
			out, sizes := makeOut(tt.nOut, tt.size)
			for _, o := range out {
				for i := range o {
					o[i] = 0xaa
				}
			}
			n, err := SegmentTCPv4(tt.pkt, h, out, sizes, tt.offset)
			if err == nil || n != 0 {
				t.Fatalf("got %d, %v, want 0 and an error", n, err)
			}
			if !errors.Is(err, tt.want) || ReasonOf(err) != tt.want {
				t.Errorf("err: got %v (reason %v), want reason %v", err, ReasonOf(err), tt.want)
			}
			for i, o := range out {
				if bytes.Count(o, []byte{0xaa}) != len(o) || sizes[i] != 0 {
					t.Errorf("out[%d] written despite the error", i)
				}
			}
		})
	}
}

func TestSegmentTCPv4None(t *testing.T) {
	full := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, randBytes(rand.New(rand.NewPCG(1, 2)), 301))
	partial := append([]byte(nil), full...)
	binary.BigEndian.PutUint16(partial[26:], slowSum(nil, slowPseudo(ProtoUDP, podA, podB, len(full)-20)))
	padded := append(append([]byte(nil), partial...), 0, 0, 0)
	tests := []struct {
		name string
		pkt  []byte
		h    VirtioNetHdr
	}{
		{"needs csum", partial, VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 6}},
		{"trailing bytes dropped", padded, VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 6}},
		{"already complete", full, VirtioNetHdr{Flags: VirtioNetHdrFDataValid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, sizes := makeOut(1, 400)
			n, err := SegmentTCPv4(tt.pkt, tt.h, out, sizes, 10)
			if err != nil || n != 1 {
				t.Fatalf("got %d, %v", n, err)
			}
			if got := out[0][10 : 10+sizes[0]]; !bytes.Equal(got, full) {
				t.Errorf("got %x, want %x", got, full)
			}
		})
	}
}

func TestCompleteChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for i := range 2000 {
		var full []byte
		var off int
		opts := randBytes(r, 4*r.IntN(3))
		spec := ipv4Spec{ttl: 64, src: podA, dst: podB, options: opts}
		binary.BigEndian.PutUint32(spec.src[:], r.Uint32())
		if i%2 == 0 {
			full = buildTCPv4(spec, tcpSpec{seq: r.Uint32(), flags: TCPFlagACK}, randBytes(r, r.IntN(2000)))
			off = 16
		} else {
			full = buildUDPv4(spec, 1, 2, randBytes(r, r.IntN(2000)))
			off = 6
		}
		ihl := 20 + len(opts)
		proto := full[9]
		pkt := append([]byte(nil), full...)
		binary.BigEndian.PutUint16(pkt[ihl+off:], slowSum(nil, slowPseudo(proto, spec.src, spec.dst, len(full)-ihl)))
		if err := CompleteChecksum(pkt, VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: uint16(ihl), CsumOffset: uint16(off)}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pkt, full) {
			t.Fatalf("proto %d len %d: got checksum %#04x, want %#04x", proto, len(full),
				binary.BigEndian.Uint16(pkt[ihl+off:]), binary.BigEndian.Uint16(full[ihl+off:]))
		}
	}
}

func TestCompleteChecksumErrors(t *testing.T) {
	pkt := make([]byte, 40)
	tests := []struct {
		name string
		h    VirtioNetHdr
		want ParseError
	}{
		{"flag clear is a no-op", VirtioNetHdr{CsumStart: 1000}, ParseOK},
		{"field beyond end", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 19}, ErrBadVirtioHeader},
		{"field straddles end", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 30, CsumOffset: 9}, ErrBadVirtioHeader},
		{"odd offset", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 3}, ErrBadVirtioHeader},
		{"start beyond end", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 0xffff, CsumOffset: 0xfffe}, ErrBadVirtioHeader},
		{"gso", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOType: GSOTCPv4, CsumStart: 20, CsumOffset: 16}, ErrBadGSO},
		{"last word ok", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 18}, ParseOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReasonOf(CompleteChecksum(pkt, tt.h)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAllocsSegmentTCPv4(t *testing.T) {
	sf := superframe{ip: ipv4Spec{ttl: 64, src: podA, dst: podB}, tcp: tcpSpec{flags: TCPFlagACK, options: tsOption}, payload: make([]byte, 65000), mss: 1448}
	pkt, h := sf.build()
	out, sizes := makeOut(64, 1600)
	got := testing.AllocsPerRun(20, func() {
		if _, err := SegmentTCPv4(pkt, h, out, sizes, 0); err != nil {
			panic(err)
		}
	})
	if got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
	// The error path must not allocate either: bad packets are counted,
	// and a flood of them must not turn into GC work.
	bad := h
	bad.GSOSize = 0
	got = testing.AllocsPerRun(20, func() {
		if _, err := SegmentTCPv4(pkt, bad, out, sizes, 0); ReasonOf(err) != ErrBadGSO {
			panic(err)
		}
	})
	if got != 0 {
		t.Errorf("error path allocs: got %v, want 0", got)
	}
}

func TestAllocsCompleteChecksum(t *testing.T) {
	pkt := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, make([]byte, 1400))
	h := VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: 6}
	got := testing.AllocsPerRun(100, func() {
		if err := CompleteChecksum(pkt, h); err != nil {
			panic(err)
		}
	})
	if got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}

func BenchmarkSegmentTCPv4(b *testing.B) {
	for _, mss := range []int{1448, 8948} {
		sf := superframe{ip: ipv4Spec{ttl: 64, src: podA, dst: podB}, tcp: tcpSpec{flags: TCPFlagACK, options: tsOption},
			payload: randBytes(rand.New(rand.NewPCG(1, 1)), 65535-20-32), mss: mss}
		pkt, h := sf.build()
		out, sizes := makeOut(64, Headroom+mss+100)
		b.Run(fmt.Sprintf("64KB/mss%d", mss), func(b *testing.B) {
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n, _ = SegmentTCPv4(pkt, h, out, sizes, Headroom)
			}
			b.ReportMetric(float64(n), "segs/op")
		})
	}
}

// refused checks a segmenter left its input alone and, if it refused it,
// wrote nothing it counts and gave a reason; it reports whether it did.
func refused(t *testing.T, pkt, orig []byte, n int, err error) bool {
	t.Helper()
	if !bytes.Equal(pkt, orig) {
		t.Fatal("input modified")
	}
	if err == nil {
		return false
	}
	if n != 0 || ReasonOf(err) == ParseOK || ReasonOf(err) >= numParseErrors {
		t.Fatalf("n %d with error %v (reason %v)", n, err, ReasonOf(err))
	}
	return true
}

// fuzzOut is allocated once: the fuzz function runs serially per process.
var fuzzOut, fuzzSizes = makeOut(64, 2048)

func FuzzSegmentTCPv4(f *testing.F) {
	r := rand.New(rand.NewPCG(19, 20))
	seeds := []superframe{
		{ip: ipv4Spec{ttl: 64, src: podA, dst: podB}, tcp: tcpSpec{flags: TCPFlagACK | TCPFlagPSH}, payload: randBytes(r, 3000), mss: 1000},
		{ip: ipv4Spec{ttl: 64, src: podA, dst: podB, options: []byte{1, 1, 1, 0}}, tcp: tcpSpec{flags: TCPFlagCWR | TCPFlagFIN, options: tsOption}, payload: randBytes(r, 301), mss: 100, gsoType: GSOTCPv4 | GSOECN},
		{ip: ipv4Spec{ttl: 64, src: podA, dst: podB}, tcp: tcpSpec{flags: TCPFlagACK}, payload: nil, mss: 1448},
	}
	for _, s := range seeds {
		pkt, h := s.build()
		f.Add(pkt, h.Flags, h.GSOType, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset, uint8(0))
	}
	udp := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, make([]byte, 100))
	f.Add(udp, uint8(VirtioNetHdrFNeedsCsum), uint8(GSONone), uint16(0), uint16(0), uint16(20), uint16(6), uint8(7))

	f.Fuzz(func(t *testing.T, pkt []byte, flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16, offset uint8) {
		h := VirtioNetHdr{Flags: flags, GSOType: gsoType, HdrLen: hdrLen, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
		orig := append([]byte(nil), pkt...)
		n, err := SegmentTCPv4(pkt, h, fuzzOut, fuzzSizes, int(offset))
		if refused(t, pkt, orig, n, err) {
			return
		}
		if n < 1 || n > len(fuzzOut) {
			t.Fatalf("n %d out of [1, %d]", n, len(fuzzOut))
		}
		in := IPv4(pkt)
		in = in[:in.TotalLen()]
		for i := range n {
			if fuzzSizes[i] > len(fuzzOut[i])-int(offset) {
				t.Fatalf("size %d exceeds buffer", fuzzSizes[i])
			}
		}
		if gsoType == GSONone {
			seg := fuzzOut[0][offset : int(offset)+fuzzSizes[0]]
			if n != 1 || len(seg) != len(in) {
				t.Fatalf("none: n %d len %d, want 1 and %d", n, len(seg), len(in))
			}
			field := -1
			if flags&VirtioNetHdrFNeedsCsum != 0 {
				field = int(csumStart) + int(csumOffset)
				// The pseudo-header sum that was in the field plus
				// everything from csum_start must now sum to all ones.
				old := binary.BigEndian.Uint16(in[field:])
				if Fold(Sum(seg[csumStart:], uint64(old))) != 0xffff {
					t.Fatal("none: completed checksum does not verify")
				}
			}
			for j := range seg {
				if seg[j] != in[j] && j != field && j != field+1 {
					t.Fatalf("none: byte %d changed", j)
				}
			}
			return
		}
		hdrEnd := in.HeaderLen() + TCP(in.Payload()).DataOffset()
		var joined []byte
		for i := range n {
			ip := IPv4(fuzzOut[i][offset : int(offset)+fuzzSizes[i]])
			if ip.Validate() != ParseOK || ip.TotalLen() != len(ip) || ip.Protocol() != ProtoTCP {
				t.Fatalf("segment %d is not a valid IPv4/TCP packet", i)
			}
			if !ip.HeaderChecksumValid() || !TransportChecksumValid(ip) {
				t.Fatalf("segment %d: bad checksum", i)
			}
			p := ip[hdrEnd:]
			if len(p) > int(gsoSize) {
				t.Fatalf("segment %d: payload %d > gso_size %d", i, len(p), gsoSize)
			}
			joined = append(joined, p...)
		}
		if !bytes.Equal(joined, in[hdrEnd:]) {
			t.Fatalf("payload: got %d bytes, want %d", len(joined), len(in)-hdrEnd)
		}
	})
}

// SegmentUDPv4 undoes GRO: a flow's datagrams merged into a UDP
// superframe come back byte for byte, IP IDs and checksums included.
func TestSegmentUDPv4RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	noChecksum := func(p [][]byte) [][]byte {
		for _, q := range p {
			UDP(IPv4(q).Payload()).SetChecksum(0)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pkts [][]byte
	}{
		{"equal sizes", udpFlow(r, 64, 64, 64, 64, 64)},
		{"shorter last", udpFlow(r, 100, 100, 40)},
		{"large", udpFlow(r, 1400, 1400, 1400)},
		// GRO leaves the merged checksum partial either way, as the
		// kernel does, so the datagrams come back with checksums.
		{"no checksums", noChecksum(udpFlow(r, 64, 64, 64))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewGRO(8)
			for i, p := range tc.pkts {
				if !g.AddWith(groInput(bytes.Clone(p)), Headroom, len(p), GROOpts{UDP: true}) {
					t.Fatalf("GRO refused datagram %d", i)
				}
			}
			var sink groSink
			g.Flush(sink.emit)
			if len(sink.out) != 1 || sink.out[0].hdr.GSOType != GSOUDPL4 {
				t.Fatalf("GRO gave %d packets (%+v), want one UDP superframe", len(sink.out), sink.out)
			}
			out, sizes := makeOut(64, 1600)
			n, err := SegmentUDPv4(sink.out[0].pkt, sink.out[0].hdr, out, sizes, 0)
			if err != nil || n != len(tc.pkts) {
				t.Fatalf("SegmentUDPv4 = %d, %v; want %d datagrams", n, err, len(tc.pkts))
			}
			for i, p := range tc.pkts {
				got := out[i][:sizes[i]]
				if UDP(IPv4(p).Payload()).Checksum() == 0 {
					if !TransportChecksumValid(IPv4(got)) {
						t.Errorf("datagram %d: bad UDP checksum", i)
					}
					p = bytes.Clone(p)
					UDP(IPv4(p).Payload()).SetChecksum(UDP(IPv4(got).Payload()).Checksum())
				}
				if !bytes.Equal(got, p) {
					t.Errorf("datagram %d:\n got % x\nwant % x", i, got[:min(len(got), 40)], p[:min(len(p), 40)])
				}
			}
		})
	}
}

// A superframe whose checksum is neither there nor partial gives
// datagrams without one.
func TestSegmentUDPv4NoChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	var payload []byte
	for range 3 {
		payload = append(payload, randBytes(r, 50)...)
	}
	pkt := buildUDPv4(ipv4Spec{ttl: 64, id: 7, src: podA, dst: podB}, 1000, 2000, payload)
	UDP(IPv4(pkt).Payload()).SetChecksum(0)
	out, sizes := makeOut(4, 200)
	n, err := SegmentUDPv4(pkt, VirtioNetHdr{GSOType: GSOUDPL4, GSOSize: 50, HdrLen: 28}, out, sizes, 0)
	if err != nil || n != 3 {
		t.Fatalf("SegmentUDPv4 = %d, %v; want 3", n, err)
	}
	for i := range n {
		seg := IPv4(out[i][:sizes[i]])
		u := UDP(seg.Payload())
		if u.Checksum() != 0 || u.Length() != 58 || seg.ID() != uint16(7+i) || !seg.HeaderChecksumValid() || !bytes.Equal(u[8:], payload[50*i:50*(i+1)]) {
			t.Errorf("datagram %d: checksum %#x, length %d, id %d: want no checksum, 58, %d and its payload", i, u.Checksum(), u.Length(), seg.ID(), 7+i)
		}
	}
}

func TestSegmentUDPv4Errors(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	build := func() ([]byte, VirtioNetHdr) {
		g := NewGRO(8)
		for _, p := range udpFlow(r, 100, 100, 100) {
			g.AddWith(groInput(p), Headroom, len(p), GROOpts{UDP: true})
		}
		var sink groSink
		g.Flush(sink.emit)
		return sink.out[0].pkt, sink.out[0].hdr
	}
	for _, tc := range []struct {
		name string
		edit func(pkt []byte, h *VirtioNetHdr) ([][]byte, int)
		want ParseError
	}{
		{"not UDP_L4", func(_ []byte, h *VirtioNetHdr) ([][]byte, int) { h.GSOType = GSOTCPv4; return nil, 0 }, ErrBadGSO},
		{"gso_size zero", func(_ []byte, h *VirtioNetHdr) ([][]byte, int) { h.GSOSize = 0; return nil, 0 }, ErrBadGSO},
		{"not UDP", func(p []byte, _ *VirtioNetHdr) ([][]byte, int) {
			p[9] = ProtoTCP
			IPv4(p).ComputeChecksum()
			return nil, 0
		}, ErrBadGSO},
		{"csum_start elsewhere", func(_ []byte, h *VirtioNetHdr) ([][]byte, int) { h.CsumStart = 24; return nil, 0 }, ErrBadVirtioHeader},
		{"UDP length short", func(p []byte, _ *VirtioNetHdr) ([][]byte, int) {
			UDP(IPv4(p).Payload()).SetLength(108)
			return nil, 0
		}, ErrTruncatedL4},
		{"too few buffers", func(_ []byte, _ *VirtioNetHdr) ([][]byte, int) { o, _ := makeOut(2, 1600); return o, 0 }, ErrTooManySegments},
		{"buffers too small", func(_ []byte, _ *VirtioNetHdr) ([][]byte, int) { o, _ := makeOut(8, 100); return o, 0 }, ErrBufferTooSmall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, h := build()
			out, sizes := makeOut(8, 1600)
			if o, _ := tc.edit(pkt, &h); o != nil {
				out = o
			}
			for _, b := range out {
				clear(b)
			}
			if _, err := SegmentUDPv4(pkt, h, out, sizes, 0); ReasonOf(err) != tc.want {
				t.Fatalf("err %v (reason %v), want reason %v", err, ReasonOf(err), tc.want)
			}
			for i, b := range out {
				if !bytes.Equal(b, make([]byte, len(b))) {
					t.Fatalf("out[%d] written on error", i)
				}
			}
		})
	}
}

func TestAllocsSegmentUDPv4(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	g := NewGRO(64)
	for _, p := range udpFlow(r, 64, 64, 64, 64, 64, 64, 64, 64) {
		g.AddWith(groInput(p), Headroom, len(p), GROOpts{UDP: true})
	}
	var sink groSink
	g.Flush(sink.emit)
	out, sizes := makeOut(64, 1600)
	if got := testing.AllocsPerRun(20, func() {
		if _, err := SegmentUDPv4(sink.out[0].pkt, sink.out[0].hdr, out, sizes, 0); err != nil {
			panic(err)
		}
	}); got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}

// SegmentTCPv4From cuts a superframe in several calls, with few buffers,
// into exactly the segments SegmentTCPv4 makes in one.
func TestSegmentTCPv4From(t *testing.T) {
	sf := superframe{ip: ipv4Spec{ttl: 64, id: 100, src: podA, dst: podB},
		tcp: tcpSpec{flags: TCPFlagACK | TCPFlagPSH | TCPFlagFIN | TCPFlagCWR, options: tsOption}, payload: make([]byte, 65000), mss: 500}
	for i := range sf.payload {
		sf.payload[i] = byte(i * 7)
	}
	pkt, h := sf.build()
	all, allSizes := makeOut(200, 1600)
	want, err := SegmentTCPv4(pkt, h, all, allSizes, 0)
	if err != nil || want != 130 {
		t.Fatalf("SegmentTCPv4 = %d, %v; want 130 segments", want, err)
	}
	if _, err := SegmentTCPv4(pkt, h, all[:64], allSizes, 0); ReasonOf(err) != ErrTooManySegments {
		t.Errorf("SegmentTCPv4 with 64 buffers: %v, want too many segments", err)
	}
	out, sizes := makeOut(7, 1600)
	got := 0
	for first := 0; first < want; {
		n, total, err := SegmentTCPv4From(pkt, h, first, out, sizes, 0)
		if err != nil || total != want || n != min(7, want-first) {
			t.Fatalf("From(%d) = %d of %d, %v; want %d of %d", first, n, total, err, min(7, want-first), want)
		}
		for i := range n {
			if !bytes.Equal(out[i][:sizes[i]], all[first+i][:allSizes[first+i]]) {
				t.Fatalf("segment %d differs from SegmentTCPv4's", first+i)
			}
		}
		first += n
		got += n
	}
	if _, _, err := SegmentTCPv4From(pkt, h, want, out, sizes, 0); err == nil {
		t.Error("From past the last segment: no error")
	}
}

// FuzzSegmentUDPv4: whatever the packet and header, SegmentUDPv4 either
// refuses without writing a datagram it counts, or returns datagrams that
// are valid IPv4/UDP packets, none over gso_size, carrying the payload in
// order with IDs counting up.
func FuzzSegmentUDPv4(f *testing.F) {
	r := rand.New(rand.NewPCG(21, 22))
	g := NewGRO(8)
	for _, p := range udpFlow(r, 100, 100, 37) {
		g.AddWith(groInput(p), Headroom, len(p), GROOpts{UDP: true})
	}
	var sink groSink
	g.Flush(sink.emit)
	h := sink.out[0].hdr
	f.Add(sink.out[0].pkt, h.Flags, h.GSOType, h.GSOSize, h.CsumStart, h.CsumOffset, uint8(0))
	f.Add(buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1, 2, make([]byte, 300)), uint8(0), uint8(GSOUDPL4), uint16(64), uint16(0), uint16(0), uint8(3))
	f.Fuzz(func(t *testing.T, pkt []byte, flags, gsoType uint8, gsoSize, csumStart, csumOffset uint16, offset uint8) {
		h := VirtioNetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
		orig := append([]byte(nil), pkt...)
		n, err := SegmentUDPv4(pkt, h, fuzzOut, fuzzSizes, int(offset))
		if refused(t, pkt, orig, n, err) {
			return
		}
		in := IPv4(pkt)
		in = in[:in.TotalLen()]
		payload := in[in.HeaderLen()+UDPHeaderLen:]
		checksummed := flags&VirtioNetHdrFNeedsCsum != 0 || UDP(in.Payload()).Checksum() != 0
		var joined []byte
		for i := range n {
			if fuzzSizes[i] > len(fuzzOut[i])-int(offset) {
				t.Fatalf("size %d exceeds buffer", fuzzSizes[i])
			}
			ip := IPv4(fuzzOut[i][offset : int(offset)+fuzzSizes[i]])
			if ip.Validate() != ParseOK || ip.TotalLen() != len(ip) || ip.Protocol() != ProtoUDP || !ip.HeaderChecksumValid() {
				t.Fatalf("datagram %d is not a valid IPv4/UDP packet", i)
			}
			if ip.ID() != in.ID()+uint16(i) {
				t.Fatalf("datagram %d: ID %d, want %d", i, ip.ID(), in.ID()+uint16(i))
			}
			u := UDP(ip.Payload())
			if int(u.Length()) != len(u) || len(u)-UDPHeaderLen > int(gsoSize) {
				t.Fatalf("datagram %d: UDP length %d of %d, gso_size %d", i, u.Length(), len(u), gsoSize)
			}
			if checksummed != (u.Checksum() != 0) || (checksummed && !TransportChecksumValid(ip)) {
				t.Fatalf("datagram %d: checksum %#x, want one: %v", i, u.Checksum(), checksummed)
			}
			joined = append(joined, u[UDPHeaderLen:]...)
		}
		if !bytes.Equal(joined, payload) {
			t.Fatal("the datagrams do not carry the payload in order")
		}
	})
}

// SegmentUDPv4From cuts in rounds exactly what SegmentUDPv4 cuts at once.
func TestSegmentUDPv4From(t *testing.T) {
	var payload []byte
	for i := range 100 {
		payload = append(payload, bytes.Repeat([]byte{byte(i)}, 30)...)
	}
	pkt := buildUDPv4(ipv4Spec{ttl: 64, id: 9, src: podA, dst: podB}, 1, 2, payload)
	h := VirtioNetHdr{GSOType: GSOUDPL4, GSOSize: 30, HdrLen: 28}
	all, allSizes := makeOut(128, 100)
	want, err := SegmentUDPv4(pkt, h, all, allSizes, 0)
	if err != nil || want != 100 {
		t.Fatalf("SegmentUDPv4 = %d, %v; want 100", want, err)
	}
	out, sizes := makeOut(64, 100)
	for first := 0; first < want; {
		n, total, err := SegmentUDPv4From(pkt, h, first, out, sizes, 0)
		if err != nil || total != want || n != min(64, want-first) {
			t.Fatalf("From(%d) = %d of %d, %v", first, n, total, err)
		}
		for i := range n {
			if !bytes.Equal(out[i][:sizes[i]], all[first+i][:allSizes[first+i]]) {
				t.Fatalf("datagram %d differs", first+i)
			}
		}
		first += n
	}
}
