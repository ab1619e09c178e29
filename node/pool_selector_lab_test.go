package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestPoolSelectorLab: issue items 1 and 4 on a real lab node. A pool
// whose nodeSelector selects the node gives pod addresses once it is the
// only enabled one; a LoadBalancer-only pool never does; a pool whose
// selector does not select the node is used only when named.
func TestPoolSelectorLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1, Encap: lab.EncapNone})
	ctx := context.Background()
	exec := func(stdin string, args ...string) (string, error) {
		var out strings.Builder
		err := l.Exec(ctx, "worker1", strings.NewReader(stdin), &out, &out, append([]string{"podnet"}, args...)...)
		return out.String(), err
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, err := exec(stdin, args...)
		if err != nil {
			t.Fatalf("podnet %v: %v\n%s", args, err, out)
		}
		return out
	}
	podIP := func(pod string, extra ...string) netip.Addr {
		t.Helper()
		t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", pod)) })
		out := run("", append([]string{"pod", "add", pod, "--new", "-o", "json"}, extra...)...)
		var info struct{ IP string }
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("pod add -o json: %v\n%s", err, out)
		}
		return netip.MustParseAddr(info.IP)
	}
	run(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lb}
spec: {cidr: 10.9.0.0/24, allowedUses: [LoadBalancer]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: west}
spec: {cidr: 10.20.0.0/16, nodeSelector: "zone == 'west'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: east}
spec: {cidr: 10.30.0.0/16, nodeSelector: "zone in {'east'} && !has(gpu)"}
`, "apply", "-f", "-")
	run("", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":true}}`)

	// Pods that must not be created are cleaned up if they are.
	t.Cleanup(func() {
		removeNetns(l.HandPodNetns("worker1", "none"+l.Name()))
		removeNetns(l.HandPodNetns("worker1", "lb"+l.Name()))
	})
	// Unlabelled: no pool selects the node; the error says why.
	out, err := exec("", "pod", "add", "none"+l.Name(), "--new")
	for _, want := range []string{"lb (10.9.0.0/24) allows [LoadBalancer], not Workload", `west (10.20.0.0/16) has nodeSelector zone == "west", which does not select the node`} {
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("pod add on an unlabelled node: got %v %s, want %q", err, out, want)
		}
	}
	run("", "label", "node", "worker1", "zone=west")
	if ip := podIP("w" + l.Name()); !netip.MustParsePrefix("10.20.0.0/16").Contains(ip) {
		t.Fatalf("labelled zone=west: got %s, want an address of west", ip)
	}
	// Named, east is used even though it does not select the node.
	if ip := podIP("e"+l.Name(), "--pool", "east"); !netip.MustParsePrefix("10.30.0.0/16").Contains(ip) {
		t.Fatalf("--pool east: got %s", ip)
	}
	out, err = exec("", "pod", "add", "lb"+l.Name(), "--new", "--pool", "lb")
	if err == nil || !strings.Contains(out, "allows [LoadBalancer], not Workload") {
		t.Fatalf("--pool lb: got %v %s", err, out)
	}
}

// TestRouteReflectorSelectorsLab: issue item 2. Route reflection set up
// with the selector forms the old evaluator did not know (!has, in, ||):
// the clients peer with the reflector only, and learn each other's
// blocks through it.
func TestRouteReflectorSelectorsLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 3, Pods: 3})
	ctx := context.Background()
	run := func(stdin string, args ...string) {
		t.Helper()
		var out strings.Builder
		if err := l.Exec(ctx, "worker1", strings.NewReader(stdin), &out, &out, append([]string{"podnet"}, args...)...); err != nil {
			t.Fatalf("podnet %v: %v\n%s", args, err, out.String())
		}
	}
	run("", "label", "node", "worker1", "routeReflector=yes")
	run("", "patch", "node", "worker1", "-p", `{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}`)
	run(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: clients-to-reflectors}
spec:
  nodeSelector: "!has(routeReflector)"
  peerSelector: "routeReflector in {'yes', 'true'} || has(rr-backup)"
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
`, "apply", "-f", "-")
	n1, n2, n3 := l.NodeAddr("worker1"), l.NodeAddr("worker2"), l.NodeAddr("worker3")
	waitFor(t, 30*time.Second, "worker1 reflects for worker2 and worker3", func() string { return established(t, l, "worker1", n2, n3) })
	for _, c := range []struct {
		node  string
		other netip.Addr
		pod   string
	}{{"worker2", n3, "test-3"}, {"worker3", n2, "test-2"}} {
		waitFor(t, 30*time.Second, c.node+" peers with the reflector only", func() string {
			for _, p := range peersOf(t, l, c.node) {
				if p.Address == c.other {
					return c.node + " still peers with " + c.other.String()
				}
			}
			return established(t, l, c.node, n1)
		})
		waitFor(t, 30*time.Second, c.node+" learns "+c.pod+"'s block via the reflector", func() string {
			r, ok := routeTo(t, l, c.node, blockOf(l, c.pod))
			if !ok || r.NextHop != c.other {
				return fmt.Sprintf("route %+v, want next hop %s", r, c.other)
			}
			return ""
		})
	}
	ping(t, l, "test-2", l.PodIP("test-3"))
}
