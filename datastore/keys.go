package datastore

import (
	"fmt"
	"net/netip"
	"strings"
)

// The key layout, modelled on Calico's etcd v3 layout (the IPAM keys
// keep Calico's names, so a reader of one recognises the other):
//
//	/podnet/resources/v3/<plural kind>/<name>          resources (IPPool, Node, ...)
//	/podnet/ipam/v2/assignment/ipv4/block/<a.b.c.d-nn> allocation blocks
//	/podnet/ipam/v2/host/<node>/ipv4/block/<a.b.c.d-nn> block affinities
//	/podnet/ipam/v2/handle/<handle id>                 handles
//	/podnet/ipam/v2/config/default                     IPAM configuration
//	/podnet/nodes-alive/<node>                         daemon liveness (leases)

// cidrName turns a CIDR into a key segment: "/" becomes "-".
func cidrName(s string) string { return strings.ReplaceAll(s, "/", "-") }

// cidrFromName is the inverse of cidrName for IPv4 CIDRs.
func cidrFromName(s string) string {
	if i := strings.LastIndex(s, "-"); i >= 0 {
		return s[:i] + "/" + s[i+1:]
	}
	return s
}

// Resources is the collection of resources of one kind; plural is the
// lower-case plural kind name, e.g. "ippools".
func (s *Store) Resources(plural string) Collection {
	return Collection{s: s, prefix: Root + "/resources/v3/" + plural + "/", encode: identity, decode: identity}
}

// IPAMBlocks holds allocation blocks, named by CIDR ("10.0.0.0/26").
func (s *Store) IPAMBlocks() Collection {
	return Collection{s: s, prefix: Root + "/ipam/v2/assignment/ipv4/block/", encode: cidrName, decode: cidrFromName}
}

// BlockNamePrefix is a name prefix that every block inside cidr has in
// IPAMBlocks (blocks are named by their dotted address): cidr's whole
// octets, e.g. "10.0." for 10.0.0.0/16 or 10.0.0.0/17. It may take in
// blocks beside cidr as well, never fewer; "" for a cidr shorter than /8.
func BlockNamePrefix(cidr netip.Prefix) string {
	a := cidr.Masked().Addr().As4()
	var b strings.Builder
	for i := range min(cidr.Bits()/8, 3) {
		fmt.Fprintf(&b, "%d.", a[i])
	}
	return b.String()
}

// IPAMAffinities holds block affinities, named "<node>/<cidr>". List with
// namePrefix "<node>/" to get one node's.
func (s *Store) IPAMAffinities() Collection {
	enc := func(n string) string {
		node, cidr, ok := strings.Cut(n, "/")
		if !ok {
			return n
		}
		return node + "/ipv4/block/" + cidrName(cidr)
	}
	dec := func(k string) string {
		node, rest, ok := strings.Cut(k, "/ipv4/block/")
		if !ok {
			return k
		}
		return node + "/" + cidrFromName(rest)
	}
	return Collection{s: s, prefix: Root + "/ipam/v2/host/", encode: enc, decode: dec}
}

// IPAMHandles holds allocation handles, named by handle ID.
func (s *Store) IPAMHandles() Collection {
	return Collection{s: s, prefix: Root + "/ipam/v2/handle/", encode: identity, decode: identity}
}

// IPAMConfig holds the IPAM configuration, one object named "default".
func (s *Store) IPAMConfig() Collection {
	return Collection{s: s, prefix: Root + "/ipam/v2/config/", encode: identity, decode: identity}
}
