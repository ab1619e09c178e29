package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNodeName: a name Calico's Node cannot have is refused at New,
// naming it and the rule; a name given is taken as it is, and one from
// the host name is lower-cased first.
func TestNodeName(t *testing.T) {
	for _, tt := range []struct {
		name, want string
	}{
		{"Worker1", ""},
		{"DESKTOP-AB12", ""},
		{"node_1", ""},
		{"-n1", ""},
		{"worker1", "worker1"},
		{"w1.example.com", "w1.example.com"},
	} {
		n, err := New(Config{Name: tt.name, StateDir: t.TempDir()})
		switch {
		case tt.want == "" && (err == nil || !strings.Contains(err.Error(), `"`+tt.name+`"`) || !strings.Contains(err.Error(), "lower-case DNS subdomain")):
			t.Errorf("New with name %q: %v, want a refusal naming it and the rule", tt.name, err)
		case tt.want != "" && (err != nil || n.cfg.Name != tt.want):
			t.Errorf("New with name %q: %v, want name %q", tt.name, err, tt.want)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the host name cases need root (a UTS namespace)")
	}
	for _, tt := range []struct {
		host, want string
	}{
		{"DESKTOP-AB12", "desktop-ab12"},
		{"Worker1.Example.COM", "worker1.example.com"},
		{"my_host", ""},
	} {
		n, err := newWithHostname(t, tt.host)
		switch {
		case tt.want == "" && (err == nil || !strings.Contains(err.Error(), tt.host) || !strings.Contains(err.Error(), "--node")):
			t.Errorf("host name %q: %v, want a refusal naming it and --node", tt.host, err)
		case tt.want != "" && (err != nil || n.cfg.Name != tt.want):
			t.Errorf("host name %q: %v, want node name %q", tt.host, err, tt.want)
		}
	}
}

// newWithHostname runs New without a name on a thread of its own in a
// UTS namespace whose host name is host.
func newWithHostname(t *testing.T, host string) (*Node, error) {
	t.Helper()
	type result struct {
		n   *Node
		err error
	}
	res := make(chan result, 1)
	dir := t.TempDir()
	go func() {
		// Never unlocked: the thread, in its own namespace, ends with
		// the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			res <- result{nil, err}
			return
		}
		if err := unix.Sethostname([]byte(host)); err != nil {
			res <- result{nil, err}
			return
		}
		n, err := New(Config{StateDir: dir})
		res <- result{n, err}
	}()
	r := <-res
	return r.n, r.err
}

// TestRunRefusesInvalidNode: when etcd answers and refuses the Node
// resource (it fails validation), Run stops with that error at once; it
// does not take it for an etcd outage and start without the datastore.
// The node runs in a child process in a network namespace of its own, so
// that a node that wrongly starts touches nothing of the machine's.
func TestRunRefusesInvalidNode(t *testing.T) {
	if dir := os.Getenv("PODNET_TEST_RUN_INVALID"); dir != "" {
		n, err := New(Config{Name: "worker1", StateDir: dir, Socket: filepath.Join(dir, "api.sock"),
			EtcdSocket: filepath.Join(dir, "etcd.sock")})
		if err != nil {
			t.Fatal(err)
		}
		n.cfg.Name = "Worker1" // past New's check, as a Node etcd refuses
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = n.Run(ctx)
		if err == nil || ctx.Err() != nil {
			t.Fatalf("Run: %v after %v; want it to stop at once with the validation error", err, ctx.Err())
		}
		t.Logf("Run: %v", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	dir, err := os.MkdirTemp("", "pnrun") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunRefusesInvalidNode$", "-test.v")
	cmd.Env = append(os.Environ(), "PODNET_TEST_RUN_INVALID="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"register node Worker1", "Metadata.Name = 'Worker1'"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Run's error lacks %q:\n%s", want, out)
		}
	}
}

// TestPodQueueLenRange: a negative pod queue length, or one that would
// let a pod hold gigabytes of kernel memory, is refused at New, saying
// which setting.
func TestPodQueueLenRange(t *testing.T) {
	for _, n := range []int{-1, MaxPodQueueLen + 1} {
		_, err := New(Config{Name: "worker1", StateDir: t.TempDir(), PodQueueLen: n})
		if err == nil || !strings.Contains(err.Error(), "pod queue length") {
			t.Errorf("PodQueueLen %d: %v, want an error naming the pod queue length", n, err)
		}
	}
	for _, n := range []int{0, 1, MaxPodQueueLen} {
		if _, err := New(Config{Name: "worker1", StateDir: t.TempDir(), PodQueueLen: n}); err != nil {
			t.Errorf("PodQueueLen %d: %v", n, err)
		}
	}
}
