package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"podnet/lab/labtest"
)

// TestLabSoakUsage: a soak too short to judge or without a second node
// is refused as a usage error (exit 2) naming the flag, before any lab
// is built.
func TestLabSoakUsage(t *testing.T) {
	bin := labtest.Binary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "5s"}, "--duration 5s: must be at least 20s"},
		{[]string{"--nodes", "1"}, "--nodes 1: must be 2 or more"},
		{[]string{"--duration", "soon"}, `invalid argument "soon" for "--duration"`},
	} {
		out, err := exec.Command(bin, append([]string{"lab", "soak", "--name", "tsoakusage"}, tc.args...)...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(out), tc.want) {
			t.Errorf("lab soak %q: %v, output %q; want exit %d and %q", tc.args, err, out, exitUsage, tc.want)
		}
	}
}
