package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestTunnelECN: RFC 6040 §4.1 normal mode, DSCP left out.
func TestTunnelECN(t *testing.T) {
	for _, tc := range []struct{ inner, want uint8 }{
		{ECNNotECT, ECNNotECT},
		{ECNECT1, ECNECT1},
		{ECNECT0, ECNECT0},
		{ECNCE, ECNECT0},
		{0xb8 | ECNECT0, ECNECT0}, // DSCP EF is not copied
		{0xb8 | ECNCE, ECNECT0},
	} {
		if got := TunnelECN(tc.inner); got != tc.want {
			t.Errorf("TunnelECN(%#02x) = %#02x, want %#02x", tc.inner, got, tc.want)
		}
	}
}

// TestDecapECN walks RFC 6040 §4.2's table (figure 4), as Linux applies
// it: an outer CE marks, an outer ECT(1) turns ECT(0) into ECT(1).
func TestDecapECN(t *testing.T) {
	const drop = 0xff
	// want[inner][outer]: the inner ECN field after, or drop.
	want := [4][4]uint8{
		ECNNotECT: {ECNNotECT, ECNNotECT, ECNNotECT, drop},
		ECNECT1:   {ECNECT1, ECNECT1, ECNECT1, ECNCE},
		ECNECT0:   {ECNECT0, ECNECT1, ECNECT0, ECNCE},
		ECNCE:     {ECNCE, ECNCE, ECNCE, ECNCE},
	}
	for inner := range uint8(4) {
		for outer := range uint8(4) {
			b := IPv4(buildIPv4(ipv4Spec{tos: 0x28 | inner, ttl: 64, proto: ProtoTCP, src: podA, dst: podB}, nil))
			ok := DecapECN(0xb8|outer, b)
			w := want[inner][outer]
			if w == drop {
				if ok {
					t.Errorf("inner %d outer %d: kept, want drop", inner, outer)
				}
				continue
			}
			if !ok {
				t.Errorf("inner %d outer %d: dropped, want ECN %d", inner, outer, w)
				continue
			}
			if got := b.TOS(); got != 0x28|w {
				t.Errorf("inner %d outer %d: TOS %#02x, want %#02x (DSCP kept, ECN %d)", inner, outer, got, 0x28|w, w)
			}
			if !b.HeaderChecksumValid() {
				t.Errorf("inner %d outer %d: header checksum wrong after the mark", inner, outer)
			}
		}
	}
}

func TestDecapECNMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 20000 {
		spec := ipv4Spec{
			tos: uint8(r.Uint32())&^ECNMask | ECNECT0, id: uint16(r.Uint32()), flags: uint8(r.IntN(4)),
			ttl: uint8(r.Uint32()), proto: uint8(r.Uint32()), options: randBytes(r, 4*r.IntN(11)),
		}
		binary.BigEndian.PutUint32(spec.src[:], r.Uint32())
		binary.BigEndian.PutUint32(spec.dst[:], r.Uint32())
		b := IPv4(buildIPv4(spec, randBytes(r, r.IntN(16))))
		outer := []uint8{ECNCE, ECNECT1}[r.IntN(2)]
		if !DecapECN(outer, b) || b.TOS()&ECNMask != outer {
			t.Fatalf("ECT(0) inner under outer ECN %d: ECN now %d", outer, b.TOS()&ECNMask)
		}
		inc := b.Checksum()
		b.ComputeChecksum()
		if full := b.Checksum(); inc != full {
			t.Fatalf("tos %#02x: incremental %#04x, recompute %#04x", spec.tos, inc, full)
		}
	}
}

func TestAllocsDecapECN(t *testing.T) {
	b := IPv4(buildIPv4(ipv4Spec{tos: ECNECT0, ttl: 64, proto: ProtoUDP, src: podA, dst: podB}, nil))
	got := testing.AllocsPerRun(100, func() {
		b[ipv4TOS] = ECNECT0
		b.ComputeChecksum()
		DecapECN(ECNCE, b)
	})
	if got != 0 {
		t.Errorf("DecapECN allocates %.1f times", got)
	}
}
