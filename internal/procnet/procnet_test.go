package procnet

import (
	"errors"
	"testing"
)

// A stretch of a real /proc/net/snmp and /proc/net/netstat (6.18).
const text = `Ip: Forwarding DefaultTTL InReceives OutTransmits
Ip: 1 64 1234 5678
Udp: InDatagrams NoPorts InErrors OutDatagrams
Udp: 10 2 0 12
IpExt: InNoRoutes InTruncatedPkts InCEPkts
IpExt: 0 0 42
`

func TestCounter(t *testing.T) {
	for _, tc := range []struct {
		section, name string
		want          uint64
	}{
		{"Ip", "OutTransmits", 5678},
		{"Ip", "Forwarding", 1},
		{"Udp", "OutDatagrams", 12},
		{"IpExt", "InCEPkts", 42},
	} {
		if got, err := Counter(text, tc.section, tc.name); err != nil || got != tc.want {
			t.Errorf("%s %s: %d, %v; want %d", tc.section, tc.name, got, err, tc.want)
		}
	}
	for _, missing := range [][2]string{{"Ip", "NoSuchCounter"}, {"Tcp", "ActiveOpens"}, {"I", "Forwarding"}} {
		if _, err := Counter(text, missing[0], missing[1]); !errors.Is(err, ErrNoCounter) {
			t.Errorf("%s %s: %v, want ErrNoCounter", missing[0], missing[1], err)
		}
	}
	if _, err := Counter("Ip: OutTransmits\nIp: x\n", "Ip", "OutTransmits"); err == nil || errors.Is(err, ErrNoCounter) {
		t.Errorf("a value that is no number: %v, want a parse error", err)
	}
}
