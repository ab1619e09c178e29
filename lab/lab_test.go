package lab_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
)

// These tests build real labs (namespaces, a bridge, veths) and must run
// as root. Each lab has a unique name and is removed in t.Cleanup. The
// NoDaemon topology tested here:
//
//	          tXXXXX-fabric: br0 10.77.0.1/24
//	            │ w1                   │ w2
//	tXXXXX-worker1: eth0 .11    tXXXXX-worker2: eth0 .12

// upNoDaemon builds a kernel-only lab with the fake podnet on its PATH.
func upNoDaemon(t *testing.T, name string, nodes int) *lab.Lab {
	t.Helper()
	return labtest.Up(t, lab.Config{Name: name, Nodes: nodes, NoDaemon: true, Binary: fakePodnet})
}

func namespaces(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir(lab.NetnsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, e := range ents {
		m[e.Name()] = true
	}
	return m
}

// requireGone fails unless lab name has no namespace and no run dir left.
func requireGone(t *testing.T, name string) {
	t.Helper()
	for ns := range namespaces(t) {
		if strings.HasPrefix(ns, name+"-") {
			t.Errorf("namespace %s still exists", ns)
		}
	}
	if _, err := os.Stat(lab.DefaultRunDir(name)); !os.IsNotExist(err) {
		t.Errorf("run dir %s: got err %v, want not exist", lab.DefaultRunDir(name), err)
	}
	if pids := etcdsOf(t, name); len(pids) > 0 {
		t.Errorf("etcd of lab %s still running: pids %v", name, pids)
	}
}

// etcdsOf lists the live processes whose command line serves the etcd dir
// of lab name (in its default run dir).
func etcdsOf(t *testing.T, name string) []int {
	t.Helper()
	want := []byte("datastore\x00serve\x00--dir\x00" + filepath.Join(lab.DefaultRunDir(name), "etcd") + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid runs and is not a zombie: a process this test
// binary started stays a zombie until its Lab reaps it.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func TestUpNoDaemon(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := upNoDaemon(t, "", 2)
	name := l.Name()
	ctx := t.Context()

	nss := namespaces(t)
	for _, ns := range []string{name + "-fabric", name + "-worker1", name + "-worker2"} {
		if !nss[ns] {
			t.Errorf("namespace %s missing", ns)
		}
	}
	if _, err := os.Stat(filepath.Join(l.RunDir(), "state.json")); err != nil {
		t.Errorf("state.json: %v", err)
	}
	if got, want := l.NodeAddr("worker2"), netip.MustParseAddr("10.77.0.12"); got != want {
		t.Errorf("NodeAddr(worker2): got %v, want %v", got, want)
	}
	st := l.Status()
	if got, want := st.Fabric, (lab.FabricStatus{Netns: name + "-fabric", Bridge: "br0", Address: netip.MustParsePrefix("10.77.0.1/24")}); got != want {
		t.Errorf("Status().Fabric: got %+v, want %+v", got, want)
	}
	if len(st.Nodes) != 2 || len(st.Pods) != 0 {
		t.Fatalf("Status(): got %d nodes, %d pods; want 2, 0", len(st.Nodes), len(st.Pods))
	}
	if n := st.Nodes[0]; n.Netns != name+"-worker1" || n.Iface != "eth0" || n.PID != 0 || n.Running {
		t.Errorf("Status().Nodes[0]: got %+v", n)
	}
	if st.Datastore != "" || st.EtcdPID != 0 || st.EtcdRunning || l.Datastore() != "" {
		t.Errorf("Status() of a NoDaemon lab: got datastore %q, etcd pid %d (running %v); want none",
			st.Datastore, st.EtcdPID, st.EtcdRunning)
	}
	if _, err := os.Stat(filepath.Join(l.RunDir(), "etcd.log")); !os.IsNotExist(err) {
		t.Errorf("etcd.log in a NoDaemon lab: got err %v, want not exist", err)
	}

	tests := []struct {
		name   string
		target string
		args   []string
		want   string
	}{
		{"ping worker2 underlay from worker1", "worker1", []string{"podnet", "ping", "10.77.0.12"}, "reply"},
		{"ping worker1 underlay from worker2", "worker2", []string{"podnet", "ping", "10.77.0.11"}, "reply"},
		{"ping fabric gateway", "worker1", []string{"podnet", "ping", "10.77.0.1"}, "reply"},
		{"ping node from fabric", "fabric", []string{"podnet", "ping", "10.77.0.11"}, "reply"},
		{"node forwards", "worker1", []string{"cat", "/proc/sys/net/ipv4/ip_forward"}, "1"},
		{"node default route", "worker2", []string{"ip", "route", "show", "default"}, "default via 10.77.0.1 dev eth0"},
		{"node address", "worker1", []string{"ip", "-4", "-o", "addr", "show", "dev", "eth0"}, "10.77.0.11/24"},
		{"fabric port on bridge", "fabric", []string{"ip", "-o", "link", "show", "master", "br0"}, "w2@"},
		{"lo up", "worker1", []string{"ip", "-o", "link", "show", "lo"}, "UP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := l.Output(ctx, tt.target, tt.args...)
			if err != nil {
				t.Fatalf("Output(%s, %q): %v", tt.target, tt.args, err)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("Output(%s, %q): got %q, want it to contain %q", tt.target, tt.args, out, tt.want)
			}
		})
	}
	// Where the kernel has bridge netfilter, the fabric's bridges must not
	// pass frames through it (a per-packet cost no real switch puts on the
	// nodes).
	t.Run("fabric bridges skip netfilter", func(t *testing.T) {
		keys := []string{"iptables", "ip6tables", "arptables"}
		for _, k := range keys {
			out, err := l.Output(ctx, "fabric", "cat", "/proc/sys/net/bridge/bridge-nf-call-"+k)
			if err != nil {
				t.Skipf("no bridge netfilter in the fabric's namespace on this kernel: %v", err)
			}
			if got := strings.TrimSpace(string(out)); got != "0" {
				t.Errorf("fabric bridge-nf-call-%s: got %q, want 0", k, got)
			}
		}
	})
}

func TestExec(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := upNoDaemon(t, "", 1)
	ctx := t.Context()
	sock := l.Status().Nodes[0].Socket

	tests := []struct {
		name     string
		target   string
		stdin    string
		args     []string
		wantOut  string
		wantCode int // exit code, -1 = a non-exit error
		wantErr  string
	}{
		{name: "exit 0", target: "worker1", args: []string{"true"}},
		{name: "exit code passes through", target: "worker1", args: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, wantOut: "out\n", wantCode: 7},
		{name: "stdin passes through", target: "fabric", stdin: "hello lab\n", args: []string{"cat"}, wantOut: "hello lab\n"},
		{name: "node gets its socket", target: "worker1", args: []string{"sh", "-c", "echo $PODNET_SOCKET"}, wantOut: sock + "\n"},
		{name: "fabric gets no socket", target: "fabric", args: []string{"sh", "-c", "echo x$PODNET_SOCKET"}, wantOut: "x\n"},
		{name: "no datastore without daemons", target: "worker1", args: []string{"sh", "-c", "echo x$PODNET_DATASTORE_ENDPOINTS"}, wantOut: "x\n"},
		{name: "podnet resolves on PATH", target: "worker1", args: []string{"sh", "-c", "command -v podnet"}, wantOut: fakePodnet + "\n"},
		{name: "runs in the namespace", target: "worker1", args: []string{"ip", "-o", "-4", "addr", "show", "eth0"}, wantOut: "10.77.0.11/24"},
		{name: "unknown target", target: "worker9", args: []string{"true"}, wantCode: -1, wantErr: "valid: fabric, worker1"},
		{name: "no command", target: "worker1", wantCode: -1, wantErr: "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := l.Exec(ctx, tt.target, strings.NewReader(tt.stdin), &stdout, &stderr, tt.args...)
			var ee *exec.ExitError
			switch {
			case tt.wantCode == 0 && err != nil:
				t.Fatalf("Exec: %v (stderr %q)", err, stderr.String())
			case tt.wantCode > 0:
				if !errors.As(err, &ee) || ee.ExitCode() != tt.wantCode {
					t.Fatalf("Exec: got err %v, want exit code %d", err, tt.wantCode)
				}
			case tt.wantCode < 0:
				if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Exec: got err %v, want a non-exit error containing %q", err, tt.wantErr)
				}
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout: got %q, want it to contain %q", stdout.String(), tt.wantOut)
			}
		})
	}

	t.Run("Output error carries stderr", func(t *testing.T) {
		_, err := l.Output(ctx, "worker1", "sh", "-c", "echo broken pipe dream >&2; exit 3")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(err.Error(), "broken pipe dream") {
			t.Errorf("Output: got %v, want exit 3 and the stderr text", err)
		}
	})
	t.Run("unknown target is ErrUnknownTarget", func(t *testing.T) {
		if _, err := l.Output(ctx, "test-1", "true"); !errors.Is(err, lab.ErrUnknownTarget) {
			t.Errorf("Output(test-1): got %v, want ErrUnknownTarget", err)
		}
	})
}

// TestTwoLabs runs two labs side by side, including one whose name
// extends the other's, and checks removing one leaves the other whole.
func TestTwoLabs(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	base := labtest.Name()
	tests := []struct {
		name string
		a, b string
	}{
		{"different names", labtest.Name(), labtest.Name()},
		{"name shares a prefix (digit)", base, base + "2"},
		{"name shares a prefix (letter)", base, base + "x"},
		{"removing the longer name", base + "x", base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := upNoDaemon(t, tt.a, 2)
			b := upNoDaemon(t, tt.b, 2)
			for _, l := range []*lab.Lab{a, b} {
				if _, err := l.Output(t.Context(), "worker1", "podnet", "ping", "10.77.0.12"); err != nil {
					t.Errorf("lab %s: ping worker2: %v", l.Name(), err)
				}
			}
			if err := lab.Down(a.Name()); err != nil {
				t.Fatalf("Down(%s): %v", a.Name(), err)
			}
			requireGone(t, a.Name())
			nss := namespaces(t)
			for _, m := range []string{"fabric", "worker1", "worker2"} {
				if !nss[b.Name()+"-"+m] {
					t.Errorf("Down(%s) removed %s-%s", a.Name(), b.Name(), m)
				}
			}
			if _, err := os.Stat(b.RunDir()); err != nil {
				t.Errorf("Down(%s) removed run dir of %s: %v", a.Name(), b.Name(), err)
			}
			if _, err := b.Output(t.Context(), "worker2", "podnet", "ping", "10.77.0.11"); err != nil {
				t.Errorf("lab %s after removing %s: ping worker1: %v", b.Name(), a.Name(), err)
			}
		})
	}
}

func TestUpRefusesExisting(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	tests := []struct {
		name string
		// leave turns a built lab into what is left of it.
		leave func(t *testing.T, l *lab.Lab)
	}{
		{"whole lab", func(*testing.T, *lab.Lab) {}},
		{"only namespaces", func(t *testing.T, l *lab.Lab) {
			if err := os.RemoveAll(l.RunDir()); err != nil {
				t.Fatal(err)
			}
		}},
		{"only run dir", func(t *testing.T, l *lab.Lab) {
			for _, ns := range []string{"worker1", "fabric"} {
				if out, err := exec.Command("ip", "netns", "del", l.Name()+"-"+ns).CombinedOutput(); err != nil {
					t.Fatalf("ip netns del: %v: %s", err, out)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := upNoDaemon(t, "", 1)
			tt.leave(t, l)
			before := namespaces(t)
			_, err := lab.Up(t.Context(), lab.Config{Name: l.Name(), Nodes: 1, NoDaemon: true})
			if !errors.Is(err, lab.ErrExists) {
				t.Fatalf("second Up(%s): got %v, want ErrExists", l.Name(), err)
			}
			if !strings.Contains(err.Error(), "podnet lab down --name "+l.Name()) {
				t.Errorf("error %q does not say how to remove the lab", err)
			}
			// The refused Up must not have torn down the existing lab.
			after := namespaces(t)
			for ns := range before {
				if !after[ns] {
					t.Errorf("refused Up removed namespace %s", ns)
				}
			}
		})
	}
}

// TestDownAfterCrash leaves a lab behind the way a crashed `podnet lab up`
// or test would, with a process still running inside, and checks that
// Down(name) alone removes all of it.
func TestDownAfterCrash(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	tests := []struct {
		name  string
		crash func(t *testing.T, l *lab.Lab)
	}{
		{"state present", func(*testing.T, *lab.Lab) {}},
		{"state missing", func(t *testing.T, l *lab.Lab) {
			if err := os.Remove(filepath.Join(l.RunDir(), "state.json")); err != nil {
				t.Fatal(err)
			}
		}},
		{"state corrupt", func(t *testing.T, l *lab.Lab) {
			if err := os.WriteFile(filepath.Join(l.RunDir(), "state.json"), []byte("{trunc"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"only namespaces left", func(t *testing.T, l *lab.Lab) {
			if err := os.RemoveAll(l.RunDir()); err != nil {
				t.Fatal(err)
			}
		}},
		{"state lists a namespace already gone", func(t *testing.T, l *lab.Lab) {
			if out, err := exec.Command("ip", "netns", "del", l.Name()+"-worker2").CombinedOutput(); err != nil {
				t.Fatalf("ip netns del: %v: %s", err, out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := upNoDaemon(t, "", 2)
			ns := l.Name() + "-worker1"
			// A detached process in the node, like a daemon whose parent
			// died. Down must kill it, or the namespace would live on.
			// It says "ready" once inside: until ip has entered the
			// namespace, the process is not yet there to be found.
			exited := startSleeper(t, ns)
			tt.crash(t, l)

			if err := lab.Down(l.Name()); err != nil {
				t.Fatalf("Down(%s): %v", l.Name(), err)
			}
			requireGone(t, l.Name())
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("process in %s still running after Down", ns)
			}
		})
	}
}

// TestDownSweepsHandPods: the namespace of a pod added by hand on a node
// (NAME-worker<K>-POD, made by `podnet pod add --new`) whose daemon is
// dead is the lab's: Down kills what runs in it and deletes it, and Up
// takes it for a leftover of the lab.
func TestDownSweepsHandPods(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := upNoDaemon(t, "", 1)
	name := l.Name()
	ns := lab.HandPodNetnsPrefix(name, "worker1") + "foo"
	addNetns := func() {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
	}
	addNetns()
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	// A process in it, as in a pod: Down must kill it to free the
	// namespace.
	exited := startSleeper(t, ns)

	if err := lab.Down(name); err != nil {
		t.Fatalf("Down(%s): %v", name, err)
	}
	requireGone(t, name)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("process in %s still running after Down", ns)
	}

	// Left alone, it still marks the lab as there.
	addNetns()
	_, err := lab.Up(t.Context(), lab.Config{Name: name, Nodes: 1, NoDaemon: true})
	if !errors.Is(err, lab.ErrExists) || !strings.Contains(err.Error(), ns) {
		t.Errorf("Up(%s) beside %s: got %v, want ErrExists naming it", name, ns, err)
	}
	if err := lab.Down(name); err != nil {
		t.Fatalf("second Down(%s): %v", name, err)
	}
	requireGone(t, name)
}

func TestDownIdempotent(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := upNoDaemon(t, "", 1)
	for i := range 3 {
		if err := l.Down(); err != nil {
			t.Fatalf("Down #%d: %v", i+1, err)
		}
		if err := lab.Down(l.Name()); err != nil {
			t.Fatalf("Down(%s) #%d: %v", l.Name(), i+1, err)
		}
	}
	requireGone(t, l.Name())
	if err := lab.Down(labtest.Name()); err != nil {
		t.Errorf("Down of a lab that never existed: %v", err)
	}
	if err := lab.Down("Not-A-Name"); err == nil {
		t.Errorf("Down(Not-A-Name): got nil, want a name error")
	}
}

// TestUpFailsClean checks that a failing Up removes everything it made.
func TestUpFailsClean(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		cfg     lab.Config
		wantErr string
	}{
		{"daemon exits at once", context.Background(),
			lab.Config{Nodes: 2, Pods: 1, Binary: fakePodnet, DaemonArgs: []string{"--fake-fail"}}, "daemon failing on purpose"},
		{"binary missing", context.Background(),
			lab.Config{Nodes: 1, Binary: "/nonexistent/podnet"}, "start datastore: run /nonexistent/podnet datastore serve"},
		{"etcd exits at once", context.Background(),
			lab.Config{Name: failEtcdPrefix + labtest.Name()[1:5], Nodes: 1, Binary: fakePodnet}, "etcd failing on purpose"},
		{"daemon's datastore overridden", context.Background(),
			lab.Config{Nodes: 1, Binary: fakePodnet, DaemonArgs: []string{"--datastore", "unix:///nonexistent/etcd.sock"}},
			"datastore unix:///nonexistent/etcd.sock"},
		{"context cancelled", cancelled,
			lab.Config{Nodes: 1, NoDaemon: true}, "context canceled"},
		{"bad name", context.Background(),
			lab.Config{Name: "9lives", NoDaemon: true}, "must match"},
		{"too many pods", context.Background(),
			lab.Config{Nodes: 1, Pods: 300, Binary: fakePodnet}, "at most 253 per node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			if cfg.Name == "" {
				cfg.Name = labtest.Name()
			}
			t.Cleanup(func() { lab.Down(cfg.Name) })
			l, err := lab.Up(tt.ctx, cfg)
			if err == nil {
				l.Down()
				t.Fatalf("Up: got nil error, want %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Up: got %v, want it to contain %q", err, tt.wantErr)
			}
			if lab.ValidateName(cfg.Name) == nil {
				requireGone(t, cfg.Name)
			}
		})
	}
}

// TestUpWithFakeDaemon runs the whole Up path against the fake podnet:
// daemons with readiness, pod attachment, HTTP servers, restart.
func TestUpWithFakeDaemon(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 3, Binary: fakePodnet, HTTPServer: lab.HTTPBuiltin,
		DaemonArgs: []string{"--fake-flag"}})
	ctx := t.Context()
	name := l.Name()
	st := l.Status()

	wantPods := []lab.PodStatus{
		{Name: "test-1", Node: "worker1", Netns: name + "-test-1", IP: netip.MustParseAddr("192.168.1.2")},
		{Name: "test-2", Node: "worker2", Netns: name + "-test-2", IP: netip.MustParseAddr("192.168.2.2")},
		{Name: "test-3", Node: "worker1", Netns: name + "-test-3", IP: netip.MustParseAddr("192.168.1.3")},
	}
	if len(st.Pods) != len(wantPods) {
		t.Fatalf("Status().Pods: got %d, want %d", len(st.Pods), len(wantPods))
	}
	for i, want := range wantPods {
		got := st.Pods[i]
		if got.HTTPPID == 0 {
			t.Errorf("pod %s: no HTTP server pid", got.Name)
		}
		got.HTTPPID = 0
		if got != want {
			t.Errorf("Status().Pods[%d]: got %+v, want %+v", i, got, want)
		}
		if ip := l.PodIP(want.Name); ip != want.IP {
			t.Errorf("PodIP(%s): got %v, want %v", want.Name, ip, want.IP)
		}
	}
	for _, n := range st.Nodes {
		if !n.Running || n.PID == 0 {
			t.Errorf("node %s: daemon not running: %+v", n.Name, n)
		}
		log, _ := os.ReadFile(n.Log)
		for _, want := range []string{"node=" + n.Name, "underlay=eth0", "--fake-flag", "state-dir=" + n.StateDir} {
			if !strings.Contains(string(log), want) {
				t.Errorf("%s daemon.log: missing %q in %q", n.Name, want, log)
			}
		}
	}

	t.Run("pod add calls", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(st.Nodes[0].StateDir, "pods.log"))
		if err != nil {
			t.Fatal(err)
		}
		// "ipam": the lab passed no --ip; the addresses are the fake
		// IPAM's, taken from pod add's JSON.
		want := fmt.Sprintf("test-1 192.168.1.2 /run/netns/%s-test-1 ipam\ntest-3 192.168.1.3 /run/netns/%s-test-3 ipam\n", name, name)
		if string(b) != want {
			t.Errorf("worker1 pods.log: got %q, want %q", b, want)
		}
	})

	t.Run("datastore", func(t *testing.T) {
		sock := filepath.Join(l.RunDir(), "etcd.sock")
		if want := "unix://" + sock; st.Datastore != want || l.Datastore() != want {
			t.Errorf("Status().Datastore, Datastore(): got %q, %q; want %q", st.Datastore, l.Datastore(), want)
		}
		if st.EtcdPID == 0 || !st.EtcdRunning {
			t.Errorf("Status(): etcd pid %d, running %v; want a running etcd", st.EtcdPID, st.EtcdRunning)
		}
		if pids := etcdsOf(t, name); len(pids) != 1 || pids[0] != st.EtcdPID {
			t.Errorf("etcd processes of %s: got %v, want [%d]", name, pids, st.EtcdPID)
		}
		log, _ := os.ReadFile(filepath.Join(l.RunDir(), "etcd.log"))
		if want := "fake etcd: dir=" + filepath.Join(l.RunDir(), "etcd") + " socket=" + sock; !strings.Contains(string(log), want) {
			t.Errorf("etcd.log: missing %q in %q", want, log)
		}
		// The fake daemon dials its --datastore before it listens, so a
		// daemon that came up proves etcd was up first.
		for _, n := range st.Nodes {
			log, _ := os.ReadFile(n.Log)
			if want := "datastore=unix://" + sock + " "; !strings.Contains(string(log), want) {
				t.Errorf("%s daemon.log: missing %q in %q", n.Name, want, log)
			}
		}
		if lines := l.EtcdLogTail(5); len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), "fake etcd") {
			t.Errorf("EtcdLogTail(5): got %q", lines)
		}
	})

	t.Run("exec env has the datastore", func(t *testing.T) {
		for _, target := range []string{"fabric", "worker1", "worker2", "test-1", "test-2"} {
			out, err := l.Output(ctx, target, "sh", "-c", "echo $PODNET_DATASTORE_ENDPOINTS")
			if err != nil {
				t.Fatalf("Output(%s): %v", target, err)
			}
			if got, want := strings.TrimSpace(string(out)), st.Datastore; got != want {
				t.Errorf("%s: PODNET_DATASTORE_ENDPOINTS: got %q, want %q", target, got, want)
			}
		}
	})

	t.Run("http", func(t *testing.T) {
		tests := []struct {
			pod, url, want string
		}{
			{"test-1", "http://127.0.0.1/", "pod test-1 on worker1 (192.168.1.2)\n"},
			{"test-2", "http://127.0.0.1/", "pod test-2 on worker2 (192.168.2.2)\n"},
			{"test-3", "http://127.0.0.1:80/", "pod test-3 on worker1 (192.168.1.3)\n"},
		}
		for _, tt := range tests {
			out, err := l.Output(ctx, tt.pod, "podnet", "get", tt.url)
			if err != nil {
				t.Fatalf("%s: get %s: %v", tt.pod, tt.url, err)
			}
			if string(out) != tt.want {
				t.Errorf("%s: get %s: got %q, want %q", tt.pod, tt.url, out, tt.want)
			}
		}
		const n = 1<<20 + 7
		out, err := l.Output(ctx, "test-2", "podnet", "get", fmt.Sprintf("http://127.0.0.1/bytes?n=%d", n))
		if err != nil {
			t.Fatalf("get /bytes: %v", err)
		}
		want := make([]byte, n)
		lab.FillPattern(want, 0)
		if !bytes.Equal(out, want) {
			t.Errorf("get /bytes?n=%d: got %d bytes not matching the pattern", n, len(out))
		}
	})

	t.Run("stop and start daemon", func(t *testing.T) {
		old := l.Status().Nodes[1].PID
		if err := l.StopDaemon("worker2", syscall.SIGKILL); err != nil {
			t.Fatalf("StopDaemon: %v", err)
		}
		if n := l.Status().Nodes[1]; n.Running {
			t.Fatalf("after StopDaemon: %+v still running", n)
		}
		if err := l.StartDaemon(ctx, "worker2"); err != nil {
			t.Fatalf("StartDaemon: %v", err)
		}
		n := l.Status().Nodes[1]
		if !n.Running || n.PID == old {
			t.Errorf("after StartDaemon: got %+v, want running with a new pid (old %d)", n, old)
		}
		if err := l.StartDaemon(ctx, "worker2"); err == nil {
			t.Errorf("StartDaemon on a running daemon: got nil, want error")
		}
		if err := l.StopDaemon("worker7", syscall.SIGTERM); !errors.Is(err, lab.ErrUnknownTarget) {
			t.Errorf("StopDaemon(worker7): got %v, want ErrUnknownTarget", err)
		}
	})

	t.Run("open from state", func(t *testing.T) {
		o, err := lab.Open(name)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		got, want := o.Status(), l.Status()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Open(%s).Status(): got %+v, want %+v", name, got, want)
		}
		if out, err := o.Output(ctx, "worker1", "podnet", "status"); err != nil {
			t.Errorf("podnet status via opened lab: %v (%s)", err, out)
		}
	})
}

// TestUpRealDaemon builds podnet from this tree and runs a one-node lab
// with the real daemon: pods reach each other through the switch, by ICMP
// and HTTP.
func TestUpRealDaemon(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 2})
	ctx := t.Context()
	if n := l.Status().Nodes[0]; !n.Running {
		t.Fatalf("worker1 daemon not running: %+v", n)
	}
	ip2 := l.PodIP("test-2")
	// fakePodnet by path: the pod's PATH finds the real podnet, and the
	// machine may have neither ping nor curl.
	if out, err := l.Output(ctx, "test-1", fakePodnet, "ping", ip2.String()); err != nil {
		t.Errorf("ping test-2 from test-1: %v (%s)", err, out)
	}
	out, err := l.Output(ctx, "test-1", fakePodnet, "get", "http://"+ip2.String()+"/")
	if err != nil {
		t.Fatalf("get test-2 page from test-1: %v", err)
	}
	if want := lab.PageText("test-2", "worker1", ip2); string(out) != want {
		t.Errorf("test-2 page: got %q, want %q", out, want)
	}
	out, err = l.Output(ctx, "worker1", "podnet", "pod", "list", "-o", "json")
	if err != nil {
		t.Fatalf("podnet pod list on worker1: %v", err)
	}
	var pods []struct{ Name, IP, Node string }
	if err := json.Unmarshal(out, &pods); err != nil {
		t.Fatalf("pod list -o json: %v: %s", err, out)
	}
	got := map[string]string{}
	for _, p := range pods {
		got[p.Name] = p.IP + " " + p.Node
	}
	want := map[string]string{"test-1": l.PodIP("test-1").String() + " worker1", "test-2": ip2.String() + " worker1"}
	if !maps.Equal(got, want) {
		t.Errorf("pod list: got %v, want %v", got, want)
	}
	// The addresses came from IPAM's default pool, and the lab's
	// datastore is reachable with no flags from nodes and pods alike.
	pool := netip.MustParsePrefix("192.168.0.0/16")
	for _, p := range []string{"test-1", "test-2"} {
		if ip := l.PodIP(p); !pool.Contains(ip) {
			t.Errorf("PodIP(%s) = %v: not in the default pool %v", p, ip, pool)
		}
	}
	for _, target := range []string{"worker1", "test-1"} {
		out, err = l.Output(ctx, target, "podnet", "get", "ippool")
		if err != nil || !strings.Contains(string(out), "default-ipv4-ippool") {
			t.Errorf("podnet get ippool in %s: got %q, %v; want the default pool", target, out, err)
		}
	}
}

// upFake builds a one-node lab with the fake podnet: its etcd and daemon,
// no pods.
func upFake(t *testing.T, name string) *lab.Lab {
	t.Helper()
	return labtest.Up(t, lab.Config{Name: name, Nodes: 1, Pods: lab.NoPods, Binary: fakePodnet, HTTPServer: lab.HTTPBuiltin})
}

// TestDownStopsEtcd checks that every way of removing a lab stops its
// etcd, including after a crash that lost state.json: etcd runs in the
// root namespace, where no namespace sweep would find it.
func TestDownStopsEtcd(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	tests := []struct {
		name string
		down func(t *testing.T, l *lab.Lab) error
	}{
		{"Lab.Down", func(_ *testing.T, l *lab.Lab) error { return l.Down() }},
		{"Down(name)", func(_ *testing.T, l *lab.Lab) error { return lab.Down(l.Name()) }},
		{"state missing", func(t *testing.T, l *lab.Lab) error {
			if err := os.Remove(filepath.Join(l.RunDir(), "state.json")); err != nil {
				t.Fatal(err)
			}
			return lab.Down(l.Name())
		}},
		{"state corrupt", func(t *testing.T, l *lab.Lab) error {
			if err := os.WriteFile(filepath.Join(l.RunDir(), "state.json"), []byte("{trunc"), 0o644); err != nil {
				t.Fatal(err)
			}
			return lab.Down(l.Name())
		}},
		{"only namespaces and etcd left", func(t *testing.T, l *lab.Lab) error {
			if err := os.RemoveAll(l.RunDir()); err != nil {
				t.Fatal(err)
			}
			return lab.Down(l.Name())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := upFake(t, "")
			st := l.Status()
			if !st.EtcdRunning {
				t.Fatalf("etcd not running after Up: %+v", st)
			}
			if err := tt.down(t, l); err != nil {
				t.Fatalf("down: %v", err)
			}
			if alive(st.EtcdPID) {
				t.Errorf("etcd (pid %d) still running after down", st.EtcdPID)
			}
			if alive(st.Nodes[0].PID) {
				t.Errorf("daemon (pid %d) still running after down", st.Nodes[0].PID)
			}
			requireGone(t, l.Name())
		})
	}
}

// TestTwoLabsEtcd runs two labs whose names share a prefix: each has its
// own etcd, and a crash-sweep of one (state.json gone, so only command
// lines tell the etcds apart) leaves the other's alone.
func TestTwoLabsEtcd(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	base := labtest.Name()
	a, b := upFake(t, base), upFake(t, base+"2")
	sa, sb := a.Status(), b.Status()
	if sa.Datastore == sb.Datastore || sa.EtcdPID == sb.EtcdPID {
		t.Fatalf("labs share a datastore: %s (pid %d) and %s (pid %d)", sa.Datastore, sa.EtcdPID, sb.Datastore, sb.EtcdPID)
	}
	for _, l := range []*lab.Lab{a, b} {
		out, err := l.Output(t.Context(), "worker1", "sh", "-c", "echo $PODNET_DATASTORE_ENDPOINTS")
		if got, want := strings.TrimSpace(string(out)), l.Datastore(); err != nil || got != want {
			t.Errorf("lab %s: PODNET_DATASTORE_ENDPOINTS: got %q (%v), want %q", l.Name(), got, err, want)
		}
	}
	if err := os.Remove(filepath.Join(a.RunDir(), "state.json")); err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(a.Name()); err != nil {
		t.Fatalf("Down(%s): %v", a.Name(), err)
	}
	requireGone(t, a.Name())
	if alive(sa.EtcdPID) {
		t.Errorf("etcd of %s still running", a.Name())
	}
	if st := b.Status(); !st.EtcdRunning || !st.Nodes[0].Running {
		t.Errorf("Down(%s) stopped processes of %s: %+v", a.Name(), b.Name(), st)
	}
	if out, err := b.Output(t.Context(), "worker1", "podnet", "status"); err != nil {
		t.Errorf("lab %s after removing %s: podnet status: %v (%s)", b.Name(), a.Name(), err, out)
	}
}

// TestExecRenamedBinary checks that `podnet` resolves in Exec even when
// the lab's binary has another name (go build -o /tmp/pn).
func TestExecRenamedBinary(t *testing.T) {
	labtest.RequireRoot(t)
	t.Parallel()
	pn := filepath.Join(t.TempDir(), "pn")
	if err := os.Symlink(fakePodnet, pn); err != nil {
		t.Fatal(err)
	}
	l := labtest.Up(t, lab.Config{Nodes: 1, NoDaemon: true, Binary: pn})
	out, err := l.Output(t.Context(), "worker1", "sh", "-c", `readlink "$(command -v podnet)"`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != pn {
		t.Errorf("podnet on PATH: got a link to %q, want %q", got, pn)
	}
}

// startSleeper starts a detached process in namespace ns, like a daemon
// whose parent died, and returns once it runs there (it says "ready"
// once ip has entered the namespace). The channel closes when it exits;
// the test kills it at the end if nothing else did.
func startSleeper(t *testing.T, ns string) <-chan struct{} {
	t.Helper()
	sleeper := exec.Command("ip", "netns", "exec", ns, "sh", "-c", "echo ready; exec sleep 1000")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := sleeper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		sleeper.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		sleeper.Process.Kill()
		<-exited
	})
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("wait for process in %s: %v", ns, err)
	}
	return exited
}
