package main

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestLabTour runs `podnet lab tour` end to end in a fresh lab: every
// step's checks pass, the lab is left as found, and a check that fails
// (a pod whose HTTP server was killed) makes the exit status non-zero.
func TestLabTour(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, HTTPServer: lab.HTTPBuiltin})
	name := l.Name()
	_, run := labCLI(t, "PODNET_LAB=", "PODNET_SOCKET=", "PODNET_DATASTORE_ENDPOINTS=")
	before := l.Status().Pods

	out, err := run("lab", "tour", "--name", name)
	if err != nil {
		t.Fatalf("lab tour: %v\n%s", err, out)
	}
	for i := 1; i <= len(lab.TourSteps()); i++ {
		if !strings.Contains(out, "ok   step "+itoa(i)+"\n") {
			t.Errorf("lab tour: no \"ok   step %d\"", i)
		}
	}
	for _, want := range []string{
		"$ podnet lab exec --name " + name + " fabric -- tcpdump ",
		"IP 10.77.0.12 > 10.77.0.11: IP ",     // IP-in-IP on the wire
		"> 10.77.0.11.4789: VXLAN, flags [I]", // then VXLAN
		"why: ",
		"tour done: every check passed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lab tour output lacks %q", want)
		}
	}
	// Left as found: same pods, IP-in-IP again, no tour pool, pool enabled.
	l, err = lab.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if after := l.Status().Pods; len(after) != len(before) {
		t.Errorf("pods after the tour: %+v, before: %+v", after, before)
	}
	pools, err := l.Output(t.Context(), "fabric", "podnet", "get", "ippool", "-o", "wide")
	if err != nil || strings.Contains(string(pools), "tour-pool") || !strings.Contains(string(pools), "Always     Never       false") {
		t.Errorf("pools after the tour: %v\n%s", err, pools)
	}
	if t.Failed() {
		t.Logf("tour output:\n%s", out)
	}

	// A check that fails: test-3 no longer serves its page.
	var pid int
	for _, p := range l.Status().Pods {
		if p.Name == "test-3" {
			pid = p.HTTPPID
		}
	}
	if pid == 0 {
		t.Fatal("no HTTP server pid for test-3")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out, err = run("lab", "tour", "--name", name, "--step", "2")
	if err == nil || !strings.Contains(out, "FAIL step 2: ") || !strings.Contains(out, "cannot fetch test-3's page") || strings.Contains(out, "step 1/") {
		t.Errorf("lab tour --step 2 with test-3's server killed: got %v\n%s", err, out)
	}
	// A step that does not exist is a usage error (exit 2).
	var ee *exec.ExitError
	if out, err := run("lab", "tour", "--name", name, "--step", "9"); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, "--step 9: want 1..8") {
		t.Errorf("lab tour --step 9: got %v, %s", err, out)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
