package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestLabTraceAndCapture: what `lab trace` says happens is what happens
// (--probe checks it from each node's counters), for a packet delivered
// across nodes, one leaving through NAT, one dropped at the far node and
// one whose TTL runs out there; `capture` shows the underlay's VXLAN
// with the pod packets inside, and its pcap opens in tshark.
func TestLabTraceAndCapture(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapVXLAN})
	bin, run := labCLI(t, "PODNET_LAB="+l.Name())
	ip2 := l.PodIP("test-2")
	// An address of test-2's block that no pod has: worker2 blackholes it.
	b := ip2.As4()
	b[3] ^= 0x20 // the same /26, another address
	unused := netip.AddrFrom4(b)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"across nodes", []string{"test-1", "test-2"}, []string{"on worker1:", "encapsulated to node " + l.NodeAddr("worker2").String() + " over vxlan", "on worker2:", "result: delivered to pod test-2", "probe: confirmed on 2 node(s)"}},
		{"outside", []string{"test-1", "external"}, []string{"result: leaves the cluster through NAT on worker1 as " + l.NodeAddr("worker1").String(), "probe: confirmed on 1 node(s)"}},
		{"unused address", []string{"test-1", unused.String()}, []string{"result: dropped on worker2 (blackhole)", "probe: confirmed on 2 node(s)", "the last node dropped it"}},
		{"ttl 2", []string{"test-1", "test-2", "--ttl", "2"}, []string{"result: dropped on worker2 (ttl-exceeded)", "icmp back to the sender: time exceeded", "probe: confirmed on 2 node(s)"}},
		{"ecn", []string{"test-1", "test-2", "--ecn", "ect0"}, []string{"IPv4 (ECN ect0)", "outer ect0 over ect0: unchanged", "result: delivered to pod test-2", "probe: confirmed on 2 node(s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			traceSays(t, run, tc.args, tc.want)
		})
	}
	// A router on the underlay that marked the outer header CE: what the
	// far node makes of it (no probe: a real ping's outer field is what
	// the tunnel writes).
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ecn", "ect0", "--outer-ecn", "ce"}, "outer ce over ect0: the packet goes on as ce"},
		{[]string{"--outer-ecn", "ce"}, "result: dropped on worker2 (ecn-not-ect)"},
	} {
		out, err := run(append([]string{"lab", "trace", "test-1", "test-2"}, tc.args...)...)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("lab trace %v: %v, want %q in\n%s", tc.args, err, tc.want, out)
		}
	}
	if out, err := run("lab", "trace", "--probe", "test-1", "test-2", "--outer-ecn", "ce"); err == nil || !strings.Contains(out, "leave out --outer-ecn") {
		t.Errorf("lab trace --probe --outer-ecn: %v, want a refusal saying why\n%s", err, out)
	}

	// Capture while pinging: the underlay shows VXLAN around the pods'
	// ICMP; a pcap of the tunnel's inner packets opens in tshark.
	// Pings go on until the capture has what it needs: on a busy machine
	// the capture can take a while to start.
	ping := func() (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.Output(ctx, "test-1", "ping", "-c", "100", "-i", "0.2", ip2.String())
		}()
		return func() { cancel(); <-done }
	}
	stop := ping()
	out, err := run("lab", "exec", "worker1", "--", bin, "capture", "underlay", "-c", "2", "--seconds", "20", "host", ip2.String())
	stop()
	if err != nil || strings.Count(out, "VXLAN vni 4096 | ") != 2 || !strings.Contains(out, "> "+ip2.String()) {
		t.Errorf("capture underlay: %v\n%s\nwant 2 VXLAN lines with the pod packets inside", err, out)
	}
	// lab capture: the same, named the lab's way (a pod's port here).
	stop = ping()
	out, err = run("lab", "capture", "test-2", "-c", "2", "--seconds", "20", "icmp")
	stop()
	if err != nil || strings.Count(out, ip2.String()) < 2 || strings.Contains(out, "VXLAN") {
		t.Errorf("lab capture test-2: %v\n%s\nwant 2 plain ICMP lines with %s", err, out, ip2)
	}
	file := filepath.Join(t.TempDir(), "vxlan.pcap")
	stop = ping()
	out, err = run("lab", "exec", "worker1", "--", bin, "capture", "vxlan", "-c", "2", "--seconds", "20", "-w", file)
	stop()
	if err != nil {
		t.Fatalf("capture -w: %v\n%s", err, out)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "ip.dst")
	cmd.Stderr = &stderr
	got, err := cmd.Output()
	if err != nil || !strings.Contains(string(got), ip2.String()) {
		t.Errorf("tshark -r %s: %v\n%s%s", file, err, got, stderr.Bytes())
	}
}

// traceSays runs `lab trace --probe args` and requires every line of want
// in what it prints.
func traceSays(t *testing.T, run func(args ...string) (string, error), args, want []string) {
	t.Helper()
	out, err := run(append([]string{"lab", "trace", "--probe"}, args...)...)
	if err != nil {
		t.Fatalf("lab trace %v: %v\n%s", args, err, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("lab trace %v: no %q in\n%s", args, w, out)
		}
	}
}

// TestLabTracePlainRouting: with plain routing both nodes' kernels route
// between the switches. The trace says so, TTL included (the far pod gets
// TTL 60), a TTL that runs out in a kernel is shown there, and --probe
// works from a pod given by its address.
func TestLabTracePlainRouting(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapNone})
	_, run := labCLI(t, "PODNET_LAB="+l.Name())
	ip1 := l.PodIP("test-1").String()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"across nodes", []string{ip1, "test-2"}, []string{"on worker2:", "61 on arrival", "61 → 60", "ttl=60", "result: delivered to pod test-2", "probe: confirmed on 2 node(s)"}},
		{"ttl 3", []string{"test-1", "test-2", "--ttl", "3"}, []string{"on worker2 (its kernel, not the switch)", "result: dropped in worker2's kernel (ttl-exceeded)", "probe: confirmed", "kernel sent time exceeded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			traceSays(t, run, tc.args, tc.want)
		})
	}
}

// labCLI is the podnet binary built for the lab tests and a runner of it
// with a client config of its own (no datastore settings from the
// machine) and env added: its combined output and error.
func labCLI(t *testing.T, env ...string) (bin string, run func(args ...string) (string, error)) {
	t.Helper()
	bin = labtest.Binary(t)
	cfg := filepath.Join(t.TempDir(), "podnet.cfg")
	if err := os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(append(os.Environ(), "PODNET_CONFIG="+cfg), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}
