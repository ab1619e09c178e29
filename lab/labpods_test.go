package lab_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestLabPodsAndGraph adds, scales and deletes pods in a running lab with
// real daemons, draws the lab live, and checks that Down removes every
// namespace, even that of a pod attached by hand with `podnet pod add
// --new` on a node.
func TestLabPodsAndGraph(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 1, HTTPServer: lab.HTTPBuiltin})
	name := l.Name()
	ctx := t.Context()

	web, err := l.AddPod(ctx, lab.PodSpec{Name: "web"})
	if err != nil {
		t.Fatalf("AddPod(web): %v", err)
	}
	// worker1 has test-1, so the emptier worker2 gets it.
	if web.Node != "worker2" || web.Netns != name+"-web" || !web.IP.IsValid() || web.HTTPPID == 0 {
		t.Fatalf("AddPod(web): got %+v, want it on worker2 in %s-web with an address and an HTTP server", web, name)
	}
	// Across nodes, through the overlay, to the new pod's HTTP server.
	out, err := l.Output(ctx, "test-1", fakePodnet, "get", "http://"+web.IP.String()+"/")
	if err != nil || string(out) != lab.PageText("web", "worker2", web.IP) {
		t.Errorf("GET web's page from test-1: got %q, %v", out, err)
	}
	if out, err := l.Output(ctx, "web", "ip", "-o", "link", "show", "lo"); err != nil || !strings.Contains(string(out), "UP") {
		t.Errorf("lo of web: got %q, %v; want it up", out, err)
	}
	for _, bad := range []struct {
		spec lab.PodSpec
		want string
	}{
		{lab.PodSpec{Name: "web"}, "already has a pod web"},
		{lab.PodSpec{Name: "worker2"}, "taken by the lab's worker2 namespace"},
		{lab.PodSpec{Name: "x", Node: "worker9"}, `has no node "worker9"`},
		{lab.PodSpec{Name: "x", Pool: "nosuchpool"}, "nosuchpool"},
	} {
		if _, err := l.AddPod(ctx, bad.spec); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("AddPod(%+v): got %v, want an error containing %q", bad.spec, err, bad.want)
		}
	}
	if nss := namespaces(t); nss[name+"-x"] {
		t.Errorf("failed AddPod(x) left namespace %s-x behind", name)
	}

	added, removed, err := l.Scale(ctx, "test", 3)
	if err != nil || strings.Join(added, ",") != "test-2,test-3" || len(removed) != 0 {
		t.Fatalf("Scale(test, 3): got added %v removed %v, %v; want test-2,test-3 added", added, removed, err)
	}
	nodeOf := map[string]string{}
	for _, p := range l.Status().Pods {
		nodeOf[p.Name] = p.Node
	}
	if nodeOf["test-2"] != "worker1" || nodeOf["test-3"] != "worker2" {
		t.Errorf("Scale spread: got %v, want test-2 on worker1, test-3 on worker2", nodeOf)
	}
	// Another process (here: another Lab value) sees the new pods.
	other, err := lab.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	ip3 := other.PodIP("test-3")
	if out, err := other.Output(ctx, "test-2", fakePodnet, "get", "http://"+ip3.String()+"/"); err != nil || string(out) != lab.PageText("test-3", "worker2", ip3) {
		t.Errorf("GET test-3's page from test-2 through a reopened lab: got %q, %v", out, err)
	}

	hand := name + "h"
	if out, err := l.Output(ctx, "worker1", "podnet", "pod", "add", hand, "--new"); err != nil {
		t.Fatalf("podnet pod add %s --new on worker1: %v (%s)", hand, err, out)
	}
	if !namespaces(t)[l.HandPodNetns("worker1", hand)] {
		t.Fatalf("pod add --new made no namespace %s", l.HandPodNetns("worker1", hand))
	}

	g, err := l.Graph(ctx)
	if err != nil {
		t.Fatalf("Graph: %v", err)
	}
	checkGraph(t, l, g, hand)
	var text bytes.Buffer
	if err := g.Write(&text, lab.GraphText); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"├─ node worker1: eth0 10.77.0.11/24 on br0, ipip tunnel ",
		"pod web " + web.IP.String() + "\n",
		"pod " + hand + " ",
		"bgp 10.77.0.12 (worker2) node-to-node mesh: Established",
		"worker1 → worker2 via 10.77.0.12, IP-in-IP: ",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("graph text lacks %q:\n%s", want, text.String())
		}
	}

	added, removed, err = l.Scale(ctx, "test", 1)
	if err != nil || len(added) != 0 || strings.Join(removed, ",") != "test-3,test-2" {
		t.Errorf("Scale(test, 1): got added %v removed %v, %v; want test-3,test-2 removed", added, removed, err)
	}
	if err := l.DeletePod(ctx, "web"); err != nil {
		t.Errorf("DeletePod(web): %v", err)
	}
	if err := l.DeletePod(ctx, "web"); err == nil || !strings.Contains(err.Error(), `has no pod "web" (pods: test-1)`) {
		t.Errorf("DeletePod(web) again: got %v, want it to name the pods left", err)
	}
	nss := namespaces(t)
	for _, ns := range []string{"web", "test-2", "test-3"} {
		if nss[name+"-"+ns] {
			t.Errorf("namespace %s-%s still exists after its pod was deleted", name, ns)
		}
	}
	if got := len(l.Status().Pods); got != 1 {
		t.Errorf("pods left: got %d, want 1", got)
	}

	if err := l.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	requireGone(t, name)
	if namespaces(t)[l.HandPodNetns("worker1", hand)] {
		t.Errorf("Down left the namespace %s of the pod added by hand", l.HandPodNetns("worker1", hand))
	}
}

// checkGraph checks the live graph against the lab's own state.
func checkGraph(t *testing.T, l *lab.Lab, g lab.Graph, hand string) {
	t.Helper()
	if len(g.Nodes) != 2 || len(g.Pools) != 1 || g.Pools[0].IPIPMode != "Always" || g.External == nil {
		t.Fatalf("graph: got %d nodes, pools %+v, external %v; want 2 nodes, the default IP-in-IP pool, an external host", len(g.Nodes), g.Pools, g.External)
	}
	podsOn := map[string]int{}
	for _, p := range l.Status().Pods {
		podsOn[p.Node]++
	}
	for _, n := range g.Nodes {
		if n.Error != "" {
			t.Errorf("graph node %s: %s", n.Name, n.Error)
		}
		if !n.IPIPTunnel.IsValid() {
			t.Errorf("graph node %s: no IP-in-IP tunnel address", n.Name)
		}
		used := 0
		for _, b := range n.Blocks {
			used += b.InUse
			if !b.CIDR.Contains(n.IPIPTunnel) && !b.CIDR.Overlaps(g.Pools[0].CIDR) {
				t.Errorf("graph node %s: block %v outside the pool", n.Name, b.CIDR)
			}
		}
		want := podsOn[n.Name] + 1 // pods and the tunnel address
		foreign := 0
		for _, p := range n.Pods {
			if p.Name == hand {
				foreign++
				if p.Lab {
					t.Errorf("graph: pod %s added by hand marked as the lab's", hand)
				}
			} else if ip := l.PodIP(p.Name); ip != p.IP || !p.Lab {
				t.Errorf("graph node %s: pod %+v, lab says %v", n.Name, p, ip)
			}
		}
		if len(n.Pods) != podsOn[n.Name]+foreign {
			t.Errorf("graph node %s: %d pods, lab has %d there (+%d by hand)", n.Name, len(n.Pods), podsOn[n.Name], foreign)
		}
		if used != want+foreign {
			t.Errorf("graph node %s: blocks say %d addresses in use, want %d (pods, hand-added pods, tunnel)", n.Name, used, want+foreign)
		}
		if len(n.Peers) != 1 || n.Peers[0].State != "Established" || n.Peers[0].Node == n.Name || n.Peers[0].Node == "" {
			t.Errorf("graph node %s: peers %+v, want one Established session with the other node", n.Name, n.Peers)
		}
	}
	if len(g.Overlay) != 2 {
		t.Fatalf("graph overlay: got %+v, want one hop each way", g.Overlay)
	}
	for _, h := range g.Overlay {
		if h.Encap != "ipip" || h.From == h.To || len(h.Prefixes) == 0 || h.Via != l.NodeAddr(h.To) {
			t.Errorf("graph overlay hop %+v: want IP-in-IP to the other node's address", h)
		}
	}
}

// TestAddPodKeepsForeignNetns: when AddPod fails because NAME-POD is
// already there (made by someone else), undoing the add must not delete
// that namespace: the add never made it.
func TestAddPodKeepsForeignNetns(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := upFake(t, "")
	ns := l.Name() + "-foo"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if _, err := l.AddPod(t.Context(), lab.PodSpec{Name: "foo"}); err == nil || !strings.Contains(err.Error(), "create namespace "+ns) {
		t.Errorf("AddPod(foo) beside an existing %s: got %v, want it to fail creating the namespace", ns, err)
	}
	if !namespaces(t)[ns] {
		t.Errorf("failed AddPod(foo) deleted %s, which it did not make", ns)
	}
	if st := l.Status(); len(st.Pods) != 0 {
		t.Errorf("failed AddPod(foo) left pods %+v in the state", st.Pods)
	}
}
