package resources

import (
	"context"
	"errors"
	"testing"

	"podnet/api"
	"podnet/datastore"
)

func nodeAt(name, ipv4Address string) *api.Node {
	n := api.NewNode(name)
	if ipv4Address != "" {
		n.Spec.BGP = &api.NodeBGPSpec{IPv4Address: ipv4Address}
	}
	return n
}

// mustBeAbsent fails unless no resource of kind by name is stored.
func mustBeAbsent(t *testing.T, c *Client, kind, name string) {
	t.Helper()
	if _, err := c.Get(context.Background(), kind, name); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("%s(%s): got %v, want not found (nothing written)", kind, name, err)
	}
}

// TestPoolReservedRangesRefused: on a real etcd, create and apply refuse a
// pool in a reserved range before writing anything. A 127.0.0.0/24 pool
// once made IPAM hand out 127.0.0.128.
func TestPoolReservedRangesRefused(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	for _, tt := range []struct{ cidr, want string }{
		{"127.0.0.0/24", "error with field IPPool.Spec.CIDR = '127.0.0.0/24' (IPPool CIDR overlaps with the loopback range 127.0.0.0/8)"},
		{"224.1.0.0/24", "(IPPool CIDR overlaps with the multicast range 224.0.0.0/4)"},
		{"255.255.255.0/24", "(IPPool CIDR overlaps with the reserved range 240.0.0.0/4 (and the limited broadcast 255.255.255.255))"},
		{"0.0.0.0/1", "-  IPPool.Spec.CIDR = '0.0.0.0/1' (IPPool CIDR is too broad: the prefix length must be at least /8)"},
		{"169.254.0.0/24", "(IPPool CIDR overlaps with IPv4 Link Local range 169.254.0.0/16)"},
	} {
		_, err := c.Create(ctx, newPool("reserved", tt.cidr))
		wantErr(t, err, tt.want)
		_, err = c.Apply(ctx, newPool("reserved", tt.cidr))
		wantErr(t, err, tt.want)
		mustBeAbsent(t, c, api.KindIPPool, "reserved")
	}
}

// TestPoolUnderlayOverlap: a pool may not overlap any node's underlay
// subnet (spec.bgp.ipv4Address with its prefix length), whether the
// Node is stored or written by the same request; nothing is written.
func TestPoolUnderlayOverlap(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	if _, err := c.CreateAll(ctx, []api.Resource{
		nodeAt("worker1", "10.77.0.11/24"),
		nodeAt("worker2", "172.20.5.9/16"),
		nodeAt("bare", ""), // no BGP spec: no subnet to compare
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ cidr, want string }{
		{"10.77.0.0/24", "error with field IPPool.Spec.CIDR = '10.77.0.0/24' (IPPool(under) CIDR overlaps with the underlay subnet 10.77.0.0/24 of Node(worker1) (spec.bgp.ipv4Address 10.77.0.11/24))"},
		{"10.77.0.128/25", "overlaps with the underlay subnet 10.77.0.0/24 of Node(worker1)"},
		{"10.0.0.0/8", "overlaps with the underlay subnet 10.77.0.0/24 of Node(worker1)"},
		{"172.20.200.0/24", "overlaps with the underlay subnet 172.20.0.0/16 of Node(worker2) (spec.bgp.ipv4Address 172.20.5.9/16)"},
	} {
		_, err := c.Create(ctx, newPool("under", tt.cidr))
		wantErr(t, err, tt.want)
		var ve *api.ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%s: got %T, want a *api.ValidationError", tt.cidr, err)
		}
		_, err = c.Apply(ctx, newPool("under", tt.cidr))
		wantErr(t, err, tt.want)
		mustBeAbsent(t, c, api.KindIPPool, "under")
	}
	// Next to the subnets is fine.
	if _, err := c.Create(ctx, newPool("beside", "10.78.0.0/16")); err != nil {
		t.Fatalf("pool beside the underlay: %v", err)
	}

	// A Node written earlier in the same request counts, and the refusal
	// writes neither resource.
	_, err := c.ApplyAll(ctx, []api.Resource{nodeAt("worker3", "10.90.1.13/24"), newPool("with-node", "10.90.0.0/16")})
	wantErr(t, err, "IPPool(with-node): error with field IPPool.Spec.CIDR = '10.90.0.0/16' (IPPool(with-node) CIDR overlaps with the underlay subnet 10.90.1.0/24 of Node(worker3)")
	mustBeAbsent(t, c, api.KindNode, "worker3")
	mustBeAbsent(t, c, api.KindIPPool, "with-node")
	// ... and so does its new address when it moves a stored Node away.
	if _, err := c.ApplyAll(ctx, []api.Resource{nodeAt("worker2", "10.91.0.12/24"), newPool("old-subnet", "172.20.0.0/16")}); err != nil {
		t.Fatalf("pool on a subnet the same request moves worker2 off: %v", err)
	}
}
