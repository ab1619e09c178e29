package node_test

// A node that runs no podnet at all: only the Linux kernel's vxlan device
// and BIRD, as a Calico-style node would. It exchanges pod traffic with
// podnet nodes in both directions.
//
//	<lab>-fabric br0 10.77.0.1/24
//	   │                 │                   │
//	worker1 .11       worker2 .12        <lab>-worker9 .19 (kernel node)
//	podnet (VXLAN)    podnet (VXLAN)       vx0: VNI 4096, port 4789
//	test-1            test-2               BIRD: announces 10.244.9.0/24
//	                                       <lab>-test-9: 10.244.9.10 on a veth

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"podnet/encap"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router"
)

func TestKernelVXLANNode(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapVXLAN})
	ctx := context.Background()
	kn, kp := l.Name()+"-worker9", l.Name()+"-test-9"
	fabric, _ := l.Netns("fabric")
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", kp).Run()
		exec.Command("ip", "netns", "del", kn).Run()
	})
	kernelAddr := netip.MustParseAddr("10.77.0.19")
	for _, args := range [][]string{
		{"netns", "add", kn}, {"netns", "add", kp},
		{"-n", kn, "link", "set", "lo", "up"}, {"-n", kp, "link", "set", "lo", "up"},
		{"-n", fabric, "link", "add", "w9", "type", "veth", "peer", "name", "eth0", "netns", kn},
		{"-n", fabric, "link", "set", "w9", "master", "br0"}, {"-n", fabric, "link", "set", "w9", "up"},
		{"-n", kn, "addr", "add", kernelAddr.String() + "/24", "dev", "eth0"}, {"-n", kn, "link", "set", "eth0", "up"},
		{"-n", kn, "link", "add", "vx0", "type", "vxlan", "id", "4096", "dstport", "4789", "local", kernelAddr.String(), "nolearning"},
		{"-n", kn, "link", "set", "vx0", "mtu", "1450"}, {"-n", kn, "link", "set", "vx0", "up"},
		{"-n", kn, "link", "add", "pod9", "type", "veth", "peer", "name", "eth0", "netns", kp},
		{"-n", kn, "addr", "add", "10.244.9.1/24", "dev", "pod9"}, {"-n", kn, "link", "set", "pod9", "up"},
		{"-n", kp, "addr", "add", "10.244.9.10/24", "dev", "eth0"}, {"-n", kp, "link", "set", "eth0", "mtu", "1450"},
		{"-n", kp, "link", "set", "eth0", "up"}, {"-n", kp, "route", "add", "default", "via", "10.244.9.1"},
		{"netns", "exec", kn, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
	} {
		ip(args...)
	}
	vx0MAC := strings.Fields(strings.SplitN(ip("-n", kn, "-o", "link", "show", "vx0"), "link/ether ", 2)[1])[0]

	// Describe the kernel node to podnet, give its pod range a VXLAN pool
	// (disabled: IPAM hands none of it to podnet pods) and peer with its
	// BIRD.
	doc := fmt.Sprintf(`apiVersion: podnet.io/v1
kind: Node
metadata:
  name: kernel9
spec:
  bgp:
    ipv4Address: %s/24
  vxlanTunnelMACAddr: %s
---
apiVersion: podnet.io/v1
kind: IPPool
metadata:
  name: kernel-pods
spec:
  cidr: 10.244.9.0/24
  vxlanMode: Always
  disabled: true
---
apiVersion: podnet.io/v1
kind: BGPPeer
metadata:
  name: kernel9
spec:
  peerIP: %s
  asNumber: 65009
`, kernelAddr, vx0MAC, kernelAddr)
	var out strings.Builder
	if err := l.Exec(ctx, "worker1", strings.NewReader(doc), &out, &out, "podnet", "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	birdConfig := `log stderr all;
router id 10.77.0.19;
protocol device {}
protocol static kernel_pods { ipv4; route 10.244.9.0/24 blackhole; }
template bgp podnet_node { local 10.77.0.19 as 65009; ipv4 { import none; export where proto = "kernel_pods"; }; connect retry time 1; }
protocol bgp n1 from podnet_node { neighbor 10.77.0.11 as 64512; }
protocol bgp n2 from podnet_node { neighbor 10.77.0.12 as 64512; }
`
	runBIRD(t, kn, birdConfig)

	// The kernel's way back to podnet pods: each podnet node's block via
	// that node's VTEP (its VXLAN tunnel address, MAC and underlay
	// address), the static FDB/neighbour entries a CNI would program.
	for _, n := range []struct{ node, pod string }{{"worker1", "test-1"}, {"worker2", "test-2"}} {
		tunnel := ""
		waitFor(t, 20*time.Second, n.node+" VXLAN tunnel address", func() string {
			o, _ := l.Output(ctx, "worker1", "podnet", "get", "node", n.node, "-o", "json")
			if i := strings.Index(string(o), `"ipv4VXLANTunnelAddr": "`); i >= 0 {
				tunnel = strings.SplitN(string(o)[i+len(`"ipv4VXLANTunnelAddr": "`):], `"`, 2)[0]
				return ""
			}
			return string(o)
		})
		mac := encap.VTEPMAC(n.node).String()
		ip("-n", kn, "neigh", "add", tunnel, "lladdr", mac, "dev", "vx0", "nud", "permanent")
		ip("-n", kn, "route", "add", blockOf(l, n.pod).String(), "via", tunnel, "dev", "vx0", "onlink")
		ip("-n", kn, "route", "add", tunnel+"/32", "via", tunnel, "dev", "vx0", "onlink")
		ip("netns", "exec", kn, "bridge", "fdb", "append", mac, "dev", "vx0", "dst", l.NodeAddr(n.node).String())
	}

	waitFor(t, 30*time.Second, "worker1 learns the kernel node's pods over VXLAN", func() string {
		r, ok := routeTo(t, l, "worker1", netip.MustParsePrefix("10.244.9.0/24"))
		if !ok || r.Kind != router.KindRemote || r.Encap != router.EncapVXLAN || r.NextHop != kernelAddr || r.NextHopMAC.String() != vx0MAC {
			return fmt.Sprintf("route %+v", r)
		}
		return ""
	})
	kernelPod := netip.MustParseAddr("10.244.9.10")
	seen := capture(t, l, "udp port 4789", func() {
		ping(t, l, "test-1", kernelPod)
		if o, err := exec.Command("ip", "netns", "exec", kp, "ping", "-c", "2", "-W", "2", l.PodIP("test-2").String()).CombinedOutput(); err != nil {
			t.Fatalf("kernel pod -> podnet pod: %v\n%s", err, o)
		}
	}, "-e")
	if !strings.Contains(seen, "vni 4096") || !strings.Contains(seen, kernelAddr.String()) {
		t.Fatalf("no VXLAN between podnet and the kernel node on the fabric:\n%s", seen)
	}
	transfer(t, nsPath(t, l, "test-2"), "/run/netns/"+kp, kernelPod, 8<<20)
	transfer(t, "/run/netns/"+kp, nsPath(t, l, "test-1"), l.PodIP("test-1"), 8<<20)

	// On this kernel (6.17+, or 6.3+ with the TAP's tc program marking
	// them) podnet sends TCP superframes whole and the kernel's VXLAN
	// device takes them; the kernel sends its own whole across the veth
	// fabric and podnet takes them as superframes.
	if !kernelAtLeast(t, 6, 3) {
		return
	}
	st, err := nodeClient(t, l, "worker2").Status()
	if err != nil || !strings.HasPrefix(st.VXLANSuperframes, "on") {
		t.Fatalf("worker2 status: vxlan superframes %q (%v), want on", st.VXLANSuperframes, err)
	}
	if s := portStats(t, nodeClient(t, l, "worker2"), "vxlan"); s.TxSuperframes == 0 {
		t.Errorf("worker2 sent the transfer to the kernel node with no superframe whole (vxlan port %+v)", s)
	}
	if s := portStats(t, nodeClient(t, l, "worker1"), "vxlan"); s.GSOFrames == 0 || len(s.Drops) != 0 {
		t.Errorf("worker1 took the kernel node's transfer with %d superframes and drops %v, want some and none", s.GSOFrames, s.Drops)
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(string(b), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", b, err)
	}
	return ma > major || ma == major && mi >= minor
}

// runBIRD runs BIRD 2 with conf in namespace ns until the test ends.
func runBIRD(t *testing.T, ns, conf string) {
	t.Helper()
	dir := t.TempDir()
	cfg := dir + "/bird.conf"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", cfg, "-s", dir+"/bird.ctl", "-P", dir+"/bird.pid")
	var logb strings.Builder
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("bird log:\n%s", logb.String())
		}
	})
}
