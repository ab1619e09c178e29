package main

import (
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestLabFlagUsage: a bad value of a lab flag is a usage error (exit 2)
// naming the flag, found before anything is built or opened; --nodes 0
// and --subnets 0 are refused, not taken for the defaults.
func TestLabFlagUsage(t *testing.T) {
	name := labtest.Name()
	// Should a check be missing, lab up builds a lab: a small one, removed.
	t.Cleanup(func() { lab.Down(name) })
	up := func(flags ...string) []string {
		return append([]string{"lab", "up", "--name", name, "--no-daemon", "--nodes", "1"}, flags...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{up("--nodes", "0"), "--nodes 0: must be 1..244"},
		{up("--nodes", "-1"), "--nodes -1: must be 1..244"},
		{[]string{"lab", "up", "--name", name, "--nodes", "1", "--pods", "254"}, "--pods 254: at most 253 per node"},
		{up("--subnets", "0"), "--subnets 0: must be 1 or 2"},
		{up("--subnets", "-2"), "--subnets -2: must be 1 or 2"},
		{up("--subnets", "3"), "--subnets 3: must be 1 or 2"},
		{up("--encap", "gre"), `--encap "gre": want ipip, vxlan, crosssubnet, ipip-crosssubnet or none`},
		{up("--http-server", "apache"), `--http-server "apache": want "nginx", "builtin"`},
		{[]string{"lab", "up", "--name", "Bad", "--no-daemon"}, `--name: lab name "Bad": must match`},
		{[]string{"lab", "status", "--name", "my-lab"}, `--name: lab name "my-lab"`},
		{[]string{"lab", "down", "--name", "Bad"}, `--name: lab name "Bad"`},
		{[]string{"lab", "exec", "test-1", "--name", "Bad", "--", "true"}, `--name: lab name "Bad"`},
		{[]string{"lab", "soak", "--name", "Bad"}, `--name: lab name "Bad"`},
		{[]string{"lab", "tour", "--step", "99"}, `--step 99: want 1..`},
		{[]string{"lab", "graph", "--name", name, "--format", "png"}, `--format "png": want one of`},
		{[]string{"lab", "events", "--name", name, "--seconds", "-1"}, "--seconds: -1 is negative"},
		{[]string{"lab", "serve-http", "--pod", "p", "--node", "n", "--ip", "nope", "--addr", "127.0.0.1:0"}, `--ip "nope"`},
	} {
		_, err := runPodnet(t, tc.args...)
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("podnet %s: exit %d, %v; want exit %d and %q", strings.Join(tc.args, " "), exitCode(err), err, exitUsage, tc.want)
		}
	}
}
