package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/syscheck"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	vswitch "podnet/switch"
)

// checkRun runs bin with args and returns stdout, stderr and the exit code.
func checkRun(t *testing.T, env []string, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return stdout.String(), stderr.String(), code
}

// checksByName parses `node checksystem -o json`.
func checksByName(t *testing.T, out string) map[string]syscheck.Result {
	t.Helper()
	var rs []syscheck.Result
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("checksystem -o json: %v\n%s", err, out)
	}
	m := map[string]syscheck.Result{}
	for _, r := range rs {
		m[r.Name] = r
	}
	for _, want := range []string{"daemon", "capabilities", "tun", "raw-ipip", "netns", "ip-forward", "bgp-port",
		"vxlan-port", "mtu", "udp-offload", "vxlan-superframes", "ipip-superframes", "forward-firewall", "af-packet", "kernel-tunnels", "datastore"} {
		if _, found := m[want]; !found {
			t.Errorf("checksystem: no %q check in\n%s", want, out)
		}
	}
	return m
}

func wantCheck(t *testing.T, m map[string]syscheck.Result, name string, status syscheck.Status, detail ...string) {
	t.Helper()
	r := m[name]
	if r.Status != status {
		t.Errorf("check %s: got %s (%s; fix: %s), want %s", name, r.Status, r.Detail, r.Fix, status)
	}
	for _, d := range detail {
		if !strings.Contains(r.Detail, d) {
			t.Errorf("check %s: detail %q does not say %q", name, r.Detail, d)
		}
	}
	if (status == syscheck.OK) != (r.Fix == "") {
		t.Errorf("check %s (%s): fix %q; a fix is wanted exactly when the status is not ok", name, r.Status, r.Fix)
	}
}

// TestCheckSystemNetns runs `podnet node checksystem` in a namespace of
// its own, as a machine without a daemon: first clean (exit 0), then with
// BGP's and VXLAN's ports held by listeners this test opens there, a
// smaller underlay MTU and an unreachable datastore (exit 3, each named
// with its holder or error and a fix), and with an underlay that does
// not exist.
func TestCheckSystemNetns(t *testing.T) {
	labtest.RequireRoot(t)
	bin := labtest.Binary(t)
	name := nettest.UniqueName("pncs")
	ns := nettest.Netns(t, name)
	for _, args := range [][]string{
		{"-n", name, "link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"-n", name, "addr", "add", "10.99.0.2/24", "dev", "up0"},
		{"-n", name, "link", "set", "up0", "up"},
		{"-n", name, "link", "set", "up1", "up"},
		{"-n", name, "route", "add", "default", "via", "10.99.0.1"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	if err := netnsutil.Do(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	daemonYAML := filepath.Join(dir, "daemon.yaml")
	clientCfg := filepath.Join(dir, "podnet.cfg")
	os.WriteFile(daemonYAML, []byte("node: n1\n"), 0o644)
	os.WriteFile(clientCfg, []byte("datastore: {}\n"), 0o600)
	// This machine's settings must not leak in: no daemon answers on the
	// socket, and no datastore is configured.
	env := []string{"PODNET_CONFIG=" + clientCfg, "PODNET_DATASTORE_ENDPOINTS=", "PODNET_SOCKET=" + filepath.Join(dir, "none.sock")}
	check := func(args ...string) (string, string, int) {
		t.Helper()
		return checkRun(t, env, "ip", append([]string{"netns", "exec", name, bin, "node", "checksystem", "--config", daemonYAML}, args...)...)
	}

	t.Run("clean", func(t *testing.T) {
		out, stderr, code := check("-o", "json")
		if code != 0 {
			t.Errorf("exit code %d, want 0\n%s%s", code, out, stderr)
		}
		m := checksByName(t, out)
		for n, r := range m {
			if r.Status == syscheck.Problem {
				t.Errorf("check %s: problem on a clean namespace: %s", n, r.Detail)
			}
		}
		wantCheck(t, m, "daemon", syscheck.OK, "not running")
		wantCheck(t, m, "bgp-port", syscheck.OK, "TCP port 179 is free")
		wantCheck(t, m, "vxlan-port", syscheck.OK, "UDP port 4789 is free")
		wantCheck(t, m, "ip-forward", syscheck.OK, "net.ipv4.ip_forward = 1")
		wantCheck(t, m, "mtu", syscheck.OK, "underlay up0 (the default route's) MTU 1500", "pod MTU 1480 with IP-in-IP", "1450 with VXLAN")
		wantCheck(t, m, "datastore", syscheck.OK, "embedded")
		wantCheck(t, m, "tun", syscheck.OK)
		wantCheck(t, m, "netns", syscheck.OK)
		wantCheck(t, m, "capabilities", syscheck.OK, "root")
	})

	t.Run("problems", func(t *testing.T) {
		var tcp net.Listener
		var udp net.PacketConn
		if err := netnsutil.Do(ns, func() (err error) {
			if tcp, err = net.Listen("tcp", ":179"); err != nil {
				return err
			}
			udp, err = net.ListenPacket("udp4", "10.99.0.2:4789")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer tcp.Close()
		defer udp.Close()
		if out, err := exec.Command("ip", "-n", name, "link", "set", "up0", "mtu", "1400").CombinedOutput(); err != nil {
			t.Fatalf("set mtu: %v\n%s", err, out)
		}
		defer exec.Command("ip", "-n", name, "link", "set", "up0", "mtu", "1500").Run()
		// Nothing listens on port 1 of this namespace's loopback.
		out, stderr, code := check("-o", "json", "--datastore", "http://127.0.0.1:1")
		if code != exitProblems {
			t.Errorf("exit code %d, want %d\n%s%s", code, exitProblems, out, stderr)
		}
		m := checksByName(t, out)
		me := fmt.Sprintf("(pid %d)", os.Getpid())
		wantCheck(t, m, "bgp-port", syscheck.Problem, "TCP port 179 is held by", me)
		wantCheck(t, m, "vxlan-port", syscheck.Problem, "UDP port 4789 is held by", me)
		wantCheck(t, m, "mtu", syscheck.OK, "MTU 1400", "pod MTU 1380 with IP-in-IP", "1350 with VXLAN")
		wantCheck(t, m, "datastore", syscheck.Problem, "http://127.0.0.1:1")
		if c, ok := m["vxlan-superframes"]; !ok || c.Status == syscheck.Problem {
			t.Errorf("vxlan-superframes: %+v, want a result that is no problem (ok, or a warning on an older kernel)", c)
		}
		if c, ok := m["ipip-superframes"]; !ok || c.Status != syscheck.OK {
			t.Errorf("ipip-superframes: %+v, want ok (root loads the tc program in a fresh namespace)", c)
		}
		if c, ok := m["nat-packet-path"]; !ok || c.Status != syscheck.OK {
			t.Errorf("nat-packet-path: %+v, want ok (root loads NAT's tc program in a fresh namespace)", c)
		}
		if !strings.Contains(stderr, "3 of 17 checks found a problem") {
			t.Errorf("stderr %q, want the count of problems", stderr)
		}

		// The table says the same, with the fixes.
		out, _, code = check("--datastore", "http://127.0.0.1:1")
		if code != exitProblems {
			t.Errorf("table: exit code %d, want %d", code, exitProblems)
		}
		for _, want := range []string{"PROBLEM  bgp-port", "PROBLEM  vxlan-port", "fix: stop that program", "ok       tun"} {
			if !strings.Contains(out, want) {
				t.Errorf("table output has no %q:\n%s", want, out)
			}
		}
	})

	t.Run("no such underlay", func(t *testing.T) {
		out, _, code := check("-o", "json", "--underlay", "nosuch0")
		if code != exitProblems {
			t.Errorf("exit code %d, want %d", code, exitProblems)
		}
		wantCheck(t, checksByName(t, out), "mtu", syscheck.Problem, "underlay nosuch0 (given)")
	})
}

// TestCheckSystemLabNode runs checksystem on a lab node whose daemon
// runs: the daemon's own BGP and VXLAN ports count as podnet's (a VXLAN
// lab: the daemon opens the VXLAN port only while a pool uses VXLAN), the
// lab's datastore answers; then, with IP forwarding turned off under the
// running daemon, the check fails (exit 3) and says how to fix it.
func TestCheckSystemLabNode(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: lab.NoPods, Encap: lab.EncapVXLAN})
	bin := labtest.Binary(t)
	node := l.Status().Nodes[0]
	dir := t.TempDir()
	cfg, daemonYAML := filepath.Join(dir, "podnet.cfg"), filepath.Join(dir, "daemon.yaml")
	os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600)
	os.WriteFile(daemonYAML, []byte("log-level: info\n"), 0o600)
	env := []string{"PODNET_CONFIG=" + cfg, "PODNET_LAB=" + l.Name()}
	check := func() (map[string]syscheck.Result, int) {
		out, stderr, code := checkRun(t, env, bin, "lab", "exec", node.Name, "--", bin, "node", "checksystem", "-o", "json", "--config", daemonYAML)
		if code == 1 || code == 2 {
			t.Fatalf("checksystem: exit %d\n%s%s", code, out, stderr)
		}
		return checksByName(t, out), code
	}
	// The daemon opens its tunnels once it has read the pools.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ports []vswitch.PortStats
		err := nodeapi.NewClient(node.Socket).Get(nodeapi.PathPorts, &ports)
		if err == nil && slices.ContainsFunc(ports, func(p vswitch.PortStats) bool { return p.Kind == "underlay" && p.Device == "vxlan" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon has no VXLAN tunnel after 30s (%v): %+v", err, ports)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m, code := check()
	if code != 0 {
		t.Errorf("exit code %d, want 0: %+v", code, m)
	}
	pid := fmt.Sprintf("(pid %d)", node.PID)
	wantCheck(t, m, "daemon", syscheck.OK, "running", "on node "+node.Name, pid)
	wantCheck(t, m, "bgp-port", syscheck.OK, "TCP port 179 is held by the podnet daemon "+pid)
	wantCheck(t, m, "vxlan-port", syscheck.OK, "UDP port 4789 is held by the podnet daemon "+pid)
	wantCheck(t, m, "ip-forward", syscheck.OK, "= 1")
	wantCheck(t, m, "mtu", syscheck.OK, "underlay "+node.Iface+" (the running daemon's)")
	wantCheck(t, m, "datastore", syscheck.OK, "1 of 1 members answer")

	sysctl := func(v string) {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "exec", node.Netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward="+v).CombinedOutput(); err != nil {
			t.Fatalf("sysctl: %v\n%s", err, out)
		}
	}
	sysctl("0")
	defer sysctl("1")
	m, code = check()
	if code != exitProblems {
		t.Errorf("ip_forward off: exit code %d, want %d", code, exitProblems)
	}
	wantCheck(t, m, "ip-forward", syscheck.Problem, "= 0 while the daemon runs")
	if !strings.Contains(m["ip-forward"].Fix, "sysctl -w net.ipv4.ip_forward=1") {
		t.Errorf("ip-forward fix %q", m["ip-forward"].Fix)
	}
}
