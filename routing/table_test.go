package routing

import (
	"net/netip"
	"slices"
	"testing"

	"podnet/router"
)

func TestTableRoutes(t *testing.T) {
	remote := []router.Route{
		{Prefix: prefix("192.168.5.0/26"), Kind: router.KindRemote, Encap: router.EncapIPIP, Dev: DevIPIP, NextHop: addr("10.0.0.2")},
		// Overlaps this node's block: the blackhole wins.
		{Prefix: prefix("192.168.9.0/26"), Kind: router.KindRemote, Encap: router.EncapIPIP, Dev: DevIPIP, NextHop: addr("10.0.0.3")},
		// A learned default route comes before NAT outgoing.
		{Prefix: prefix("0.0.0.0/0"), Kind: router.KindHost, Dev: "podnet0", NextHop: addr("10.0.0.254")},
	}
	tab := Table{
		Pods:      []LocalPod{{Name: "a", IP: addr("192.168.9.1"), Port: 3}, {Name: "b", IP: addr("192.168.9.2"), Port: 4}},
		HostAddrs: []netip.Addr{addr("10.0.0.1"), addr("192.168.9.1")}, // a pod address on the node: the pod wins
		NodeAddrs: []netip.Addr{addr("10.0.0.2"), addr("10.0.0.1")},    // same as a host address: host wins
		OwnBlocks: []netip.Prefix{prefix("192.168.9.0/26")},
		Remote:    remote,
		HostDev:   "podnet0",
	}
	want := []router.Route{
		{Prefix: prefix("192.168.9.1/32"), Kind: router.KindLocalPod, Port: 3, Dev: "a", Source: "local"},
		{Prefix: prefix("192.168.9.2/32"), Kind: router.KindLocalPod, Port: 4, Dev: "b", Source: "local"},
		{Prefix: prefix("10.0.0.1/32"), Kind: router.KindHost, Dev: "podnet0", Source: "host"},
		{Prefix: prefix("10.0.0.2/32"), Kind: router.KindHost, Dev: "podnet0", Source: "node"},
		{Prefix: prefix("192.168.9.0/26"), Kind: router.KindBlackhole, Source: "ipam block"},
		remote[0],
		remote[2],
	}
	got := tab.Routes()
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
	if _, err := router.NewTable(got); err != nil {
		t.Fatalf("the routes do not make a table: %v", err)
	}

	// An empty node still sends the rest of the world to NAT outgoing.
	got = Table{HostDev: "podnet0"}.Routes()
	want = []router.Route{{Prefix: prefix("0.0.0.0/0"), Kind: router.KindNAT, Dev: DevNAT, Source: "nat-outgoing"}}
	if !slices.Equal(got, want) {
		t.Fatalf("empty: got %v, want %v", got, want)
	}
}
