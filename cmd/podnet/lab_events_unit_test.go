package main

import (
	"slices"
	"strings"
	"testing"
)

func TestRouteEventLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string // "" = not an event
	}{
		{`time=2026-11-26T15:23:25.909Z level=INFO msg="route added" component=node node=worker1 prefix=192.168.15.192/26 peer=10.77.0.12 nextHop=10.77.0.12`,
			"worker1    route added     192.168.15.192/26 from peer 10.77.0.12, next hop 10.77.0.12"},
		{`time=2026-11-26T15:23:25.909Z level=INFO msg="route withdrawn" prefix=10.0.0.0/26 peer=10.77.0.12 nextHop=10.77.0.13`,
			"worker1    route withdrawn 10.0.0.0/26 from peer 10.77.0.12, next hop 10.77.0.13"},
		{`time=2026-11-26T15:23:25.909Z level=INFO msg="route events not logged" added=7 withdrawn=0 reason="rate limit (too many route changes)"`,
			"worker1    7 more added and 0 more withdrawn routes not logged (rate limit)"},
		{`time=2026-11-26T15:23:25.909Z level=INFO msg="pod added" pod=test-1`, ""},
		{`time=2026-11-26T15:23:25.909Z level=INFO msg="a \"route added\" quote" x=1`, ""},
		{`--- 2026-11-26T15:23:22Z lab: nsenter ...`, ""},
		{``, ""},
	} {
		got, ok := routeEventLine("worker1", tc.line)
		if ok != (tc.want != "") || (ok && !strings.HasSuffix(got, "  "+tc.want)) {
			t.Errorf("routeEventLine(%q) = %q, %v; want ...%q", tc.line, got, ok, tc.want)
		}
	}
}

func TestPoolChanges(t *testing.T) {
	old := poolSpec{"cidr": "192.168.0.0/16", "ipipMode": "Always", "blockSize": "26"}
	for _, tc := range []struct {
		name     string
		old, now poolSpec
		want     []string
	}{
		{"mode", old, poolSpec{"cidr": "192.168.0.0/16", "ipipMode": "Never", "blockSize": "26"},
			[]string{"pool p: ipipMode Always → Never"}},
		{"mode dropped means Never", old, poolSpec{"cidr": "192.168.0.0/16", "vxlanMode": "Always", "blockSize": "26"},
			[]string{"pool p: ipipMode Always → Never", "pool p: vxlanMode Never → Always"}},
		{"disabled", old, poolSpec{"cidr": "192.168.0.0/16", "ipipMode": "Always", "blockSize": "26", "disabled": "true"},
			[]string{"pool p: disabled false → true"}},
		{"same", old, old, nil},
		{"created", nil, old, []string{"pool p created: cidr 192.168.0.0/16, ipipMode Always, vxlanMode Never"}},
		{"deleted", old, nil, []string{"pool p deleted (cidr 192.168.0.0/16)"}},
	} {
		if got := poolChanges("p", tc.old, tc.now); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
