package node

import (
	"net/netip"
	"os"
	"reflect"
	"testing"

	"podnet/api"
)

// TestViewCache: what reconcile read comes back from view.json as it
// was, and an unchanged read does not rewrite the file.
func TestViewCache(t *testing.T) {
	n, err := New(Config{Name: "worker1", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if in, err := n.loadViewCache(); in != nil || err != nil {
		t.Fatalf("no cache yet: got %+v, %v", in, err)
	}
	pool := api.DefaultIPPool()
	pool.Spec.IPIPMode = api.EncapAlways
	self := api.NewNode("worker1")
	self.Spec.VXLANTunnelMACAddr = "66:00:00:00:00:01"
	in := dsInputs{
		Pools: []*api.IPPool{pool}, Nodes: []*api.Node{self, api.NewNode("worker2")},
		Blocks:   []netip.Prefix{netip.MustParsePrefix("192.168.7.0/26")},
		Borrowed: []netip.Addr{netip.MustParseAddr("192.168.9.3")},
	}
	c := &viewCache{path: n.viewCachePath()}
	c.save(n, in)
	got, err := n.loadViewCache()
	if err != nil || got == nil {
		t.Fatalf("load: %+v, %v", got, err)
	}
	if got.Saved.IsZero() {
		t.Fatal("saved time not set")
	}
	want := in
	want.Saved = got.Saved
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("cache round trip:\ngot  %+v\nwant %+v", *got, want)
	}
	// A write replaces the file (writeFileAtomic renames a new one in).
	st1, err := os.Stat(n.viewCachePath())
	if err != nil {
		t.Fatal(err)
	}
	c.save(n, in)
	st2, err := os.Stat(n.viewCachePath())
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(st1, st2) {
		t.Fatal("an unchanged read rewrote the cache")
	}

	s := newState()
	n.useCachedView(s, got)
	if !s.overheadKnown || s.view.overhead != 20 {
		t.Fatalf("overhead from the cached pools: %d (known %v), want 20", s.view.overhead, s.overheadKnown)
	}
	if n.vtepMAC().String() != "66:00:00:00:00:01" {
		t.Fatalf("VXLAN MAC from the cached Node: %s", n.vtepMAC())
	}
}
