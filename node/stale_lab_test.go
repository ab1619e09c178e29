package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"podnet/api"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router"
)

// Mode switches leave nothing stale (issue 13): the pods' MTU, the
// tunnel addresses, a force-deleted pool's blocks and BGP passwords all
// follow the resources as they are now.

// podnetIn runs podnet in target and returns its output (stdout and
// stderr) and error.
func podnetIn(l *lab.Lab, target, stdin string, args ...string) (string, error) {
	var out strings.Builder
	err := l.Exec(context.Background(), target, strings.NewReader(stdin), &out, &out, append([]string{"podnet"}, args...)...)
	return out.String(), err
}

func mustPodnet(t *testing.T, l *lab.Lab, stdin string, args ...string) string {
	t.Helper()
	out, err := podnetIn(l, "worker1", stdin, args...)
	if err != nil {
		t.Fatalf("podnet %v: %v\n%s", args, err, out)
	}
	return out
}

var mtuRE = regexp.MustCompile(` mtu (\d+) `)

// linkMTU is the MTU of dev in target's namespace.
func linkMTU(t *testing.T, l *lab.Lab, target, dev string) int {
	t.Helper()
	out, err := l.Output(context.Background(), target, "ip", "-o", "link", "show", "dev", dev)
	m := mtuRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("ip link show %s in %s: %v\n%s", dev, target, err, out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// nodeResource reads the Node resource of name.
func nodeResource(t *testing.T, l *lab.Lab, name string) *api.Node {
	t.Helper()
	var nd api.Node
	out := mustPodnet(t, l, "", "get", "node", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &nd); err != nil {
		t.Fatalf("get node -o json: %v\n%s", err, out)
	}
	return &nd
}

// hasAddr says whether dev in target has addr.
func hasAddr(t *testing.T, l *lab.Lab, target, dev string, addr string) bool {
	t.Helper()
	out, err := l.Output(context.Background(), target, "ip", "-o", "-4", "addr", "show", "dev", dev)
	if err != nil {
		t.Fatalf("ip addr show %s in %s: %v", dev, target, err)
	}
	return strings.Contains(string(out), " "+addr+"/32 ")
}

// TestModeSwitchLab switches the pool IP-in-IP → VXLAN → Never under
// running pods: each time the pods' eth0, podnet0, node status and the
// Node resource agree on the MTU the encapsulation leaves, a ping of
// exactly that size with DF crosses, and the tunnel address of an
// encapsulation no pool uses any more goes back to IPAM, off podnet0
// and off the Node.
func TestModeSwitchLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapIPIP})
	underlay := linkMTU(t, l, "worker1", "eth0")
	waitFor(t, 20*time.Second, "worker1 learns worker2's block", func() string {
		if _, ok := routeTo(t, l, "worker1", blockOf(l, "test-2")); !ok {
			return "no route"
		}
		return ""
	})
	ipipAddr := func() string {
		nd := nodeResource(t, l, "worker1")
		if nd.Spec.BGP == nil {
			return ""
		}
		return nd.Spec.BGP.IPv4IPIPTunnelAddr
	}
	vxlanAddr := func() string { return nodeResource(t, l, "worker1").Spec.IPv4VXLANTunnelAddr }
	// agree says "" when everything shows mtu.
	agree := func(mtu int) func() string {
		return func() string {
			for _, pod := range []string{"test-1", "test-2"} {
				if got := linkMTU(t, l, pod, "eth0"); got != mtu {
					return fmt.Sprintf("%s eth0 MTU %d", pod, got)
				}
			}
			if got := linkMTU(t, l, "worker1", "podnet0"); got != mtu {
				return fmt.Sprintf("podnet0 MTU %d", got)
			}
			st, err := nodeClient(t, l, "worker1").Status()
			if err != nil || st.PodMTU != mtu {
				return fmt.Sprintf("node status podMTU %d (%v)", st.PodMTU, err)
			}
			if nd := nodeResource(t, l, "worker1"); nd.Status == nil || nd.Status.PodMTU != mtu {
				return fmt.Sprintf("Node resource status %+v", nd.Status)
			}
			return ""
		}
	}
	// bigPing sends a DF ping that fills mtu exactly from test-1 to test-2.
	bigPing := func(mtu int) {
		t.Helper()
		out, err := l.Output(context.Background(), "test-1", "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do",
			"-s", strconv.Itoa(mtu-28), l.PodIP("test-2").String())
		if err != nil {
			t.Fatalf("ping of %d bytes with DF: %v\n%s", mtu, err, out)
		}
	}
	waitFor(t, 10*time.Second, "IP-in-IP MTU everywhere", agree(underlay-20))
	var ipip string
	waitFor(t, 10*time.Second, "worker1 has an IP-in-IP tunnel address", func() string {
		if ipip = ipipAddr(); ipip == "" {
			return "none"
		}
		return ""
	})
	if !hasAddr(t, l, "worker1", "podnet0", ipip) {
		t.Fatalf("IP-in-IP tunnel address %s not on podnet0", ipip)
	}
	bigPing(underlay - 20)

	mustPodnet(t, l, "", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"ipipMode":"Never","vxlanMode":"Always"}}`)
	waitFor(t, 10*time.Second, "VXLAN MTU everywhere", agree(underlay-50))
	waitFor(t, 10*time.Second, "IP-in-IP tunnel address released", func() string {
		if a := ipipAddr(); a != "" {
			return "Node still has " + a
		}
		if hasAddr(t, l, "worker1", "podnet0", ipip) {
			return "podnet0 still has " + ipip
		}
		if out := mustPodnet(t, l, "", "ipam", "show", "--ip="+ipip); !strings.Contains(out, "is not assigned") {
			return "IPAM: " + out
		}
		return ""
	})
	var vx string
	waitFor(t, 10*time.Second, "worker1 has a VXLAN tunnel address", func() string {
		if vx = vxlanAddr(); vx == "" || !hasAddr(t, l, "worker1", "podnet0", vx) {
			return "none on the Node and podnet0: " + vx
		}
		return ""
	})
	waitFor(t, 10*time.Second, "route to worker2's block is VXLAN", func() string {
		if r, _ := routeTo(t, l, "worker1", blockOf(l, "test-2")); r.Encap != router.EncapVXLAN {
			return fmt.Sprintf("route %+v", r)
		}
		return ""
	})
	bigPing(underlay - 50)

	mustPodnet(t, l, "", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"vxlanMode":"Never"}}`)
	waitFor(t, 10*time.Second, "full MTU everywhere", agree(underlay))
	waitFor(t, 10*time.Second, "VXLAN tunnel address released", func() string {
		if a := vxlanAddr(); a != "" {
			return "Node still has " + a
		}
		if hasAddr(t, l, "worker1", "podnet0", vx) {
			return "podnet0 still has " + vx
		}
		return ""
	})
	waitFor(t, 10*time.Second, "route to worker2's block is plain", func() string {
		if r, _ := routeTo(t, l, "worker1", blockOf(l, "test-2")); r.Kind != router.KindHost {
			return fmt.Sprintf("route %+v", r)
		}
		return ""
	})
	bigPing(underlay)
	if out, err := podnetIn(l, "worker1", "", "ipam", "check"); err != nil {
		t.Fatalf("ipam check after the switches: %v\n%s", err, out)
	}
}

// TestForceDeletedPoolLab: a pool deleted with --force while a pod has
// an address in it. ipam check reports the block of no pool (and fails);
// the owning node keeps the block while the pod lives, but other nodes
// refuse it from then on (their import policy takes only prefixes inside
// a known pool from mesh peers); once the pod is deleted the node
// releases the block: its affinity goes, and ipam check is clean again.
func TestForceDeletedPoolLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapNone})
	mustPodnet(t, l, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: doomed}\nspec: {cidr: 10.66.0.0/16}\n", "apply", "-f", "-")
	pod := "doomed" + l.Name()
	t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", pod)) })
	out := mustPodnet(t, l, "", "pod", "add", pod, "--new", "--pool", "doomed", "-o", "json")
	var info struct{ IP string }
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("pod add -o json: %v\n%s", err, out)
	}
	block, _ := netip.MustParseAddr(info.IP).Prefix(26)
	waitFor(t, 20*time.Second, "worker2 learns the doomed pool's block", func() string {
		if _, ok := routeTo(t, l, "worker2", block); !ok {
			return "no route to " + block.String()
		}
		return ""
	})
	mustPodnet(t, l, "", "delete", "ippool", "doomed", "--force")
	out, err := podnetIn(l, "worker1", "", "ipam", "check")
	for _, want := range []string{"block " + block.String() + " (affine to node worker1, 1 addresses in use) is in no IP pool",
		info.IP + " is allocated in block " + block.String() + ", which no IP pool holds", "ipam check: 2 problems found"} {
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("ipam check with the pod still there: got %v, want failure with %q\n%s", err, want, out)
		}
	}
	// The pod still has its address: worker1 keeps the block, worker2's
	// import policy refuses a prefix that is in no pool any more.
	waitFor(t, 10*time.Second, "worker2 refuses the block of no pool", func() string {
		if _, ok := routeTo(t, l, "worker2", block); ok {
			return "worker2 still routes " + block.String()
		}
		return ""
	})
	if _, ok := routeTo(t, l, "worker1", block); !ok {
		t.Fatalf("worker1 dropped block %s while its pod still uses it", block)
	}

	mustPodnet(t, l, "", "pod", "del", pod)
	waitFor(t, 10*time.Second, "worker1 releases the empty block", func() string {
		if _, ok := routeTo(t, l, "worker1", block); ok {
			return "worker1 still routes " + block.String()
		}
		if _, ok := routeTo(t, l, "worker2", block); ok {
			return "worker2 still learns " + block.String()
		}
		return ""
	})
	if out := mustPodnet(t, l, "", "ipam", "show", "--show-blocks"); strings.Contains(out, "10.66.") || strings.Contains(out, "No pool") {
		t.Fatalf("ipam show after the release:\n%s", out)
	}
	if out, err := podnetIn(l, "worker1", "", "ipam", "check"); err != nil || !strings.Contains(out, "found 0 problems") {
		t.Fatalf("ipam check at the end: %v\n%s", err, out)
	}
}

// TestMissingPasswordFileLab: a BGPPeer whose password file is not on
// the node is accepted (only the node can know), gets no session, and
// node status names the file; once the file is there the session is
// configured with it.
func TestMissingPasswordFileLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1, Encap: lab.EncapNone})
	pwFile := filepath.Join(t.TempDir(), "peer.pw")
	// The fabric's bridge address: nothing speaks BGP there, the test
	// only looks at what the node makes of the peering.
	peerIP := lab.FabricAddress.Addr().String()
	mustPodnet(t, l, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: %s, asNumber: 65000, password: {secretFile: %s}}
`, peerIP, pwFile), "apply", "-f", "-")
	want := "password file " + pwFile + ": no such file"
	waitFor(t, 10*time.Second, "node status names the missing file", func() string {
		out, _ := podnetIn(l, "worker1", "", "node", "status")
		if !strings.Contains(out, peerIP) || !strings.Contains(out, want) {
			return out
		}
		return ""
	})
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustPodnet(t, l, "", "label", "node", "worker1", "pw=there") // any change: the daemon reconciles
	waitFor(t, 10*time.Second, "session configured once the file is there", func() string {
		for _, p := range peersOf(t, l, "worker1") {
			if p.Address.String() == peerIP {
				if strings.Contains(p.Info, "password file") {
					return p.Info
				}
				return ""
			}
		}
		return "no peer " + peerIP
	})
}
