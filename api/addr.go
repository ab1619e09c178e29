package api

import (
	"fmt"
	"net/netip"
)

// reservedRange is an IPv4 range that can hold no pod address: its
// addresses never reach a pod through a router, or mean something else
// to every host on the way.
type reservedRange struct {
	prefix netip.Prefix
	what   string // names the range in errors
}

var linkLocal4 = netip.MustParsePrefix("169.254.0.0/16")
var linkLocal6 = netip.MustParsePrefix("fe80::/10")

// reservedIPv4 are the ranges refused as pool CIDRs and as pod addresses.
// Link local matters beyond the RFC: every pod's default gateway,
// 169.254.1.1, lives there.
var reservedIPv4 = []reservedRange{
	{netip.MustParsePrefix("0.0.0.0/8"), "the \"this network\" range 0.0.0.0/8"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the loopback range 127.0.0.0/8"},
	{linkLocal4, "IPv4 Link Local range 169.254.0.0/16"},
	{netip.MustParsePrefix("224.0.0.0/4"), "the multicast range 224.0.0.0/4"},
	{netip.MustParsePrefix("240.0.0.0/4"), "the reserved range 240.0.0.0/4 (and the limited broadcast 255.255.255.255)"},
}

// MinPoolPrefixLenIPv4 is the shortest IPv4 pool prefix accepted: a
// /0 to /7 pool would take in most of the Internet and make every
// destination a pod address, so nothing would be NATed or routed out.
const MinPoolPrefixLenIPv4 = 8

// ValidatePodIPv4 returns why a cannot be a pod's address, or nil. It
// applies the rules of pool CIDRs (IPPool.Validate) to one address, so
// that an address given by hand (pod add --ip) passes the same checks as
// one IPAM hands out.
func ValidatePodIPv4(a netip.Addr) error {
	if !a.Is4() {
		return fmt.Errorf("%s is not an IPv4 address", a)
	}
	for _, r := range reservedIPv4 {
		if r.prefix.Contains(a) {
			return fmt.Errorf("%s is in %s, which cannot hold pod addresses", a, r.what)
		}
	}
	return nil
}

// checkPoolRangeIPv4 adds an error to fe for each reason the IPv4 prefix
// p, the CIDR of a pool, cannot hold pod addresses.
func checkPoolRangeIPv4(fe *fieldErrors, field, cidr string, p netip.Prefix) {
	if p.Bits() < MinPoolPrefixLenIPv4 {
		fe.add(field, cidr, fmt.Sprintf("IPPool CIDR is too broad: the prefix length must be at least /%d", MinPoolPrefixLenIPv4))
	}
	for _, r := range reservedIPv4 {
		if p.Overlaps(r.prefix) {
			fe.add(field, cidr, "IPPool CIDR overlaps with "+r.what)
		}
	}
}
