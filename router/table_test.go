package router

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// slowLookup is the obviously correct twin of Table.Lookup: a linear scan
// for the longest containing prefix.
func slowLookup(routes []Route, a netip.Addr) (Route, bool) {
	best, found := Route{}, false
	for _, r := range routes {
		if r.Prefix.Contains(a) && (!found || r.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

func randAddr(r *rand.Rand) netip.Addr {
	// Concentrate on a few /8s so prefixes and addresses overlap often.
	return netip.AddrFrom4([4]byte{byte(10 + r.IntN(3)), byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
}

func TestLookupMatchesLinearScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		var routes []Route
		seen := map[netip.Prefix]bool{}
		for i := 0; i < 200; i++ {
			p := netip.PrefixFrom(randAddr(r), 8+r.IntN(25)).Masked()
			if seen[p] {
				continue
			}
			seen[p] = true
			routes = append(routes, Route{Prefix: p, Kind: Kind(r.IntN(4)), Port: i})
		}
		tab, err := NewTable(routes)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2000; i++ {
			a := randAddr(r)
			want, wok := slowLookup(routes, a)
			got, gok := tab.Lookup(a)
			if gok != wok {
				t.Fatalf("Lookup(%s) found=%v, want %v", a, gok, wok)
			}
			if gok && (got.Prefix != want.Prefix || got.Port != want.Port) {
				t.Fatalf("Lookup(%s) = %s, want %s", a, got.Prefix, want.Prefix)
			}
		}
	}
}

func TestNewTableRejects(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   string
	}{
		{"host bits", []Route{{Prefix: netip.MustParsePrefix("10.0.0.1/24")}}, "host bits"},
		{"duplicate", []Route{{Prefix: netip.MustParsePrefix("10.0.0.0/24")}, {Prefix: netip.MustParsePrefix("10.0.0.0/24")}}, "duplicate"},
		{"invalid", []Route{{}}, "invalid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTable(tt.routes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestLookupAllocs(t *testing.T) {
	tab, _ := NewTable([]Route{{Prefix: netip.MustParsePrefix("192.168.0.0/16")}, {Prefix: netip.MustParsePrefix("192.168.1.2/32"), Kind: KindLocalPod}})
	var s Snapshot
	s.Store(tab)
	a := netip.MustParseAddr("192.168.1.2")
	if n := testing.AllocsPerRun(1000, func() { s.Load().Lookup(a) }); n != 0 {
		t.Fatalf("got %v allocs per lookup, want 0", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	var routes []Route
	for i := 0; i < 1000; i++ {
		routes = append(routes, Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i / 4), byte(i % 4 * 64)}), 26)})
	}
	tab, _ := NewTable(routes)
	a := netip.MustParseAddr("192.168.100.70")
	b.ReportAllocs()
	for b.Loop() {
		tab.Lookup(a)
	}
}
