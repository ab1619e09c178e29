package syscheck

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"podnet/encap"
	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
)

// TestListeners: a TCP listener and a UDP socket this test opens are
// found on their ports with this process as holder; a port nobody holds
// has none.
func TestListeners(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", "[::]:0") // tcp6/udp6 files too
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	for _, tc := range []struct {
		proto string
		port  int
	}{
		{"tcp", tl.Addr().(*net.TCPAddr).Port},
		{"udp", ul.LocalAddr().(*net.UDPAddr).Port},
	} {
		hs, err := listeners(tc.proto, tc.port)
		if err != nil {
			t.Fatalf("%s %d: %v", tc.proto, tc.port, err)
		}
		if len(hs) != 1 || hs[0].pid != os.Getpid() || hs[0].comm == "" {
			t.Errorf("%s %d: holders %+v, want this process (pid %d)", tc.proto, tc.port, hs, os.Getpid())
		}
		if got := describe(hs); !strings.Contains(got, "(pid ") {
			t.Errorf("describe: %q", got)
		}
		if others := notDaemon(hs, os.Getpid()); len(others) != 0 {
			t.Errorf("notDaemon with this process as the daemon: %+v, want none", others)
		}
	}
	// The port of a listener just closed is free.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	if hs, err := listeners("tcp", port); err != nil || len(hs) != 0 {
		t.Errorf("closed port %d: %+v, %v; want no holder", port, hs, err)
	}
}

// TestDaemonPID: the process serving a unix socket is found by its
// credentials; here it is this test.
func TestDaemonPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if pid, err := DaemonPID(path); err != nil || pid != os.Getpid() {
		t.Errorf("DaemonPID = %d, %v; want %d", pid, err, os.Getpid())
	}
	if _, err := DaemonPID(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("DaemonPID of a missing socket: no error")
	}
}

func TestProblems(t *testing.T) {
	rs := []Result{ok("a", ""), warn("b", "", "x"), problem("c", "", "y"), problem("d", "", "z")}
	if n := Problems(rs); n != 2 {
		t.Errorf("Problems = %d, want 2 (warnings do not count)", n)
	}
}

// superframesCheck runs check, a superframes check, in a fresh
// namespace: where it passes there (cannot, run in that namespace, says
// whether this kernel cannot pass it, and then it must warn that
// superframes are cut), a strict rp_filter on all must turn it into a
// warning naming rp_filter. It returns the namespace's name.
func superframesCheck(t *testing.T, check func() Result, cannot func() bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it makes a namespace and a TAP")
	}
	name := nettest.UniqueName("sck")
	ns := nettest.Netns(t, name)
	var r Result
	run := func() {
		if err := netnsutil.Do(ns, func() error { r = check(); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	run()
	skip := false
	if err := netnsutil.Do(ns, func() error { skip = cannot(); return nil }); err != nil {
		t.Fatal(err)
	}
	if skip {
		if r.Status != Warn || !strings.Contains(r.Detail, "cut in userspace") {
			t.Fatalf("kernel without it: %+v, want a warning", r)
		}
		return name
	}
	if r.Status != OK {
		t.Fatalf("fresh namespace: %+v, want OK", r)
	}
	nettest.Sysctl(t, name, "net.ipv4.conf.all.rp_filter=1")
	run()
	if r.Status != Warn || !strings.Contains(r.Detail, "rp_filter") || r.Fix == "" {
		t.Fatalf("strict rp_filter: %+v, want a warning naming rp_filter, with a fix", r)
	}
	return name
}

// TestIPIPSuperframesCheck: in a fresh namespace the daemon's tc program
// loads and attaches (root has bpf(2); this kernel has clsact and
// cls_bpf), a strict rp_filter on all is named as what stops the
// superframes, and the check leaves no TAP behind.
func TestIPIPSuperframesCheck(t *testing.T) {
	name := superframesCheck(t, checkIPIPSuperframes, func() bool { return false })
	if out, err := exec.Command("ip", "-n", name, "link", "show").CombinedOutput(); err != nil || strings.Contains(string(out), "pncheck") {
		t.Errorf("the check left a TAP behind (%v):\n%s", err, out)
	}
}

// TestVXLANSuperframesCheck: in a fresh namespace this kernel's TAPs take
// UDP-tunnel superframes (Linux 6.17+) or the tc program can mark them
// (or the check warns that neither works), and a strict rp_filter on all
// is named as what stops them.
func TestVXLANSuperframesCheck(t *testing.T) {
	superframesCheck(t, checkVXLANSuperframes, func() bool {
		return encap.CheckUDPTunnelGSO() != nil && encap.CheckVXLANTapMarked() != nil
	})
}

// TestNATPacketPathCheck: in a fresh namespace NAT's tc program loads
// and passes its self-test, and a strict rp_filter on all is named as
// what stops the packet path.
func TestNATPacketPathCheck(t *testing.T) {
	superframesCheck(t, checkNATPacketPath, func() bool { return false })
}

// TestForwardFirewallCheck: a forward-hook chain whose policy is drop, as
// nft lists it in a namespace, is named; without one the check is OK.
func TestForwardFirewallCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it makes a namespace and nftables chains")
	}
	name := nettest.UniqueName("fwc")
	nettest.Netns(t, name)
	nft := func(args ...string) ([]byte, error) {
		return exec.Command("ip", append([]string{"netns", "exec", name, "nft"}, args...)...).Output()
	}
	list := func() ([]byte, error) { return nft("-j", "list", "ruleset") }
	if r := checkForwardFirewall(list); r.Status != OK {
		t.Fatalf("no chains: %+v, want OK", r)
	}
	for _, args := range [][]string{
		{"add", "table", "ip", "filter"},
		{"add", "chain", "ip", "filter", "FORWARD", "{ type filter hook forward priority 0 ; policy accept ; }"},
		{"add", "table", "inet", "fw"},
		{"add", "chain", "inet", "fw", "fwd_drop", "{ type filter hook forward priority 10 ; policy drop ; }"},
	} {
		if out, err := nft(args...); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	r := checkForwardFirewall(list)
	if r.Status != Warn || !strings.Contains(r.Detail, "inet fw fwd_drop") || strings.Contains(r.Detail, "FORWARD") || r.Fix == "" {
		t.Fatalf("a dropping forward chain: %+v, want a warning naming inet fw fwd_drop only, with a fix", r)
	}
	// A rule dropping conntrack's invalid packets in a forward chain
	// stalls NAT's packet path.
	if out, err := nft("add", "rule", "ip", "filter", "FORWARD", "ct", "state", "invalid", "drop"); err != nil {
		t.Fatalf("nft add rule: %v\n%s", err, out)
	}
	r = checkForwardFirewall(list)
	if r.Status != Warn || !strings.Contains(r.Detail, "invalid: ip filter FORWARD") || !strings.Contains(r.Fix, "iifname podnetnat0 accept") {
		t.Fatalf("a forward chain dropping invalid: %+v, want a warning naming ip filter FORWARD, with the podnetnat0 fix", r)
	}
	if r := checkForwardFirewall(func() ([]byte, error) { return nil, exec.ErrNotFound }); r.Status != OK {
		t.Errorf("without nft: %+v, want OK (nothing to look at)", r)
	}
}
