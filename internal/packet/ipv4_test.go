package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestIPv4Validate(t *testing.T) {
	good := buildUDPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, 1000, 53, []byte("hello"))
	withOpts := buildIPv4(ipv4Spec{ttl: 64, proto: ProtoUDP, src: podA, dst: podB, options: []byte{1, 1, 1, 0}}, make([]byte, 8))
	mod := func(b []byte, f func(b []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	tests := []struct {
		name string
		b    []byte
		want ParseError
	}{
		{"ok", good, ParseOK},
		{"ok options", withOpts, ParseOK},
		{"ok padded", append(append([]byte(nil), good...), 0, 0, 0, 0), ParseOK},
		{"empty", nil, ErrTooShort},
		{"19 bytes", good[:19], ErrTooShort},
		{"version 6", mod(good, func(b []byte) { b[0] = 0x65 }), ErrBadVersion},
		{"ihl 4", mod(good, func(b []byte) { b[0] = 0x44 }), ErrBadIHL},
		{"ihl beyond buffer", mod(good[:24], func(b []byte) { b[0] = 0x4f }), ErrBadIHL},
		{"total below ihl", mod(good, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 19) }), ErrBadTotalLength},
		{"total beyond buffer", mod(good, func(b []byte) { binary.BigEndian.PutUint16(b[2:], uint16(len(b)+1)) }), ErrBadTotalLength},
		{"options total below ihl", mod(withOpts, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 20) }), ErrBadTotalLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IPv4(tt.b).Validate(); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIPv4Accessors(t *testing.T) {
	b := IPv4(buildIPv4(ipv4Spec{
		tos: 0xb8, id: 0xbeef, flags: 0x3, fragOff: 1480, ttl: 17, proto: ProtoTCP,
		src: podA, dst: podB, options: []byte{0x94, 0x04, 0, 0},
	}, make([]byte, 12)))
	if r := b.Validate(); r != ParseOK {
		t.Fatalf("Validate: got %v", r)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"HeaderLen", b.HeaderLen(), 24},
		{"TotalLen", b.TotalLen(), 36},
		{"TOS", b.TOS(), uint8(0xb8)},
		{"ID", b.ID(), uint16(0xbeef)},
		{"Flags", b.Flags(), uint8(3)},
		{"DontFragment", b.DontFragment(), true},
		{"MoreFragments", b.MoreFragments(), true},
		{"FragmentOffset", b.FragmentOffset(), uint16(1480)},
		{"IsFragment", b.IsFragment(), true},
		{"TTL", b.TTL(), uint8(17)},
		{"Protocol", b.Protocol(), uint8(ProtoTCP)},
		{"Src", b.Src(), netip.AddrFrom4(podA)},
		{"Dst", b.Dst(), netip.AddrFrom4(podB)},
		{"SrcBytes", b.SrcBytes(), podA},
		{"DstBytes", b.DstBytes(), podB},
		{"len(Payload)", len(b.Payload()), 12},
		{"HeaderChecksumValid", b.HeaderChecksumValid(), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	want := b.Checksum()
	b.SetSrc(podB)
	b.SetDst(podA)
	b.SetID(1)
	b.SetTotalLen(30)
	if b.HeaderChecksumValid() {
		t.Error("checksum still valid after rewriting fields")
	}
	b.SetSrc(podA)
	b.SetDst(podB)
	b.SetID(0xbeef)
	b.SetTotalLen(36)
	b.SetChecksum(0x1234)
	b.ComputeChecksum()
	if got := b.Checksum(); got != want {
		t.Errorf("ComputeChecksum: got %#04x, want %#04x", got, want)
	}
}

// DecrementTTL patches the checksum incrementally; it must match a full
// recompute on random headers, options and TTLs included.
func TestDecrementTTLMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 20000 {
		spec := ipv4Spec{
			tos: uint8(r.Uint32()), id: uint16(r.Uint32()), flags: uint8(r.IntN(4)),
			ttl: uint8(1 + r.IntN(255)), proto: uint8(r.Uint32()),
			options: randBytes(r, 4*r.IntN(11)),
		}
		binary.BigEndian.PutUint32(spec.src[:], r.Uint32())
		binary.BigEndian.PutUint32(spec.dst[:], r.Uint32())
		b := IPv4(buildIPv4(spec, randBytes(r, r.IntN(16))))
		b.DecrementTTL()
		if got, want := b.TTL(), spec.ttl-1; got != want {
			t.Fatalf("TTL: got %d, want %d", got, want)
		}
		inc := b.Checksum()
		b.ComputeChecksum()
		if full := b.Checksum(); inc != full {
			t.Fatalf("ttl %d proto %d: incremental %#04x, recompute %#04x", spec.ttl, spec.proto, inc, full)
		}
	}
}

func TestDecrementTTLZero(t *testing.T) {
	b := IPv4(buildIPv4(ipv4Spec{ttl: 0, proto: ProtoUDP, src: podA, dst: podB}, nil))
	c := b.Checksum()
	b.DecrementTTL()
	if b.TTL() != 0 || b.Checksum() != c {
		t.Errorf("got ttl %d checksum %#04x, want unchanged 0 %#04x", b.TTL(), b.Checksum(), c)
	}
}

func TestAllocsDecrementTTL(t *testing.T) {
	b := IPv4(buildIPv4(ipv4Spec{ttl: 255, proto: ProtoUDP, src: podA, dst: podB}, nil))
	got := testing.AllocsPerRun(100, func() {
		if b.TTL() == 1 {
			b[ipv4TTL] = 255
			b.ComputeChecksum()
		}
		b.DecrementTTL()
	})
	if got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}

func TestParseErrorString(t *testing.T) {
	seen := map[string]bool{}
	for e := ParseOK; e < numParseErrors; e++ {
		s := e.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("ParseError(%d).String() = %q: empty, unknown or duplicate", e, s)
		}
		seen[s] = true
	}
	if got := numParseErrors.String(); got != "unknown" {
		t.Errorf("out of range: got %q, want unknown", got)
	}
	if got, want := ErrBadIHL.String(), "bad-ihl"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
