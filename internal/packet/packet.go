// Package packet holds wire-format views, checksums, virtio-net headers,
// GSO segmentation and builders for the packets the switch generates.
//
// Every view is a []byte with named offsets, as in gVisor's header package.
// Views do not check bounds on each access: validate once where bytes enter
// (ParseIPv4Frame, ParseARPFrame, IPv4.Validate, ARP.IsValid,
// ValidateTransport) and count the ParseError as a drop reason; after that
// the accessors may be used freely. Builders and the GSO code never panic on
// wire bytes: they check what they read themselves.
//
// The package is pure logic. It makes no syscalls and does not import x/sys,
// so it can be tested and fuzzed anywhere. Only IPv4 is handled at L3; IPv6
// is an EtherType the caller counts and drops.
package packet
