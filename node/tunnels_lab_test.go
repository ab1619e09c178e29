package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	"podnet/router"
	vswitch "podnet/switch"
)

// TestUnusedTunnelsClosedLab: a node opens the sockets of the
// encapsulations its pools use and no others (issue: in an IP-in-IP
// cluster any local user could send VXLAN to port 4789), opens VXLAN when
// a pool switches to it, and closes IP-in-IP once no pool uses it and
// the grace period has passed.
func TestUnusedTunnelsClosedLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapIPIP, DaemonArgs: []string{"--tunnel-grace", "2s"}})
	ctx := context.Background()
	ip2 := l.PodIP("test-2")
	vxlanSocket := func() bool {
		out, err := l.Output(ctx, "worker1", "ss", "-Hunl", "sport = :4789")
		if err != nil {
			t.Fatalf("ss on worker1: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out)) != ""
	}
	ipipSocket := func() bool {
		out, err := l.Output(ctx, "worker1", "ss", "-Hwnl")
		if err != nil {
			t.Fatalf("ss on worker1: %v\n%s", err, out)
		}
		// A raw socket shows its protocol as the local "port": 4 for IP-in-IP.
		return strings.Contains(string(out), ":4 ")
	}
	ports := func() string {
		var names []string
		var all []vswitch.PortStats
		if err := nodeClient(t, l, "worker1").Get(nodeapi.PathPorts, &all); err != nil {
			t.Fatal(err)
		}
		for _, p := range all {
			if p.Kind == "underlay" {
				names = append(names, p.Device)
			}
		}
		return strings.Join(names, ",")
	}
	waitFor(t, 30*time.Second, "IP-in-IP route", func() string {
		if r, ok := routeTo(t, l, "worker1", blockOf(l, "test-2")); !ok || r.Encap != router.EncapIPIP {
			return fmt.Sprintf("route %+v", r)
		}
		return ""
	})
	ping(t, l, "test-1", ip2)
	if vxlanSocket() || ports() != "ipip" || !ipipSocket() {
		t.Fatalf("IP-in-IP pool: VXLAN socket open %v, IP-in-IP socket open %v, tunnels %q; want only ipip", vxlanSocket(), ipipSocket(), ports())
	}

	if out, err := l.Output(ctx, "worker1", "podnet", "patch", "ippool", "default-ipv4-ippool", "-p",
		`{"spec":{"ipipMode":"Never","vxlanMode":"Always"}}`); err != nil {
		t.Fatalf("patch: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "VXLAN open, IP-in-IP closed after its grace", func() string {
		if r, ok := routeTo(t, l, "worker1", blockOf(l, "test-2")); !ok || r.Encap != router.EncapVXLAN {
			return fmt.Sprintf("route %+v", r)
		}
		if !vxlanSocket() || ipipSocket() || ports() != "vxlan" {
			return fmt.Sprintf("VXLAN socket %v, IP-in-IP socket %v, tunnels %q", vxlanSocket(), ipipSocket(), ports())
		}
		return ""
	})
	ping(t, l, "test-1", ip2)
}
