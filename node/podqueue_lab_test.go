package node_test

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
)

// TestPodQueueLen: --pod-queue-len becomes the txqueuelen of a new pod's
// eth0, and of a pod's eth0 again when a restarted daemon re-attaches it.
func TestPodQueueLen(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1, DaemonArgs: []string{"--pod-queue-len=3000"}})
	ns, _ := l.Netns("test-1")
	qlen := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/tx_queue_len").CombinedOutput()
		if err != nil {
			t.Fatalf("tx_queue_len: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := qlen(); got != "3000" {
		t.Fatalf("new pod's eth0 qlen %s, want 3000", got)
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "eth0", "txqueuelen", "5").CombinedOutput(); err != nil {
		t.Fatalf("txqueuelen: %v\n%s", err, out)
	}
	if err := l.StopDaemon("worker1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the re-attached pod's qlen set again", func() string {
		if got := qlen(); got != "3000" {
			return "qlen " + got
		}
		return ""
	})
}
