package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router"
)

// attackConf is birdConf plus routes a hostile or misconfigured ToR
// announces with a third-party next hop (10.77.0.99, nobody): a default
// route, worker1's pod's /32, a prefix outside the pools, one an operator
// routes on worker1 already, one inside the pool and one covering it.
func attackConf(nodes []netip.Addr, pod netip.Addr) string {
	conf := birdConf(nodes)
	conf = strings.Replace(conf, `export where proto = "tor_routes";`, `export where proto = "tor_routes" || proto = "attack"; next hop keep;`, 1)
	return conf + fmt.Sprintf(`protocol static attack {
  ipv4;
  route 0.0.0.0/0 via 10.77.0.99;
  route %s/32 via 10.77.0.99;
  route 198.51.100.0/24 via 10.77.0.99;
  route 203.0.113.0/24 via 10.77.0.99;
  route 192.168.250.0/26 via 10.77.0.99;
  route 192.0.0.0/8 via 10.77.0.99;
}
`, pod)
}

// TestBGPImportPolicy is issue 14's ToR announcing a default route and a
// local pod's /32: neither may displace NAT outgoing, the node's kernel
// default route or the pod's route, nor survive as a hole after the
// withdrawal. Kernel routes the daemon did not install stay untouched.
func TestBGPImportPolicy(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2})
	ctx := context.Background()
	n1, n2 := l.NodeAddr("worker1"), l.NodeAddr("worker2")
	pod := l.PodIP("test-1") // on worker1
	run := func(node string, args ...string) string {
		t.Helper()
		out, err := l.Output(ctx, node, args...)
		if err != nil {
			t.Fatalf("%s on %s: %v\n%s", strings.Join(args, " "), node, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// An operator's route on worker1 that BIRD will announce too.
	run("worker1", "ip", "route", "add", "203.0.113.0/24", "via", "10.77.0.1", "proto", "static")
	defaultBefore := run("worker1", "ip", "route", "show", "default")
	podBefore := run("worker1", "ip", "route", "show", pod.String()+"/32")
	if !strings.Contains(defaultBefore, "via 10.77.0.1") || podBefore == "" {
		t.Fatalf("worker1 before: default %q, pod route %q", defaultBefore, podBefore)
	}

	_, reconfigure := bird(t, l, attackConf([]netip.Addr{n1, n2}, pod))
	var out strings.Builder
	doc := "apiVersion: podnet.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.77.0.1\n  asNumber: 65000\n"
	if err := l.Exec(ctx, "worker1", strings.NewReader(doc), &out, &out, "podnet", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	// BIRD's prefix outside the pools, from a configured BGPPeer, is
	// taken with its third-party next hop: the session is up and the
	// announcements are in.
	outside := netip.MustParsePrefix("198.51.100.0/24")
	waitFor(t, 30*time.Second, "worker1 learns 198.51.100.0/24", func() string {
		r, ok := routeTo(t, l, "worker1", outside)
		if !ok || r.NextHop != netip.MustParseAddr("10.77.0.99") || r.Kind != router.KindHost {
			return fmt.Sprintf("route %+v", r)
		}
		return ""
	})
	waitFor(t, 10*time.Second, "worker1 kernel route to 198.51.100.0/24", func() string {
		kr, _ := l.Output(ctx, "worker1", "ip", "route", "show", outside.String())
		if !strings.Contains(string(kr), "via 10.77.0.99") || !strings.Contains(string(kr), "proto 80") {
			return fmt.Sprintf("%q", kr)
		}
		return ""
	})

	intact := func(when string) {
		t.Helper()
		for _, node := range []string{"worker1", "worker2"} {
			if r, ok := routeTo(t, l, node, netip.MustParsePrefix("0.0.0.0/0")); !ok || r.Kind != router.KindNAT {
				t.Errorf("%s: %s default route %+v, want NAT outgoing", when, node, r)
			}
			for _, p := range []string{"192.168.250.0/26", "192.0.0.0/8"} {
				if r, ok := routeTo(t, l, node, netip.MustParsePrefix(p)); ok {
					t.Errorf("%s: %s took %s: %+v", when, node, p, r)
				}
			}
		}
		if r, ok := routeTo(t, l, "worker1", netip.PrefixFrom(pod, 32)); !ok || r.Kind != router.KindLocalPod {
			t.Errorf("%s: worker1 route to its pod %+v", when, r)
		}
		if got := run("worker1", "ip", "route", "show", "default"); got != defaultBefore {
			t.Errorf("%s: worker1 kernel default route %q, was %q", when, got, defaultBefore)
		}
		if got := run("worker1", "ip", "route", "show", pod.String()+"/32"); got != podBefore {
			t.Errorf("%s: worker1 kernel route to its pod %q, was %q", when, got, podBefore)
		}
		if got := run("worker1", "ip", "route", "show", "203.0.113.0/24"); !strings.Contains(got, "via 10.77.0.1 ") || !strings.Contains(got, "proto static") {
			t.Errorf("%s: the operator's route on worker1 is now %q", when, got)
		}
		ping(t, l, "test-1", l.PodIP("test-2"))
		ping(t, l, "test-2", pod)
		for _, p := range []string{"test-1", "test-2"} {
			if body, err := httpGet(nsPath(t, l, p), "/"); err != nil || !strings.Contains(body, "pod external") {
				t.Errorf("%s: %s to the external host: %v %q", when, p, err, body)
			}
		}
	}
	intact("while announced")
	if r, ok := routeTo(t, l, "worker1", netip.MustParsePrefix("203.0.113.0/24")); !ok || r.NextHop != netip.MustParseAddr("10.77.0.99") {
		t.Errorf("worker1 switch route to 203.0.113.0/24 %+v, want the learned one", r)
	}

	// The ToR withdraws everything but its own prefix.
	reconfigure(birdConf([]netip.Addr{n1, n2}))
	waitFor(t, 30*time.Second, "worker1 forgets 198.51.100.0/24", func() string {
		if r, ok := routeTo(t, l, "worker1", outside); ok {
			return fmt.Sprintf("route %+v", r)
		}
		if kr, _ := l.Output(ctx, "worker1", "ip", "route", "show", outside.String()); len(kr) > 0 {
			return fmt.Sprintf("kernel %q", kr)
		}
		return ""
	})
	intact("after the withdrawal")
}

// TestBGPImportHijack: a peer (here BIRD, as a ToR or a route reflector
// would) announces a node's block, a more specific part of it and one of
// its pods' addresses, with another node as next hop. Every node checks
// the next hop against IPAM's block affinities and refuses them, so the
// pod stays reachable through its own node.
func TestBGPImportHijack(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 3, Pods: 3})
	ctx := context.Background()
	n1, n2, n3 := l.NodeAddr("worker1"), l.NodeAddr("worker2"), l.NodeAddr("worker3")
	victim := l.PodIP("test-2") // on worker2
	block := blockOf(l, "test-2")
	half, _ := victim.Prefix(27)
	hijacks := []netip.Prefix{block, half, netip.PrefixFrom(victim, 32)}
	conf := birdConf([]netip.Addr{n1, n2, n3})
	conf = strings.Replace(conf, `export where proto = "tor_routes";`, `export where proto = "tor_routes" || proto = "hijack"; next hop keep;`, 1)
	conf += "protocol static hijack {\n  ipv4;\n"
	for _, p := range hijacks {
		conf += fmt.Sprintf("  route %s via %s;\n", p, n3)
	}
	conf += "}\n"
	bird(t, l, conf)
	var out strings.Builder
	doc := "apiVersion: podnet.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.77.0.1\n  asNumber: 65000\n"
	if err := l.Exec(ctx, "worker1", strings.NewReader(doc), &out, &out, "podnet", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	tor := netip.MustParseAddr("10.77.0.1")
	waitFor(t, 30*time.Second, "worker1's session with the ToR", func() string { return established(t, l, "worker1", tor) })
	// worker1 is the node the check protects (on worker3 the next hop is
	// itself, refused anyway): the refusals in its log show the hijack
	// paths arrived, then its routes show they were not taken.
	for _, p := range hijacks {
		waitFor(t, 30*time.Second, "worker1 refuses "+p.String(), func() string {
			for _, line := range l.LogTail("worker1", 400) {
				if strings.Contains(line, "refused learned route") && strings.Contains(line, "prefix="+p.String()+" ") &&
					strings.Contains(line, "overlaps another node's block") {
					return ""
				}
			}
			return "no refusal logged yet"
		})
	}
	if r, ok := routeTo(t, l, "worker1", block); !ok || r.NextHop != n2 {
		t.Errorf("worker1: route to %s %+v, want via worker2 (%s)", block, r, n2)
	}
	for _, p := range hijacks[1:] {
		if r, ok := routeTo(t, l, "worker1", p); ok {
			t.Errorf("worker1 took the hijack %s: %+v", p, r)
		}
	}
	ping(t, l, "test-1", victim)
	ping(t, l, "test-3", victim)
}
