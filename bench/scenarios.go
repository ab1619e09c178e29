package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

	"podnet/lab"
)

// DefaultLabPrefix starts the name of every lab and namespace the suite
// makes (Config.LabPrefix).
const DefaultLabPrefix = "pnb"

// labSuffixes are the suite's labs, each named LabPrefix+suffix.
var labSuffixes = []string{"same", "samep", "kd", "xvx", "xip", "xrt", "nk", "nm", "nat"}

func (cfg *Config) labName(suffix string) string { return cfg.LabPrefix + suffix }

// vethNames are the namespaces of the kernel veth pair path.
func (cfg *Config) vethNames() (string, string) {
	return cfg.LabPrefix + "-vetha", cfg.LabPrefix + "-vethb"
}

// kernelTunnel is a kernel encapsulation measured as the reference for
// cross-node paths: a link of that type on each node, pods routed over it.
type kernelTunnel struct {
	name    string // path name
	lab     string // lab name suffix
	kind    string // ip link type
	args    func(local, remote string) []string
	podMTU  int
	comment string
}

var kernelTunnels = []kernelTunnel{
	{name: "kernel VXLAN (vxlan device)", lab: "kvx", kind: "vxlan", podMTU: 1450,
		args: func(l, r string) []string { return []string{"id", "4096", "dstport", "4789", "local", l, "remote", r} }},
	{name: "kernel IP-in-IP (ipip device)", lab: "kipip", kind: "ipip", podMTU: 1480,
		args: func(l, r string) []string { return []string{"local", l, "remote", r} }},
	{name: "kernel GRE (gre device)", lab: "kgre", kind: "gre", podMTU: 1476,
		args: func(l, r string) []string { return []string{"local", l, "remote", r} }},
	{name: "kernel Geneve (geneve device)", lab: "kgnv", kind: "geneve", podMTU: 1450,
		args: func(l, r string) []string { return []string{"id", "4096", "remote", r} }},
}

// wireguardName is listed so that its absence is reported: a kernel
// WireGuard reference needs keys exchanged between the nodes (wg(8)),
// which the suite does not set up.
const wireguardName = "kernel WireGuard (wireguard device)"

// Podnet and other kernel path names, also used as ratio references.
const (
	pathVeth        = "kernel veth pair"
	pathTAPOffload  = "podnet TAP offload (TSO)"
	pathTAPPlain    = "podnet TAP plain (water)"
	pathDirect      = "kernel direct routing (veth)"
	pathPodnetVXLAN = "podnet VXLAN"
	pathPodnetIPIP  = "podnet IP-in-IP"
	pathPodnetNone  = "podnet routed (ipipMode Never)"
	pathNATRouting  = "kernel routing (no translation)"
	pathNATMasq     = "kernel MASQUERADE (nftables)"
	pathPodnetNAT   = "podnet NAT outgoing"
)

// probeLinkType says whether the kernel can create a link of kind, by
// trying in a scratch namespace; the error is the reason it cannot.
func probeLinkType(prefix, kind string) error {
	ns := prefix + "-probe"
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	args := []string{"-n", ns, "link", "add", "probe0", "type", kind}
	switch kind {
	case "vxlan", "geneve":
		args = append(args, "id", "1", "remote", "10.0.0.2")
		if kind == "vxlan" {
			args = append(args, "dstport", "4789")
		}
	case "ipip", "gre":
		args = append(args, "local", "10.0.0.1", "remote", "10.0.0.2")
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("this kernel cannot create links of type %s (ip link add: %s)", kind, strings.TrimSpace(string(out)))
	}
	return nil
}

// scenarioPaths lists the paths of a scenario, kernel first, and the
// kernel references this machine cannot build.
func scenarioPaths(cfg *Config, sc string) ([]pathSpec, []Skipped) {
	podnet := func(name, ref string, build func(context.Context, *Config) (*target, func(), error)) pathSpec {
		return pathSpec{Path: Path{Name: name, Scenario: sc, Kind: KindPodnet, Reference: ref, CPUSource: CPUDaemon}, build: build}
	}
	kernel := func(name string, build func(context.Context, *Config) (*target, func(), error)) pathSpec {
		return pathSpec{Path: Path{Name: name, Scenario: sc, Kind: KindKernel, CPUSource: CPUMachine}, build: build}
	}
	switch sc {
	case ScenarioSameNode:
		return []pathSpec{
			kernel(pathVeth, buildVeth),
			podnet(pathTAPOffload, pathVeth, buildPodnet("same", 1, "", nil)),
			podnet(pathTAPPlain, pathVeth, buildPodnet("samep", 1, "", []string{"--tap-offload=false"})),
		}, nil
	case ScenarioCrossNode:
		specs := []pathSpec{kernel(pathDirect, buildKernelRouted("kd", nil))}
		var skipped []Skipped
		have := map[string]bool{}
		for _, k := range kernelTunnels {
			if err := probeLinkType(cfg.LabPrefix, k.kind); err != nil {
				skipped = append(skipped, Skipped{Name: k.name, Reason: err.Error()})
				continue
			}
			have[k.kind] = true
			specs = append(specs, kernel(k.name, buildKernelRouted(k.lab, &k)))
		}
		if err := probeLinkType(cfg.LabPrefix, "wireguard"); err != nil {
			skipped = append(skipped, Skipped{Name: wireguardName, Reason: err.Error()})
		} else {
			skipped = append(skipped, Skipped{Name: wireguardName, Reason: "the suite does not set up WireGuard keys between nodes yet"})
		}
		vxRef, ipipRef := pathDirect, pathDirect
		if have["vxlan"] {
			vxRef = kernelTunnels[0].name
		}
		if have["ipip"] {
			ipipRef = kernelTunnels[1].name
		}
		specs = append(specs,
			podnet(pathPodnetVXLAN, vxRef, buildPodnet("xvx", 2, lab.EncapVXLAN, nil)),
			podnet(pathPodnetIPIP, ipipRef, buildPodnet("xip", 2, lab.EncapIPIP, nil)),
			podnet(pathPodnetNone, pathDirect, buildPodnet("xrt", 2, lab.EncapNone, nil)))
		return specs, skipped
	case ScenarioNAT:
		return []pathSpec{
			kernel(pathNATRouting, buildKernelNAT("nk", false)),
			kernel(pathNATMasq, buildKernelNAT("nm", true)),
			podnet(pathPodnetNAT, pathNATMasq, buildPodnetNAT("nat")),
		}, nil
	}
	return nil, nil
}

// LabNames are the labs the suite builds with prefix; a lab of one of
// these names already up is in the way.
func LabNames(prefix string) []string {
	var names []string
	for _, s := range labSuffixes {
		names = append(names, prefix+s)
	}
	for _, k := range kernelTunnels {
		names = append(names, prefix+k.lab)
	}
	return names
}

func ipSteps(ctx context.Context, steps [][]string) error {
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// buildVeth is two namespaces on a kernel veth pair: the ceiling for two
// namespaces talking on this machine.
func buildVeth(ctx context.Context, cfg *Config) (*target, func(), error) {
	vethA, vethB := cfg.vethNames()
	down := func() {
		exec.Command("ip", "netns", "del", vethA).Run()
		exec.Command("ip", "netns", "del", vethB).Run()
	}
	err := ipSteps(ctx, [][]string{
		{"netns", "add", vethA}, {"netns", "add", vethB},
		{"-n", vethA, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", vethB},
		{"-n", vethA, "addr", "add", "10.201.0.1/24", "dev", "eth0"},
		{"-n", vethB, "addr", "add", "10.201.0.2/24", "dev", "eth0"},
		{"-n", vethA, "link", "set", "eth0", "up"}, {"-n", vethB, "link", "set", "eth0", "up"},
		{"-n", vethA, "link", "set", "lo", "up"}, {"-n", vethB, "link", "set", "lo", "up"},
	})
	if err == nil {
		// The veth carries packets only once the kernel has activated
		// its queue, which can be a second after it is set up.
		err = waitPing(ctx, vethA, "10.201.0.2")
	}
	return &target{client: vethA, server: vethB, addr: netip.MustParseAddr("10.201.0.2"), cpu: machineCPU, iperfUDP: true}, down, err
}

// buildPodnet is a podnet lab with pods test-1 and test-2 (on two nodes
// when nodes is 2); the CPU is its daemons'.
func buildPodnet(suffix string, nodes int, encap string, daemonArgs []string) func(context.Context, *Config) (*target, func(), error) {
	return func(ctx context.Context, cfg *Config) (*target, func(), error) {
		l, err := lab.Up(ctx, lab.Config{Name: cfg.labName(suffix), Nodes: nodes, Pods: 2, Binary: cfg.Binary, Encap: encap,
			DaemonArgs: daemonArgs, HTTPServer: lab.HTTPBuiltin})
		if err != nil {
			return nil, nil, err
		}
		down := func() { l.Down() }
		client, _ := l.Netns("test-1")
		server, _ := l.Netns("test-2")
		addr := l.PodIP("test-2")
		var pids []int
		for _, n := range l.Status().Nodes {
			pids = append(pids, n.PID)
		}
		if err := waitPing(ctx, client, addr.String()); err != nil {
			return nil, down, err
		}
		return &target{client: client, server: server, addr: addr, cpu: func() float64 { return daemonCPU(pids) }}, down, nil
	}
}

// buildKernelRouted builds the two-node fabric without podnet: each pod
// is a namespace on a veth into its node; the nodes route the other
// pod's subnet to each other over the fabric, directly or (tun != nil)
// through a kernel tunnel device.
func buildKernelRouted(suffix string, tun *kernelTunnel) func(context.Context, *Config) (*target, func(), error) {
	return func(ctx context.Context, cfg *Config) (*target, func(), error) {
		l, err := lab.Up(ctx, lab.Config{Name: cfg.labName(suffix), Nodes: 2, NoDaemon: true, Binary: cfg.Binary})
		if err != nil {
			return nil, nil, err
		}
		down := func() { l.Down() }
		w1, _ := l.Netns("worker1")
		w2, _ := l.Netns("worker2")
		// Named like lab pods so that lab down sweeps them too.
		p1, p2 := l.Name()+"-test-1", l.Name()+"-test-2"
		steps := [][]string{
			{"netns", "add", p1}, {"netns", "add", p2},
			{"-n", w1, "link", "add", "pod1", "type", "veth", "peer", "name", "eth0", "netns", p1},
			{"-n", w2, "link", "add", "pod2", "type", "veth", "peer", "name", "eth0", "netns", p2},
			{"-n", w1, "addr", "add", "10.210.1.1/24", "dev", "pod1"}, {"-n", w1, "link", "set", "pod1", "up"},
			{"-n", w2, "addr", "add", "10.210.2.1/24", "dev", "pod2"}, {"-n", w2, "link", "set", "pod2", "up"},
			{"-n", p1, "addr", "add", "10.210.1.2/24", "dev", "eth0"}, {"-n", p1, "link", "set", "eth0", "up"}, {"-n", p1, "link", "set", "lo", "up"},
			{"-n", p2, "addr", "add", "10.210.2.2/24", "dev", "eth0"}, {"-n", p2, "link", "set", "eth0", "up"}, {"-n", p2, "link", "set", "lo", "up"},
			{"-n", p1, "route", "add", "default", "via", "10.210.1.1"}, {"-n", p2, "route", "add", "default", "via", "10.210.2.1"},
		}
		a1, a2 := l.NodeAddr("worker1").String(), l.NodeAddr("worker2").String()
		if tun != nil {
			// A static tunnel between the two nodes, as a CNI would set
			// it up, and pod MTUs that leave room for its header.
			mtu := strconv.Itoa(tun.podMTU)
			steps = append(steps,
				append([]string{"-n", w1, "link", "add", "tun0", "type", tun.kind}, tun.args(a1, a2)...),
				append([]string{"-n", w2, "link", "add", "tun0", "type", tun.kind}, tun.args(a2, a1)...),
				[]string{"-n", w1, "addr", "add", "10.211.0.1/24", "dev", "tun0"}, []string{"-n", w1, "link", "set", "tun0", "up"},
				[]string{"-n", w2, "addr", "add", "10.211.0.2/24", "dev", "tun0"}, []string{"-n", w2, "link", "set", "tun0", "up"},
				[]string{"-n", p1, "link", "set", "eth0", "mtu", mtu}, []string{"-n", p2, "link", "set", "eth0", "mtu", mtu},
				[]string{"-n", w1, "route", "add", "10.210.2.0/24", "via", "10.211.0.2", "dev", "tun0", "onlink"},
				[]string{"-n", w2, "route", "add", "10.210.1.0/24", "via", "10.211.0.1", "dev", "tun0", "onlink"})
		} else {
			steps = append(steps,
				[]string{"-n", w1, "route", "add", "10.210.2.0/24", "via", a2},
				[]string{"-n", w2, "route", "add", "10.210.1.0/24", "via", a1})
		}
		if err := ipSteps(ctx, steps); err != nil {
			return nil, down, err
		}
		if err := waitPing(ctx, p1, "10.210.2.2"); err != nil {
			return nil, down, err
		}
		return &target{client: p1, server: p2, addr: netip.MustParseAddr("10.210.2.2"), cpu: machineCPU,
			iperfUDP: tun == nil}, down, nil
	}
}

// buildKernelNAT is a pod on a node reaching a host outside the cluster
// through the node's kernel: routed with its own address (the outside
// host has a route back), or masqueraded by nftables (it has none).
func buildKernelNAT(suffix string, masq bool) func(context.Context, *Config) (*target, func(), error) {
	return func(ctx context.Context, cfg *Config) (*target, func(), error) {
		k, err := lab.Up(ctx, lab.Config{Name: cfg.labName(suffix), Nodes: 1, NoDaemon: true, Binary: cfg.Binary})
		if err != nil {
			return nil, nil, err
		}
		down := func() { k.Down() }
		w1, _ := k.Netns("worker1")
		fab, _ := k.Netns("fabric")
		pod, extNS := k.Name()+"-test-1", k.Name()+"-external"
		err = ipSteps(ctx, [][]string{
			{"netns", "add", pod}, {"netns", "add", extNS},
			{"-n", w1, "link", "add", "pod1", "type", "veth", "peer", "name", "eth0", "netns", pod},
			{"-n", w1, "addr", "add", "10.210.1.1/24", "dev", "pod1"}, {"-n", w1, "link", "set", "pod1", "up"},
			{"-n", pod, "addr", "add", "10.210.1.2/24", "dev", "eth0"}, {"-n", pod, "link", "set", "eth0", "up"},
			{"-n", pod, "link", "set", "lo", "up"}, {"-n", pod, "route", "add", "default", "via", "10.210.1.1"},
			{"-n", fab, "link", "add", "wx", "type", "veth", "peer", "name", "eth0", "netns", extNS},
			{"-n", fab, "link", "set", "wx", "master", "br0"}, {"-n", fab, "link", "set", "wx", "up"},
			{"-n", extNS, "addr", "add", lab.ExternalAddress.String(), "dev", "eth0"}, {"-n", extNS, "link", "set", "eth0", "up"},
			{"-n", extNS, "link", "set", "lo", "up"},
			{"-n", extNS, "route", "add", "10.210.0.0/16", "via", k.NodeAddr("worker1").String()},
		})
		if err == nil && masq {
			err = masquerade(ctx, w1, extNS)
		}
		ext := lab.ExternalAddress.Addr()
		if err == nil {
			err = waitPing(ctx, pod, ext.String())
		}
		if err != nil {
			return nil, down, err
		}
		return &target{client: pod, server: extNS, addr: ext, cpu: machineCPU, conns: true, download: true}, down, nil
	}
}

// buildPodnetNAT is a one-node podnet lab whose pod reaches the lab's
// outside host through podnet's NAT outgoing.
func buildPodnetNAT(suffix string) func(context.Context, *Config) (*target, func(), error) {
	return func(ctx context.Context, cfg *Config) (*target, func(), error) {
		l, err := lab.Up(ctx, lab.Config{Name: cfg.labName(suffix), Nodes: 1, Pods: 1, Binary: cfg.Binary, HTTPServer: lab.HTTPBuiltin})
		if err != nil {
			return nil, nil, err
		}
		down := func() { l.Down() }
		pns, _ := l.Netns("test-1")
		ens, _ := l.Netns("external")
		pids := []int{l.Status().Nodes[0].PID}
		ext := lab.ExternalAddress.Addr()
		if err := waitPing(ctx, pns, ext.String()); err != nil {
			return nil, down, err
		}
		return &target{client: pns, server: ens, addr: ext, cpu: func() float64 { return daemonCPU(pids) }, conns: true, download: true}, down, nil
	}
}

// linkMTU reads dev's MTU in netns ns; 0 when it cannot.
func linkMTU(ctx context.Context, ns, dev string) int {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-o", "link", "show", dev).Output()
	if err != nil {
		return 0
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "mtu" {
			n, _ := strconv.Atoi(f[i+1])
			return n
		}
	}
	return 0
}
