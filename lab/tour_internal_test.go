package lab

import (
	"errors"
	"net/netip"
	"testing"
)

// The encapsulation and TTL the tour expects between its two nodes, for
// each pool mode, in one subnet and across two.
func TestTourExpectations(t *testing.T) {
	tests := []struct {
		modes      poolModes
		sameSubnet bool
		encap      string
		ttl        int
	}{
		{poolModes{"Always", "Never"}, true, EncapIPIP, 62},
		{poolModes{"Never", "Always"}, false, EncapVXLAN, 62},
		{poolModes{"CrossSubnet", "Never"}, true, EncapNone, 60},
		{poolModes{"CrossSubnet", "Never"}, false, EncapIPIP, 62},
		{poolModes{"Never", "CrossSubnet"}, false, EncapVXLAN, 62},
		{poolModes{"Never", "Never"}, true, EncapNone, 60},
		{poolModes{"Never", "Never"}, false, EncapNone, 59}, // the fabric's router too
	}
	for _, tt := range tests {
		got := tt.modes.between(tt.sameSubnet)
		if got != tt.encap || farTTL(got, tt.sameSubnet) != tt.ttl {
			t.Errorf("%+v, same subnet %v: %s with TTL %d, want %s with TTL %d", tt.modes, tt.sameSubnet, got, farTTL(got, tt.sameSubnet), tt.encap, tt.ttl)
		}
	}
}

// checkOuter fails a capture that does not show what the pool asks for:
// plain routing must show the pods' own packet and no tunnel.
func TestCheckOuter(t *testing.T) {
	n1, n2 := netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12")
	p1, p2 := netip.MustParseAddr("192.168.15.193"), netip.MustParseAddr("192.168.124.129")
	ipip := "IP 10.77.0.12 > 10.77.0.11: IP 192.168.15.193 > 192.168.124.129: ICMP echo request, id 1, seq 1, length 64\n"
	vxlan := "IP 10.77.0.12.38938 > 10.77.0.11.4789: VXLAN, flags [I] (0x08), vni 4096\nIP 192.168.15.193 > 192.168.124.129: ICMP echo request, id 1, seq 1, length 64\n"
	plain := "IP 192.168.15.193 > 192.168.124.129: ICMP echo request, id 1, seq 1, length 64\n"
	tests := []struct {
		dump, encap string
		ok          bool
	}{
		{ipip, EncapIPIP, true},
		{vxlan, EncapVXLAN, true},
		{plain, EncapNone, true},
		{vxlan, EncapNone, false}, // an echo request is there, inside VXLAN
		{ipip, EncapNone, false},
		{plain, EncapIPIP, false},
		{ipip, EncapVXLAN, false},
		{"", EncapNone, false},
	}
	for i, tt := range tests {
		err := checkOuter(tt.dump, tt.encap, n2, n1, p1, p2)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrTourCheck)) {
			t.Errorf("case %d (%s): %v, want ok %v", i, tt.encap, err, tt.ok)
		}
	}
}
