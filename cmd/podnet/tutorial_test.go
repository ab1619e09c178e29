package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// tutorialScript returns the sh blocks of docs/tutorial.md, in order, as
// one script.
func tutorialScript(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../../docs/tutorial.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var script strings.Builder
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == "```sh":
			in = true
		case in && line == "```":
			in = false
		case in:
			script.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if in {
		t.Fatal("docs/tutorial.md: an sh block is not closed")
	}
	return script.String()
}

// TestTutorial runs every command of docs/tutorial.md, as written, in a
// fresh lab, stopping at the first that fails, and checks that what the
// text explains really shows in the output: TTLs, the outer headers on
// the wire before and after the switch to VXLAN, the MTUs, NAT, the new
// pool's address.
func TestTutorial(t *testing.T) {
	labtest.RequireRoot(t)
	name := labtest.Name()
	t.Cleanup(func() {
		if err := lab.Down(name); err != nil {
			t.Errorf("remove lab %s: %v", name, err)
		}
	})
	// The script says `podnet`: give it that name whatever the test
	// binary is called (podnet-race under -race).
	dir := t.TempDir()
	if err := os.Symlink(labtest.Binary(t), filepath.Join(dir, "podnet")); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "podnet.cfg")
	if err := os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-e", "-x", "-c", tutorialScript(t))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "PODNET_LAB="+name, "PODNET_CONFIG="+cfg,
		"PODNET_SOCKET=", "PODNET_DATASTORE_ENDPOINTS=")
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("the tutorial's commands failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"ttl=63",                          // same node: one switch
		"ttl=62",                          // across nodes: two switches
		"IP 10.77.0.12 > 10.77.0.11: IP ", // IP-in-IP on the fabric
		"> 10.77.0.11.4789: VXLAN",        // VXLAN after the patch
		"10.77.0.11:",                     // /whoami: the node's address, through NAT
		"from 10.77.0.100: icmp_seq=1 ttl=64",
		"remote     vxlan",
		"mtu 1450",     // existing pods follow the switch to VXLAN
		"podMTU: 1450", // and the Node resource
		"1430 bytes from ",
		"message too long, mtu=1450",
		"outer ce over ect0: the packet goes on as ce", // ECN across the tunnel
		"dropped on worker1 (ecn-not-ect)",
		"refused: new1 still holds an address",
		"lab " + name + " removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tutorial output lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^pod MTU: +1450$`).MatchString(out) {
		t.Errorf("tutorial: podnet status does not say pod MTU 1450 after the switch to VXLAN")
	}
	if !strings.Contains(out, "pod new1 added on ") || !strings.Contains(out, ": 10.10.") {
		t.Errorf("tutorial: new1 did not get an address of the new pool 10.10.0.0/16")
	}
	// Shown with -v, and on failure.
	t.Logf("tutorial output:\n%s", out)
}
