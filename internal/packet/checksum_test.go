package packet

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestSumMatchesSlow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := randBytes(r, 70000)
	for i := range 3000 {
		n := r.IntN(300)
		if i%50 == 0 {
			n = r.IntN(len(buf) - 8) // a few large ones
		}
		off := r.IntN(8) // unaligned starts
		b := buf[off : off+n]
		initial := r.Uint32() >> r.IntN(32)
		got := Fold(Sum(b, uint64(initial)))
		want := slowSum(b, initial)
		if got != want {
			t.Fatalf("len %d off %d initial %#x: got %#04x, want %#04x", n, off, initial, got, want)
		}
	}
	// Every length across the 64-, 32-, 8-, 4- and 2-byte steps, at every
	// alignment.
	for n := range 260 {
		for off := range 8 {
			b := buf[off : off+n]
			if got, want := Fold(Sum(b, 0xfffe)), slowSum(b, 0xfffe); got != want {
				t.Fatalf("len %d off %d: got %#04x, want %#04x", n, off, got, want)
			}
		}
	}
}

func TestSumEdgeCases(t *testing.T) {
	ones := make([]byte, 4096)
	for i := range ones {
		ones[i] = 0xff
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"one byte", []byte{0xab}},
		{"all ones 4096", ones},
		{"all ones odd", ones[:4095]},
		{"all zero", make([]byte, 100)},
		// RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
		{"rfc1071", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := Fold(Sum(tt.b, 0)), slowSum(tt.b, 0); got != want {
				t.Errorf("got %#04x, want %#04x", got, want)
			}
		})
	}
	if got := Fold(Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0)); got != 0xddf2 {
		t.Errorf("rfc1071 example: got %#04x, want 0xddf2", got)
	}
	// An accumulator at its limit must wrap its carry, not lose it.
	if got, want := Fold(Sum([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ^uint64(0))), uint16(0xffff); got != want {
		t.Errorf("carry at max: got %#04x, want %#04x", got, want)
	}
}

// Chaining Sum across even-length pieces equals one Sum over the whole.
func TestSumChaining(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		b := randBytes(r, r.IntN(400))
		cut := r.IntN(len(b)+1) &^ 1
		got := Fold(Sum(b[cut:], Sum(b[:cut], 0)))
		if want := slowSum(b, 0); got != want {
			t.Fatalf("len %d cut %d: got %#04x, want %#04x", len(b), cut, got, want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		var src, dst [4]byte
		binary.BigEndian.PutUint32(src[:], r.Uint32())
		binary.BigEndian.PutUint32(dst[:], r.Uint32())
		proto, length := uint8(r.Uint32()), r.IntN(65536)
		got := Fold(PseudoHeaderSum(proto, src, dst, uint16(length)))
		if want := uint16(slowPseudo(proto, src, dst, length)); got != want {
			t.Fatalf("got %#04x, want %#04x", got, want)
		}
	}
}

// Incremental updates must agree bit for bit with a full recompute, the
// negative-zero corner included (RFC 1624 §3, which is why eqn. 3 is used).
func TestUpdateMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 20000 {
		b := randBytes(r, 2+2*r.IntN(30))
		if i%10 == 0 {
			clear(b) // exercise the all-zero / negative-zero corners
		}
		binary.BigEndian.PutUint16(b, 0)
		binary.BigEndian.PutUint16(b, slowChecksum(b, 0))
		check := binary.BigEndian.Uint16(b)
		if len(b) >= 6 && r.IntN(2) == 0 {
			old := binary.BigEndian.Uint32(b[2:])
			nv := r.Uint32()
			binary.BigEndian.PutUint32(b[2:], nv)
			got := Update32(check, old, nv)
			if got != recompute(b) {
				t.Fatalf("Update32 %#x→%#x: got %#04x, recompute %#04x", old, nv, got, recompute(b))
			}
			continue
		}
		j := 2 + 2*r.IntN((len(b)-2)/2+1)
		if j >= len(b) {
			continue
		}
		old := binary.BigEndian.Uint16(b[j:])
		nv := uint16(r.Uint32())
		binary.BigEndian.PutUint16(b[j:], nv)
		got := Update16(check, old, nv)
		if got != recompute(b) {
			t.Fatalf("Update16 %#x→%#x: got %#04x, recompute %#04x", old, nv, got, recompute(b))
		}
	}
}

// recompute returns the checksum of b with its first word as the field.
func recompute(b []byte) uint16 { return slowChecksum(b[2:], 0) }

func BenchmarkSum(b *testing.B) {
	for _, n := range []int{64, 1500, 9000, 65535} {
		buf := randBytes(rand.New(rand.NewPCG(1, 1)), n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var s uint64
			for b.Loop() {
				s = Sum(buf, s)
			}
			_ = Fold(s)
		})
		b.Run(fmt.Sprint("slow-", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			var s uint16
			for b.Loop() {
				s = slowSum(buf, uint32(s))
			}
		})
	}
}
