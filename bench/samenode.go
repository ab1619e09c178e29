package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"

	"podnet/lab"
)

// SameNodeConfig configures the same-node pod-to-pod comparison.
type SameNodeConfig struct {
	// Binary is the podnet binary for the labs; "" = os.Executable().
	Binary string
	// Seconds per iperf3 run; 0 means 5.
	Seconds int
	// Streams lists the parallel-stream counts to run; nil means {1}.
	Streams []int
	// Progress receives a line per step; nil discards.
	Progress io.Writer
}

// SameNode measures pod-to-pod TCP on one node: first a kernel veth pair
// between two namespaces (the ceiling for two namespaces talking on this
// machine), then podnet with offloading TAPs, then with plain TAPs.
func SameNode(ctx context.Context, cfg SameNodeConfig) ([]Result, error) {
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
	say("kernel veth pair ...")
	rs, err := vethBaseline(ctx, cfg)
	if err != nil {
		return nil, err
	}
	out = append(out, rs...)
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"podnet TAP offload (TSO)", nil},
		{"podnet TAP plain (water)", []string{"--tap-offload=false"}},
	} {
		say("%s ...", mode.name)
		rs, err := labRun(ctx, cfg, mode.name, mode.args)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

func vethBaseline(ctx context.Context, cfg SameNodeConfig) ([]Result, error) {
	a, b := "pnbench-vetha", "pnbench-vethb"
	cleanup := func() {
		exec.Command("ip", "netns", "del", a).Run()
		exec.Command("ip", "netns", "del", b).Run()
	}
	cleanup()
	defer cleanup()
	steps := [][]string{
		{"netns", "add", a}, {"netns", "add", b},
		{"-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b},
		{"-n", a, "addr", "add", "10.201.0.1/24", "dev", "eth0"},
		{"-n", b, "addr", "add", "10.201.0.2/24", "dev", "eth0"},
		{"-n", a, "link", "set", "eth0", "up"}, {"-n", b, "link", "set", "eth0", "up"},
		{"-n", a, "link", "set", "lo", "up"}, {"-n", b, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %v: %w\n%s", s, err, out)
		}
	}
	var rs []Result
	for _, st := range cfg.Streams {
		r, err := iperf3(ctx, a, b, "10.201.0.2", cfg.Seconds, st)
		if err != nil {
			return nil, err
		}
		r.Path = "kernel veth pair"
		rs = append(rs, r)
	}
	return rs, nil
}

func labRun(ctx context.Context, cfg SameNodeConfig, name string, daemonArgs []string) ([]Result, error) {
	l, err := lab.Up(ctx, lab.Config{Name: "pnbench", Nodes: 1, Pods: 2, Binary: cfg.Binary,
		DaemonArgs: daemonArgs, HTTPServer: lab.HTTPBuiltin})
	if err != nil {
		return nil, err
	}
	defer l.Down()
	st := l.Status()
	var client, server string
	for _, p := range st.Pods {
		switch p.Name {
		case "test-1":
			client = p.Netns
		case "test-2":
			server = p.Netns
		}
	}
	var rs []Result
	for _, s := range cfg.Streams {
		r, err := iperf3(ctx, client, server, l.PodIP("test-2").String(), cfg.Seconds, s)
		if err != nil {
			return nil, err
		}
		r.Path = name
		rs = append(rs, r)
	}
	return rs, nil
}
