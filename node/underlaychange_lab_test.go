package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestUnderlayAddressChange: the daemon reads its underlay address once;
// when the host loses it (DHCP gave another), `podnet status` says so
// and what to do, and stops saying it once the address is back.
func TestUnderlayAddressChange(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: lab.NoPods})
	ctx := context.Background()
	status := func() string {
		out, _ := l.Output(ctx, "worker1", "podnet", "status")
		return string(out)
	}
	exec := func(args ...string) {
		t.Helper()
		if out, err := l.Output(ctx, "worker1", args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	exec("ip", "addr", "add", "10.77.0.21/24", "dev", "eth0")
	exec("ip", "addr", "del", "10.77.0.11/24", "dev", "eth0")
	waitFor(t, 10*time.Second, "status names the lost address", func() string {
		if s := status(); !strings.Contains(s, "underlay problem:") || !strings.Contains(s, "10.77.0.11 is no longer an address of this host") {
			return s
		}
		return ""
	})
	exec("ip", "addr", "add", "10.77.0.11/24", "dev", "eth0")
	waitFor(t, 10*time.Second, "the problem gone with the address back", func() string {
		if s := status(); strings.Contains(s, "underlay problem:") {
			return s
		}
		return ""
	})
}
