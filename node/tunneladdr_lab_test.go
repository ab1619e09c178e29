package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
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

	// The same with the daemon running, the field cleared by hand while
	// the handle holds a second address that podnet0 carries too (a
	// round's that failed): both go back, and off podnet0, but the one
	// the Node names again. Taking podnet0's last address flushes every
	// kernel route through it: the pod's must come back.
	now := recorded()
	extra := netip.MustParseAddr(now).Next()
	pools := []ipam.Pool{{Name: "default-ipv4-ippool", CIDR: netip.MustParsePrefix("192.168.0.0/16"), BlockSize: 26}}
	if err := m.AssignIP(ctx, ipam.AssignIPArgs{IP: extra, Node: "worker1", HandleID: handle, Pools: pools}); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Output(ctx, "worker1", "ip", "addr", "add", extra.String()+"/32", "dev", "podnet0"); err != nil {
		t.Fatalf("put %s on podnet0: %v\n%s", extra, err, out)
	}
	pod, err := l.AddPod(ctx, lab.PodSpec{Name: "p1", Node: "worker1"})
	if err != nil {
		t.Fatal(err)
	}
	podRoute := func() string {
		out, err := l.Output(ctx, "worker1", "ip", "-4", "route", "show", pod.IP.String()+"/32", "dev", "podnet0")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(string(out), pod.IP.String()) {
			return "no kernel route to the pod through podnet0"
		}
		return ""
	}
	waitFor(t, 10*time.Second, "the pod's kernel route", podRoute)
	mustPodnet(t, l, "", "patch", "node", "worker1", "-p", `{"spec":{"bgp":{"ipv4IPIPTunnelAddr":""}}}`)
	waitFor(t, 20*time.Second, "one tunnel address, named by the Node and alone on podnet0", func() string {
		named := recorded()
		if got := held(); len(got) != 1 || got[0].String() != named {
			return fmt.Sprintf("the handle holds %v, the Node names %q", got, named)
		}
		out, err := l.Output(ctx, "worker1", "ip", "-4", "-o", "addr", "show", "dev", "podnet0")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(string(out), " "+named+"/32") || (named != extra.String() && strings.Contains(string(out), " "+extra.String()+"/32")) {
			return fmt.Sprintf("podnet0 has %q", out)
		}
		return podRoute()
	})
}
