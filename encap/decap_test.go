package encap

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/gopacket/layers"

	"podnet/internal/packet"
)

type decapCase struct {
	name   string
	pkt    []byte
	want   DecapError
	outer  int // outer total length, when the outer header is valid
	inner  []byte
	offset int // where inner starts in pkt
}

// decapCases builds the table shared by TestDecapIPIP and the fuzz seeds.
func decapCases(t testing.TB) []decapCase {
	inner := udpPacket(t, podA, podB, []byte("hello from pod A"))
	good := ipipPacket(t, nodeA, nodeB, nil, inner)
	n := len(good)

	// mod returns a copy of good (or of b) changed by f.
	mod := func(b []byte, f func(p []byte)) []byte {
		p := append([]byte(nil), b...)
		f(p)
		return p
	}
	setLen := func(p []byte, at int, v uint16) { binary.BigEndian.PutUint16(p[at+2:], v) }

	withOpts := ipipPacket(t, nodeA, nodeB,
		[]layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}, inner)
	fragInner := mod(inner, func(p []byte) { p[6] = 0x20 }) // MF: the pod sent a fragment
	padInner := append(append([]byte(nil), inner...), 0, 0, 0, 0)

	return []decapCase{
		{name: "good", pkt: good, want: DecapOK, outer: n, inner: inner, offset: 20},
		{name: "outer options", pkt: withOpts, want: DecapOK, outer: len(withOpts), inner: inner, offset: 24},
		{name: "trailing bytes after outer", pkt: append(append([]byte(nil), good...), 0xde, 0xad), want: DecapOK, outer: n, inner: inner, offset: 20},
		{name: "padding after inner", pkt: ipipPacket(t, nodeA, nodeB, nil, padInner), want: DecapOK, outer: n + 4, inner: inner, offset: 20},
		{name: "inner fragment", pkt: ipipPacket(t, nodeA, nodeB, nil, fragInner), want: DecapOK, outer: n, inner: fragInner, offset: 20},

		{name: "empty", pkt: nil, want: DecapTruncatedOuter},
		{name: "19 bytes", pkt: good[:19], want: DecapTruncatedOuter},
		{name: "outer version 6", pkt: mod(good, func(p []byte) { p[0] = 0x65 }), want: DecapBadOuter},
		{name: "outer IHL 4", pkt: mod(good, func(p []byte) { p[0] = 0x44 }), want: DecapBadOuter},
		{name: "outer IHL past buffer", pkt: mod(good[:40], func(p []byte) { p[0] = 0x4f }), want: DecapTruncatedOuter},
		{name: "outer total length past buffer", pkt: good[:n-1], want: DecapTruncatedOuter},
		{name: "outer total length below header", pkt: mod(good, func(p []byte) { setLen(p, 0, 19) }), want: DecapBadOuter},
		{name: "UDP not IPIP", pkt: mod(good, func(p []byte) { p[9] = packet.ProtoUDP }), want: DecapNotIPIP, outer: n},
		{name: "IPv6-in-IPv4 not IPIP", pkt: mod(good, func(p []byte) { p[9] = 41 }), want: DecapNotIPIP, outer: n},
		{name: "outer MF", pkt: mod(good, func(p []byte) { p[6] = 0x20 }), want: DecapOuterFragment, outer: n},
		{name: "outer fragment offset", pkt: mod(good, func(p []byte) { p[7] = 1 }), want: DecapOuterFragment, outer: n},
		{name: "outer DF is fine", pkt: mod(good, func(p []byte) { p[6] = 0x40 }), want: DecapOK, outer: n, inner: inner, offset: 20},
		{name: "no inner", pkt: mod(good, func(p []byte) { setLen(p, 0, 20) }), want: DecapTruncatedInner, outer: 20},
		{name: "inner 10 bytes", pkt: mod(good, func(p []byte) { setLen(p, 0, 30) }), want: DecapTruncatedInner, outer: 30},
		{name: "inner version 6", pkt: mod(good, func(p []byte) { p[20] = 0x65 }), want: DecapBadInner, outer: n},
		{name: "inner IHL 3", pkt: mod(good, func(p []byte) { p[20] = 0x43 }), want: DecapBadInner, outer: n},
		{name: "inner IHL past outer", pkt: mod(good, func(p []byte) { setLen(p, 0, 50); p[20] = 0x4f }), want: DecapTruncatedInner, outer: 50},
		{name: "inner total length past outer", pkt: mod(good, func(p []byte) { setLen(p, 20, uint16(n-20+1)) }), want: DecapTruncatedInner, outer: n},
		{name: "inner total length below header", pkt: mod(good, func(p []byte) { setLen(p, 20, 12) }), want: DecapBadInner, outer: n},
		{name: "inner cut by outer total length", pkt: mod(good, func(p []byte) { setLen(p, 0, uint16(n-1)) }), want: DecapTruncatedInner, outer: n - 1},
	}
}

func TestDecapIPIP(t *testing.T) {
	for _, tt := range decapCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			outer, inner, got := DecapIPIP(tt.pkt)
			if got != tt.want {
				t.Fatalf("DecapIPIP: got %v, want %v", got, tt.want)
			}
			if got == DecapOK || got >= DecapNotIPIP {
				if len(outer) != tt.outer {
					t.Errorf("outer length: got %d, want %d", len(outer), tt.outer)
				}
				if len(outer) > 0 && &outer[0] != &tt.pkt[0] {
					t.Errorf("outer is not a view of pkt")
				}
			} else if outer != nil {
				t.Errorf("outer: got %d bytes, want nil for %v", len(outer), got)
			}
			if got != DecapOK {
				if inner != nil {
					t.Errorf("inner: got %d bytes, want nil for %v", len(inner), got)
				}
				return
			}
			if !bytes.Equal(inner, tt.inner) {
				t.Errorf("inner:\ngot  %x\nwant %x", []byte(inner), tt.inner)
			}
			if &inner[0] != &tt.pkt[tt.offset] {
				t.Errorf("inner is not a view of pkt at offset %d", tt.offset)
			}
			if got := outer.Src(); got.String() != nodeA.String() {
				t.Errorf("outer source: got %v, want %v", got, nodeA)
			}
		})
	}
}

func TestDecapErrorString(t *testing.T) {
	seen := map[string]DecapError{}
	for e := DecapOK; e < numDecapErrors; e++ {
		s := e.String()
		if s == "" || s == "unknown" {
			t.Errorf("DecapError(%d) has no name", e)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c == '-') {
				t.Errorf("DecapError(%d).String() = %q is not kebab-case", e, s)
				break
			}
		}
		if prev, dup := seen[s]; dup {
			t.Errorf("DecapError(%d) and (%d) share the name %q", prev, e, s)
		}
		seen[s] = e
	}
	if got := numDecapErrors.String(); got != "unknown" {
		t.Errorf("out-of-range String: got %q, want %q", got, "unknown")
	}
}

func TestDecapIPIPAllocs(t *testing.T) {
	pkt := ipipPacket(t, nodeA, nodeB, nil, udpPacket(t, podA, podB, make([]byte, 1400)))
	bad := pkt[:30]
	allocs := testing.AllocsPerRun(1000, func() {
		if _, _, r := DecapIPIP(pkt); r != DecapOK {
			t.Fatal(r)
		}
		var err error = DecapError(0)
		if _, _, r := DecapIPIP(bad); r != DecapOK {
			err = r // counting a drop through the error interface
		}
		_ = err
	})
	if allocs != 0 {
		t.Errorf("DecapIPIP allocs per run: got %v, want 0", allocs)
	}
}

// FuzzDecapIPIP checks DecapIPIP against slowDecap on arbitrary bytes and
// the invariants callers rely on.
func FuzzDecapIPIP(f *testing.F) {
	for _, tt := range decapCases(f) {
		f.Add(tt.pkt)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		outer, inner, r := DecapIPIP(pkt)
		if r >= numDecapErrors || r.String() == "unknown" {
			t.Fatalf("reason %d out of range", r)
		}
		wantOuter, wantOff, wantLen, want := slowDecap(pkt)
		if r != want {
			t.Fatalf("reason: got %v, want %v (slowDecap)", r, want)
		}
		if (r == DecapOK || r >= DecapNotIPIP) && len(outer) != wantOuter {
			t.Fatalf("outer length: got %d, want %d", len(outer), wantOuter)
		}
		if r != DecapOK {
			if inner != nil {
				t.Fatalf("inner non-nil with reason %v", r)
			}
			return
		}
		hl := outer.HeaderLen()
		if hl+len(inner) > len(pkt) {
			t.Fatalf("outer header %d + inner %d > packet %d", hl, len(inner), len(pkt))
		}
		if v := inner.Validate(); v != packet.ParseOK {
			t.Fatalf("inner.Validate() = %v for an accepted packet", v)
		}
		if inner.TotalLen() != len(inner) {
			t.Fatalf("inner not resliced: total length %d, len %d", inner.TotalLen(), len(inner))
		}
		if hl != wantOff || len(inner) != wantLen || &inner[0] != &pkt[hl] {
			t.Fatalf("inner at %d len %d, want at %d len %d, aliasing pkt", hl, len(inner), wantOff, wantLen)
		}
		if outer.Protocol() != packet.ProtoIPIP || outer.IsFragment() {
			t.Fatalf("accepted outer: protocol %d, fragment %v", outer.Protocol(), outer.IsFragment())
		}
	})
}
