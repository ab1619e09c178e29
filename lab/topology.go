package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// buildFabric creates the underlay: the fabric namespace with bridge br0,
// and one namespace per node joined to br0 by a veth pair (eth0 in the
// node, w<K> on the bridge).
func (l *Lab) buildFabric(ctx context.Context, nodes int) error {
	name := l.st.Name
	fab := fabricNetns(name)
	subnets := max(l.st.Subnets, 1)
	l.r.progressf("creating fabric %s (%s %s, %d subnet(s))", fab, FabricBridge, FabricAddress, subnets)
	if err := l.addNetns(ctx, fab); err != nil {
		return err
	}
	var cmds [][]string
	for s := 0; s < subnets; s++ {
		br := subnetBridge(s)
		cmds = append(cmds,
			[]string{"ip", "-n", fab, "link", "add", br, "type", "bridge"},
			[]string{"ip", "-n", fab, "addr", "add", subnetGateway(s).String(), "dev", br},
			[]string{"ip", "-n", fab, "link", "set", br, "up"})
	}
	// With several subnets the fabric is a router between them.
	cmds = append(cmds, []string{"ip", "netns", "exec", fab, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"})
	// The bridges are switches, not firewalls: where the kernel has
	// bridge netfilter, it would pass every bridged frame through the
	// fabric's (empty) iptables hooks, a per-packet cost a real switch
	// does not put on the nodes' CPUs, and one that weighs on datapaths
	// sending many small packets far more than on those sending GSO
	// superframes. -e: a kernel without it has no such keys.
	cmds = append(cmds, []string{"ip", "netns", "exec", fab, "sysctl", "-q", "-e", "-w",
		"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0"})
	for _, args := range cmds {
		if _, err := l.r.run(ctx, args...); err != nil {
			return fmt.Errorf("create fabric %s: %w", fab, err)
		}
	}
	for k := 1; k <= nodes; k++ {
		if err := l.addNode(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// addNode creates node k's namespace and plugs it into the fabric.
func (l *Lab) addNode(ctx context.Context, k int) error {
	node := nodeName(k)
	ns := netnsOf(l.st.Name, node)
	fab := fabricNetns(l.st.Name)
	subnets := max(l.st.Subnets, 1)
	addr := nodeUnderlay(k, subnets)
	br, gw := subnetBridge(nodeSubnet(k, subnets)), subnetGateway(nodeSubnet(k, subnets)).Addr()
	dir := filepath.Join(l.st.RunDir, node)
	l.r.progressf("creating node %s (%s, eth0 %s)", node, ns, addr)
	if err := l.addNetns(ctx, ns); err != nil {
		return err
	}
	err := l.update(func(st *state) {
		st.Nodes = append(st.Nodes, nodeState{
			Name:     node,
			Netns:    ns,
			Address:  addr,
			Iface:    "eth0",
			Socket:   filepath.Join(dir, "podnet.sock"),
			StateDir: dir,
			Log:      filepath.Join(dir, "daemon.log"),
		})
	})
	if err != nil {
		return err
	}
	port := fabricPort(k)
	for _, args := range [][]string{
		// Create the pair in the fabric and move the peer straight into
		// the node, so no half of it ever lingers in the root namespace.
		{"ip", "-n", fab, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", fab, "link", "set", port, "master", br},
		{"ip", "-n", fab, "link", "set", port, "up"},
		{"ip", "-n", ns, "addr", "add", addr.String(), "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", gw.String()},
		{"ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
	} {
		if _, err := l.r.run(ctx, args...); err != nil {
			return fmt.Errorf("create node %s: %w", node, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create node %s: state dir: %w", node, err)
	}
	return nil
}

// addNetns creates namespace ns with lo up and records it in the state
// before anything else can fail, so Down always knows about it.
func (l *Lab) addNetns(ctx context.Context, ns string) error {
	if _, err := l.r.run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	if err := l.update(func(st *state) { st.Namespaces = append(st.Namespaces, ns) }); err != nil {
		return err
	}
	if _, err := l.r.run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// memberRE returns the regexp that matches exactly the namespaces of lab
// name: name-fabric, name-external, name-worker<K>, name-test-<J>, and
// name-worker<K>-POD, the namespaces node worker<K>'s daemon makes for
// pods added by hand (HandPodNetnsPrefix), which outlive a daemon that
// died. It is anchored on both ends so lab "podnet" never matches
// "podnet2-fabric" or "podnetx-worker1".
func memberRE(name string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-(fabric|external|worker[0-9]+(-.+)?|test-[0-9]+)$`)
}

// labNamespaces lists the existing namespaces of lab name, pods first and
// the fabric last: the order they are torn down in.
func labNamespaces(name string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces in %s: %w", NetnsDir, err)
	}
	re := memberRE(name)
	var nss []string
	for _, e := range ents {
		if re.MatchString(e.Name()) {
			nss = append(nss, e.Name())
		}
	}
	sortTeardown(name, nss)
	return nss, nil
}

// sortTeardown orders namespaces of lab name for removal: pods, then
// nodes, then external, then the fabric; numbers in numeric order, and
// pods with other names (those added by hand on a node too) after the
// test-N ones.
func sortTeardown(name string, nss []string) {
	rank := func(ns string) (int, int) {
		m := strings.TrimPrefix(ns, name+"-")
		switch {
		case strings.HasPrefix(m, "test-"):
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "test-"))
			return 0, n
		case strings.HasPrefix(m, "worker") && !strings.Contains(m, "-"):
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "worker"))
			return 1, n
		case m == "external":
			return 2, 0
		case m == "fabric":
			return 3, 0
		default:
			// Pods added to the running lab under other names.
			return 0, 1 << 30
		}
	}
	sort.SliceStable(nss, func(i, j int) bool {
		ri, ni := rank(nss[i])
		rj, nj := rank(nss[j])
		if ri != rj {
			return ri < rj
		}
		return ni < nj
	})
}
