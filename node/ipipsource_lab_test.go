package node_test

import (
	"context"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestIPIPOuterSource: IP-in-IP leaves from the node's own address even
// when the kernel's route to the other node prefers another source (a
// second address here; another interface on a multi-homed host). The
// other node accepts tunnel packets from node addresses only, so an
// outer source picked by the route would lose every packet.
func TestIPIPOuterSource(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapIPIP})
	ctx := context.Background()
	for _, args := range [][]string{
		{"ip", "addr", "add", "10.77.0.111/24", "dev", "eth0"},
		{"ip", "route", "change", "10.77.0.0/24", "dev", "eth0", "src", "10.77.0.111"},
	} {
		if out, err := l.Output(ctx, "worker1", args...); err != nil {
			t.Fatalf("%v on worker1: %v\n%s", args, err, out)
		}
	}
	ping(t, l, "test-1", l.PodIP("test-2"))
}
