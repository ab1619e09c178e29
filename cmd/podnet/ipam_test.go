package main

import (
	"bytes"
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"podnet/api"
	"podnet/datastore"
	"podnet/ipam"
	"podnet/resources"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestIPAMShowGolden(t *testing.T) {
	p := netip.MustParsePrefix
	usage := []ipam.PoolUsage{
		{Name: "default-ipv4-ippool", CIDR: p("192.168.0.0/16"), Total: 65536, InUse: 5, Blocks: []ipam.BlockUsage{
			{CIDR: p("192.168.48.0/26"), Pool: "default-ipv4-ippool", Node: "worker1", Total: 64, InUse: 3},
			{CIDR: p("192.168.201.64/26"), Pool: "default-ipv4-ippool", Node: "worker2", Total: 64, InUse: 2},
		}},
		{Name: "new-pool", CIDR: p("10.10.0.0/28"), Total: 16, InUse: 16, Blocks: []ipam.BlockUsage{
			{CIDR: p("10.10.0.0/28"), Pool: "new-pool", Total: 16, InUse: 16},
		}},
	}
	for _, tt := range []struct {
		name   string
		blocks bool
	}{{"ipam-show", false}, {"ipam-show-blocks", true}} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			writeUsage(&b, usage, tt.blocks)
			golden(t, tt.name, b.Bytes())
		})
	}
}

// TestIPAMCheck runs `ipam check` and `ipam release --leaked` on a real
// datastore holding each kind of problem: a pod address no endpoint has,
// a tunnel address of a node that is gone, an endpoint whose address IPAM
// never allocated, next to addresses that are fine.
func TestIPAMCheck(t *testing.T) {
	c := newCLI(t)
	ctx := context.Background()
	s, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{c.endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res := resources.New(s, resources.Options{})
	m := ipam.New(s)
	pool := api.NewIPPool("p")
	pool.Spec.CIDR = "10.40.0.0/24"
	if _, err := res.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Create(ctx, api.NewNode("worker1")); err != nil {
		t.Fatal(err)
	}
	pools := []ipam.Pool{{Name: "p", CIDR: netip.MustParsePrefix("10.40.0.0/24"), BlockSize: 26}}
	assign := func(ip, node, handle string, attrs map[string]string) {
		t.Helper()
		if err := m.AssignIP(ctx, ipam.AssignIPArgs{IP: netip.MustParseAddr(ip), Node: node, HandleID: handle, Attrs: attrs, Pools: pools}); err != nil {
			t.Fatal(err)
		}
	}
	wep := func(node, pod, ip string) {
		t.Helper()
		w := api.NewWorkloadEndpoint(api.WorkloadEndpointName(node, pod))
		w.Spec = api.WorkloadEndpointSpec{Node: node, Workload: pod, InterfaceName: "eth0", IPNetworks: []string{ip + "/32"}}
		if _, err := res.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// ipamCmd runs "ipam ARGS..." and checks the exit code main would
	// give: 3 while the check finds problems, else 0.
	ipamCmd := func(code int, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		old := stdout
		stdout = &out
		defer func() { stdout = old }()
		cmd := newIPAMCmd()
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		cmd.SetArgs(append(args, "--datastore", c.endpoint))
		if err := cmd.ExecuteContext(ctx); exitCode(err) != code {
			t.Fatalf("ipam %v: exit code %d (error %v), want %d", args, exitCode(err), err, code)
		}
		return out.String()
	}
	assign("10.40.0.1", "worker1", "pod.worker1.a", map[string]string{"type": "pod", "pod": "a"})
	wep("worker1", "a", "10.40.0.1")
	assign("10.40.0.3", "worker1", "ipip-tunnel-addr-worker1", map[string]string{"type": "ipipTunnelAddress"})
	if out := ipamCmd(exitOK, "check"); !strings.Contains(out, "Check complete; found 0 problems.") {
		t.Fatalf("before the problems: got\n%s", out)
	}
	assign("10.40.0.2", "worker1", "pod.worker1.b", map[string]string{"type": "pod", "pod": "b"})        // leaked
	assign("10.40.0.4", "gone", "ipip-tunnel-addr-gone", map[string]string{"type": "ipipTunnelAddress"}) // leaked
	wep("worker1", "c", "10.40.0.9")                                                                     // not allocated

	wantOut(t, ipamCmd(exitProblems, "check"), `Checking IPAM for inconsistencies...
Found 4 allocations in 1 blocks, 2 workload endpoints, 1 nodes (0 with a running daemon).
  10.40.0.9 is used by workload endpoint worker1-c but not allocated in IPAM
  10.40.0.2 leaked: no workload endpoint has it (node worker1 has no running daemon); handle pod.worker1.b, attrs node=worker1,pod=b,type=pod
  10.40.0.4 leaked: node gone does not exist; handle ipip-tunnel-addr-gone, attrs node=gone,type=ipipTunnelAddress
Found 2 IPs that are allocated in IPAM but not actually in use.
Found 0 in-use IPs that are not in active IP pools.
Found 0 blocks that are in no IP pool.
Found 0 handle counts that do not match the blocks.
Check complete; found 3 problems.
Release leaked addresses with: podnet ipam release --leaked
`)
	// Between its two checks pod b's endpoint appears, as when b was
	// being added: b's address is in use then and stays; the other goes.
	wait := leakRecheckWait
	t.Cleanup(func() { leakRecheckWait = wait })
	leakRecheckWait = func(context.Context, time.Duration) error {
		wep("worker1", "b", "10.40.0.2")
		return nil
	}
	wantOut(t, ipamCmd(exitOK, "release", "--leaked"), `Found 2 leaked addresses; checking again in 45s, so that pods being added are not taken for leaks
1 of them are in use now or changed: not released
Successfully released IP address 10.40.0.4
`)
	res.Delete(ctx, api.KindWorkloadEndpoint, api.WorkloadEndpointName("worker1", "b"), resources.DeleteOptions{})
	leakRecheckWait = func(context.Context, time.Duration) error { return nil }
	wantOut(t, ipamCmd(exitOK, "release", "--leaked", "--grace=0s"), `Found 1 leaked addresses; checking again in 0s, so that pods being added are not taken for leaks
Successfully released IP address 10.40.0.2
`)
	out := ipamCmd(exitProblems, "check")
	if !strings.Contains(out, "Found 0 IPs that are allocated") || !strings.Contains(out, "Check complete; found 1 problems.") {
		t.Fatalf("after release: got\n%s", out)
	}

	// -o json: camelCase keys, the block's node among them.
	if j := ipamCmd(exitOK, "show", "-o", "json"); !strings.Contains(j, `"inUse": 2`) || !strings.Contains(j, `"node": "worker1"`) || !strings.Contains(j, `"cidr": "10.40.0.0/26"`) {
		t.Fatalf("ipam show -o json: got\n%s", j)
	}

	res.Delete(ctx, api.KindWorkloadEndpoint, api.WorkloadEndpointName("worker1", "c"), resources.DeleteOptions{})
	if out := ipamCmd(exitOK, "check"); !strings.Contains(out, "Check complete; found 0 problems.") {
		t.Fatalf("clean: got\n%s", out)
	}

	// A pool deleted under its allocations: IPAM's own check notices the
	// addresses and their block.
	if _, err := res.Delete(ctx, api.KindIPPool, "p", resources.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out = ipamCmd(exitProblems, "check")
	for _, want := range []string{"Found 2 in-use IPs that are not in active IP pools.",
		"10.40.0.1 is allocated in block 10.40.0.0/26, which no IP pool holds",
		"block 10.40.0.0/26 (affine to node worker1, 2 addresses in use) is in no IP pool",
		"Found 1 blocks that are in no IP pool."} {
		if !strings.Contains(out, want) {
			t.Fatalf("after pool delete: want %q in\n%s", want, out)
		}
	}
}
