package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"time"

	"podnet/lab"
)

// CrossNodeConfig configures the pod-to-pod comparison across two nodes.
type CrossNodeConfig struct {
	// Binary is the podnet binary for the labs; "" = os.Executable().
	Binary string
	// Seconds per iperf3 run; 0 means 5.
	Seconds int
	// Streams lists the parallel-stream counts; nil means {1}.
	Streams []int
	// UDP adds a 64-byte-frame UDP run (packets per second).
	UDP bool
	// Progress receives a line per step; nil discards.
	Progress io.Writer
}

// CrossNode measures TCP between pods on two nodes of the same lab
// topology: first the kernel routing directly (pods on veths, static
// routes between the nodes), then podnet with IP-in-IP and with plain
// routing (ipipMode Never).
func CrossNode(ctx context.Context, cfg CrossNodeConfig) ([]Result, error) {
	if cfg.Seconds == 0 {
		cfg.Seconds = 5
	}
	if len(cfg.Streams) == 0 {
		cfg.Streams = []int{1}
	}
	say := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", args...)
		}
	}
	var out []Result
	for _, k := range []struct {
		name  string
		vxlan bool
	}{{"kernel direct routing (veth)", false}, {"kernel VXLAN (vxlan device)", true}} {
		say("%s ...", k.name)
		rs, err := kernelRouted(ctx, cfg, k.name, k.vxlan)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	for _, mode := range []struct{ name, encap string }{
		{"podnet VXLAN", lab.EncapVXLAN},
		{"podnet IP-in-IP", lab.EncapIPIP},
		{"podnet routed (ipipMode Never)", lab.EncapNone},
	} {
		say("%s ...", mode.name)
		l, err := lab.Up(ctx, lab.Config{Name: "pnbenchx", Nodes: 2, Pods: 2, Binary: cfg.Binary, Encap: mode.encap, HTTPServer: lab.HTTPBuiltin})
		if err != nil {
			return nil, err
		}
		client, _ := l.Netns("test-1")
		server, _ := l.Netns("test-2")
		if err := waitPing(ctx, client, l.PodIP("test-2").String()); err != nil {
			l.Down()
			return nil, fmt.Errorf("%s: %w", mode.name, err)
		}
		rs, err := runAll(ctx, cfg, mode.name, client, server, l.PodIP("test-2").String())
		l.Down()
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// waitPing waits until addr answers from netns ns (routes converge).
func waitPing(ctx context.Context, ns, addr string) error {
	var out []byte
	var err error
	for try := 0; try < 60; try++ {
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr).CombinedOutput()
		if err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s does not answer from %s: %v\n%s", addr, ns, err, out)
}

// runAll runs the TCP stream counts and, when asked, the small-UDP test.
func runAll(ctx context.Context, cfg CrossNodeConfig, name, client, server, addr string) ([]Result, error) {
	var rs []Result
	for _, st := range cfg.Streams {
		r, err := iperf3(ctx, client, server, addr, cfg.Seconds, st)
		if err != nil {
			return nil, err
		}
		r.Path = name
		rs = append(rs, r)
	}
	if cfg.UDP {
		r, err := iperf3UDP(ctx, client, server, addr, cfg.Seconds)
		if err != nil {
			return nil, err
		}
		r.Path = name
		rs = append(rs, r)
	}
	return rs, nil
}

// kernelRouted builds the same two-node fabric without podnet: each pod
// is a namespace on a veth into its node; the nodes route the other pod's
// subnet to each other over the fabric, directly or (vxlan) through a
// kernel VXLAN device with VNI 4096 on port 4789.
func kernelRouted(ctx context.Context, cfg CrossNodeConfig, name string, vxlan bool) ([]Result, error) {
	l, err := lab.Up(ctx, lab.Config{Name: "pnbenchk", Nodes: 2, NoDaemon: true, Binary: cfg.Binary})
	if err != nil {
		return nil, err
	}
	defer l.Down()
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
	if vxlan {
		// Static VXLAN between the two nodes, 50 bytes of overhead, as a
		// CNI would set it up.
		steps = append(steps,
			[]string{"-n", w1, "link", "add", "vx0", "type", "vxlan", "id", "4096", "dstport", "4789", "local", a1, "remote", a2},
			[]string{"-n", w2, "link", "add", "vx0", "type", "vxlan", "id", "4096", "dstport", "4789", "local", a2, "remote", a1},
			[]string{"-n", w1, "addr", "add", "10.211.0.1/24", "dev", "vx0"}, []string{"-n", w1, "link", "set", "vx0", "up"},
			[]string{"-n", w2, "addr", "add", "10.211.0.2/24", "dev", "vx0"}, []string{"-n", w2, "link", "set", "vx0", "up"},
			[]string{"-n", p1, "link", "set", "eth0", "mtu", "1450"}, []string{"-n", p2, "link", "set", "eth0", "mtu", "1450"},
			[]string{"-n", w1, "route", "add", "10.210.2.0/24", "via", "10.211.0.2"},
			[]string{"-n", w2, "route", "add", "10.210.1.0/24", "via", "10.211.0.1"})
	} else {
		steps = append(steps,
			[]string{"-n", w1, "route", "add", "10.210.2.0/24", "via", a2},
			[]string{"-n", w2, "route", "add", "10.210.1.0/24", "via", a1})
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %v: %w\n%s", s, err, out)
		}
	}
	if err := waitPing(ctx, p1, "10.210.2.2"); err != nil {
		return nil, err
	}
	return runAll(ctx, cfg, name, p1, p2, "10.210.2.2")
}
