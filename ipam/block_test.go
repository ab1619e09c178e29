package ipam

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestBlockAssignLowestFree(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/30"), "n1", t0)
	attrs := map[string]string{"node": "n1"}
	var got []netip.Addr
	for range 4 {
		ip, err := b.assignNext("h", attrs)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip)
	}
	want := []netip.Addr{
		netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (network and broadcast addresses are usable)", got, want)
	}
	if _, err := b.assignNext("h", attrs); !errors.Is(err, errBlockFull) {
		t.Fatalf("fifth assign: got %v, want errBlockFull", err)
	}
	if len(b.Attributes) != 1 {
		t.Fatalf("got %d attribute entries, want 1 shared by equal handle and attrs", len(b.Attributes))
	}
	// Release 2 then 1: the next allocation takes the lowest, 1.
	for _, o := range []int{2, 1} {
		if h, ok := b.release(o); !ok || h != "h" {
			t.Fatalf("release %d: got %q %v, want h true", o, h, ok)
		}
	}
	if _, ok := b.release(1); ok {
		t.Fatal("second release of ordinal 1 succeeded")
	}
	if ip, _ := b.assignNext("h2", nil); ip != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("after release: got %v, want 10.0.0.1", ip)
	}
	if b.inUse() != 3 || b.free() != 1 {
		t.Fatalf("got inUse %d free %d, want 3 1", b.inUse(), b.free())
	}
}

func TestBlockAssignOrdinal(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.1.0.64/26"), "", t0)
	o, ok := b.ordinal(netip.MustParseAddr("10.1.0.100"))
	if !ok || o != 36 {
		t.Fatalf("ordinal: got %d %v, want 36 true", o, ok)
	}
	if _, ok := b.ordinal(netip.MustParseAddr("10.1.0.128")); ok {
		t.Fatal("ordinal of an address outside the block succeeded")
	}
	if err := b.assign(o, "pod.a", map[string]string{"pod": "a"}); err != nil {
		t.Fatal(err)
	}
	err := b.assign(o, "pod.b", nil)
	if !errors.Is(err, ErrAlreadyAssigned) || !strings.Contains(err.Error(), "10.1.0.100 is already assigned (handle pod.a)") {
		t.Fatalf("second assign: got %v, want already assigned naming pod.a", err)
	}
	if b.addr(o) != netip.MustParseAddr("10.1.0.100") {
		t.Fatalf("addr: got %v", b.addr(o))
	}
}

func TestBlockReleaseHandleCompacts(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/29"), "n1", t0)
	for _, h := range []string{"a", "b", "a", "c", "b"} {
		if _, err := b.assignNext(h, map[string]string{"pod": h}); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.releaseHandle("b"); n != 2 {
		t.Fatalf("releaseHandle b: got %d, want 2", n)
	}
	b.compact()
	var hs []string
	for _, a := range b.Attributes {
		hs = append(hs, *a.HandleID)
	}
	if want := []string{"a", "c"}; !slices.Equal(hs, want) {
		t.Fatalf("attributes after compact: got %v, want %v", hs, want)
	}
	for o, want := range []string{"a", "", "a", "c", "", "", "", ""} {
		if got := b.handleOf(o); got != want {
			t.Errorf("ordinal %d: got handle %q, want %q", o, got, want)
		}
	}
	if want := []int{1, 4, 5, 6, 7}; !slices.Equal(b.Unallocated, want) {
		t.Fatalf("unallocated: got %v, want %v", b.Unallocated, want)
	}
}

func TestBlockJSON(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/30"), "n1", t0)
	b.SequenceNumber = 7
	if err := b.assign(1, "pod.n1.x", map[string]string{"node": "n1", "pod": "x"}); err != nil {
		t.Fatal(err)
	}
	data := b.encode()
	// Calico's AllocationBlock field names (docs/calico-conventions.md §2.2).
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cidr", "affinity", "allocations", "unallocated", "attributes", "sequenceNumber", "deleted", "affinity_claim_time"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("field %q missing from %s", k, data)
		}
	}
	want := `"cidr":"10.0.0.0/30","affinity":"host:n1"`
	if !strings.Contains(string(data), want) {
		t.Errorf("got %s, want it to contain %s", data, want)
	}
	for _, want := range []string{
		`"allocations":[null,0,null,null]`,
		`"unallocated":[0,2,3]`,
		`"attributes":[{"handle_id":"pod.n1.x","secondary":{"node":"n1","pod":"x"}}]`,
		`"sequenceNumber":7`,
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("got %s, want it to contain %s", data, want)
		}
	}
	got, err := decodeBlock(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("round trip: got %+v, want %+v", got, b)
	}
}

func TestDecodeBlockCalico(t *testing.T) {
	// As Calico writes it: released ordinals appended at the end, no
	// affinity, legacy fields we ignore.
	data := `{"cidr":"10.65.79.0/30","affinity":null,"allocations":[0,null,null,1],
		"unallocated":[2,1],"attributes":[{"handle_id":"k8s-pod-network.abc","secondary":{"namespace":"default","node":"w1","pod":"nginx"}},
		{"handle_id":"ipip-tunnel-addr-w1","secondary":{"node":"w1","type":"ipipTunnelAddress"}}],
		"sequenceNumber":1700000000000000000,"sequenceNumberForAllocation":{"0":1,"3":2},"deleted":false,"hostAffinity":null}`
	b, err := decodeBlock([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := b.nextFree(); o != 1 {
		t.Fatalf("next free: got %d, want 1 (lowest)", o)
	}
	if b.owner() != "" || b.handleOf(3) != "ipip-tunnel-addr-w1" || b.inUse() != 2 {
		t.Fatalf("got owner %q handle %q inUse %d", b.owner(), b.handleOf(3), b.inUse())
	}
}

func TestDecodeBlockBad(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"not json", `{`, "decode block"},
		{"bad cidr", `{"cidr":"10.0.0.1/30","allocations":[null,null,null,null],"unallocated":[0,1,2,3]}`, "bad cidr"},
		{"ipv6", `{"cidr":"fd00::/126","allocations":[null,null,null,null],"unallocated":[0,1,2,3]}`, "bad cidr"},
		{"short", `{"cidr":"10.0.0.0/30","allocations":[null],"unallocated":[0]}`, "1 allocation entries, want 4"},
		{"attr index", `{"cidr":"10.0.0.0/30","allocations":[3,null,null,null],"unallocated":[1,2,3],"attributes":[]}`, "attribute index 3"},
		{"free count", `{"cidr":"10.0.0.0/30","allocations":[null,null,null,null],"unallocated":[0,1,2]}`, "3 unallocated entries for 4 free"},
		{"used listed free", `{"cidr":"10.0.0.0/30","allocations":[0,null,null,null],"unallocated":[0,1,2],"attributes":[{}]}`, "not free"},
		{"duplicate", `{"cidr":"10.0.0.0/30","allocations":[null,null,null,null],"unallocated":[0,1,2,2]}`, "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeBlock([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// FuzzDecodeBlock: whatever is stored, a block that decodes keeps its
// invariants through allocation, release and re-encoding.
func FuzzDecodeBlock(f *testing.F) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/29"), "n1", t0)
	b.assignNext("h", map[string]string{"node": "n1"})
	f.Add(b.encode())
	f.Add([]byte(`{"cidr":"10.65.79.0/30","allocations":[0,null,null,1],"unallocated":[2,1],"attributes":[{"handle_id":"a"},{"handle_id":"b"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBlock(data)
		if err != nil {
			return
		}
		for b.free() > 0 {
			before := b.free()
			ip, err := b.assignNext("f", nil)
			if err != nil || !b.prefix.Contains(ip) || b.free() != before-1 {
				t.Fatalf("assign: %v %v free %d→%d", ip, err, before, b.free())
			}
		}
		b.releaseHandle("f")
		b.compact()
		if _, err := decodeBlock(b.encode()); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
