package node_test

import (
	"context"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"podnet/datastore"
	"podnet/ipam"
	"podnet/lab"
	"podnet/lab/labtest"
)

// TestTunnelAddrCrashLab: a daemon that dies after IPAM gave it a tunnel
// address but before the Node resource named it leaves the address
// allocated under its handle. The restarted daemon must give that one
// back before it takes another: the node holds one tunnel address, the
// one its Node names, and nothing leaks.
//
// The crash is staged: the daemon is killed and the Node's field cleared,
// which is what the datastore holds after such a crash.
func TestTunnelAddrCrashLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: lab.NoPods, Encap: lab.EncapIPIP})
	ctx := context.Background()
	store, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{l.Datastore()}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	m := ipam.New(store)
	const handle = "ipip-tunnel-addr-worker1"
	held := func() []netip.Addr {
		t.Helper()
		allocs, err := m.Allocations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []netip.Addr
		for _, a := range allocs {
			if a.HandleID == handle {
				out = append(out, a.IP)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	recorded := func() string {
		nd := nodeResource(t, l, "worker1")
		if nd.Spec.BGP == nil {
			return ""
		}
		return nd.Spec.BGP.IPv4IPIPTunnelAddr
	}
	waitFor(t, 20*time.Second, "a tunnel address on the Node", func() string {
		if recorded() == "" {
			return "none yet"
		}
		return ""
	})
	first := recorded()

	if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	mustPodnet(t, l, "", "patch", "node", "worker1", "-p", `{"spec":{"bgp":{"ipv4IPIPTunnelAddr":""}}}`)
	if got := recorded(); got != "" {
		t.Fatalf("the Node still names %q after the patch", got)
	}
	if got := held(); len(got) != 1 || got[0].String() != first {
		t.Fatalf("before the restart the handle holds %v, want [%s]", got, first)
	}
	if err := l.StartDaemon(ctx, "worker1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a tunnel address on the Node again", func() string {
		if recorded() == "" {
			return "none yet"
		}
		return ""
	})
	if got, now := held(), recorded(); len(got) != 1 || got[0].String() != now {
		t.Fatalf("after the restart the handle holds %v and the Node names %s; want that one address only", got, now)
	}
}
