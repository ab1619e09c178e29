package router

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"podnet/internal/packet"
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

// TestRouteJSON pins the wire form of a route in the daemon's API: kinds,
// encapsulations and the VTEP MAC as text.
func TestRouteJSON(t *testing.T) {
	r := Route{Prefix: netip.MustParsePrefix("192.168.9.0/26"), Kind: KindRemote, Dev: "vxlan",
		NextHop: netip.MustParseAddr("10.0.0.2"), Encap: EncapVXLAN,
		NextHopMAC: packet.MAC{0x66, 0x0a, 0xbb, 0x01, 0x02, 0xff}, Source: "bgp 10.0.0.2"}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"prefix":"192.168.9.0/26","kind":"remote","dev":"vxlan","nextHop":"10.0.0.2","encap":"vxlan","nextHopMAC":"66:0a:bb:01:02:ff","source":"bgp 10.0.0.2"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back Route
	if err := json.Unmarshal(b, &back); err != nil || back != r {
		t.Fatalf("round trip: got %+v, %v, want %+v", back, err, r)
	}
	// No MAC: the field is left out.
	b, _ = json.Marshal(Route{Prefix: r.Prefix, Kind: KindHost})
	if strings.Contains(string(b), "nextHopMAC") {
		t.Fatalf("zero MAC marshalled: %s", b)
	}
	if err := json.Unmarshal([]byte(`{"nextHopMAC":"66:0a:bb"}`), &back); err == nil {
		t.Fatal("short MAC accepted")
	}
}
