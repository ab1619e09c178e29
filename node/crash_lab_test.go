package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/api"
	"podnet/internal/nettest"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
)

// TestPodCrashRecovery kills worker1's daemon at each step of pod add
// and pod delete (the daemon's test-only PODNET_TEST_CRASH_AT hook
// SIGKILLs it there) and starts it again. Whatever the step: the client
// is told the daemon went away (not a bare EOF); after the restart the
// add is rolled back or the delete finished (an add that was done but
// not yet answered stays), ipam check finds nothing leaked, the pod's
// namespace is gone, the name can be added again, and no address is
// used twice.
func TestPodCrashRecovery(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1})
	ctx := context.Background()
	name := "crash" + l.Name()
	other := "other" + l.Name()
	for _, p := range []string{name, other} {
		t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", p)) })
	}
	// restart starts worker1's daemon again, dying at step crash ("":
	// never).
	restart := func(crash string) {
		t.Helper()
		if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil && !strings.Contains(err.Error(), "not running") {
			t.Fatal(err)
		}
		// The daemon inherits the test's environment.
		os.Setenv("PODNET_TEST_CRASH_AT", crash)
		err := l.StartDaemon(ctx, "worker1")
		os.Unsetenv("PODNET_TEST_CRASH_AT")
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.Unsetenv("PODNET_TEST_CRASH_AT")
		// Leave the lab with a daemon that does not crash, for its
		// teardown and logs.
		l.StopDaemon("worker1", syscall.SIGKILL)
		l.StartDaemon(ctx, "worker1")
	})
	nsGone := func(pod string) string {
		if _, err := os.Stat("/run/netns/" + l.HandPodNetns("worker1", pod)); err == nil {
			return "netns " + l.HandPodNetns("worker1", pod) + " still there"
		}
		return ""
	}

	for _, step := range []string{"add-intent", "add-alloc", "add-link", "add-wep", "add-done", "del-start", "del-local"} {
		t.Run(step, func(t *testing.T) {
			restart(step)
			w1 := nodeClient(t, l, "worker1")
			var err error
			if strings.HasPrefix(step, "add-") {
				_, err = w1.AddPod(nodeapi.AddPodRequest{Name: name, New: true})
			} else {
				if _, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, New: true}); err != nil {
					t.Fatalf("pod add: %v", err)
				}
				err = w1.DeletePod(name)
			}
			if err == nil || !strings.Contains(err.Error(), "went away") {
				t.Fatalf("the daemon died at %s; the client said %v, want that the daemon went away", step, err)
			}

			restart("")
			if step == "add-done" {
				// Done before the daemon died: the pod stays, and
				// forwards; then it is deleted as any pod.
				var ip string
				waitFor(t, 15*time.Second, "the added pod is back", func() string {
					pods, err := w1.Pods()
					if err != nil {
						return err.Error()
					}
					for _, p := range pods {
						if p.Name == name && p.Attached {
							ip = p.IP
							return ""
						}
					}
					return fmt.Sprintf("pods %+v", pods)
				})
				ping(t, l, "test-1", netip.MustParseAddr(ip))
				ipamCheck(t, l)
				if _, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, New: true}); err == nil || !strings.Contains(err.Error(), "already exists") {
					t.Fatalf("pod add of the pod that exists: %v, want already exists", err)
				}
				if err := w1.DeletePod(name); err != nil {
					t.Fatalf("pod del: %v", err)
				}
			}
			waitFor(t, 15*time.Second, "the interrupted operation finished", func() string {
				st, err := w1.Status()
				if err != nil {
					return err.Error()
				}
				if len(st.PendingReleases) > 0 {
					return fmt.Sprintf("pending releases %v", st.PendingReleases)
				}
				return nsGone(name)
			})
			pods, err := w1.Pods()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods {
				if p.Name == name {
					t.Fatalf("pod %s listed after the restart: %+v", name, p)
				}
			}
			ipamCheck(t, l)

			// The name comes back, and a second pod gets an address of
			// its own.
			a, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, New: true})
			if err != nil {
				t.Fatalf("pod add %s after the restart: %v", name, err)
			}
			b, err := w1.AddPod(nodeapi.AddPodRequest{Name: other, New: true})
			if err != nil {
				t.Fatalf("pod add %s: %v", other, err)
			}
			seen := map[string]string{}
			pods, _ = w1.Pods()
			for _, p := range pods {
				if q, dup := seen[p.IP]; dup {
					t.Fatalf("address %s used by %s and %s", p.IP, q, p.Name)
				}
				seen[p.IP] = p.Name
			}
			ping(t, l, "test-1", netip.MustParseAddr(a.IP))
			ping(t, l, "test-1", netip.MustParseAddr(b.IP))
			ipamCheck(t, l)
			for _, p := range []string{name, other} {
				if err := w1.DeletePod(p); err != nil {
					t.Fatalf("pod del %s: %v", p, err)
				}
			}
			ipamCheck(t, l)
		})
	}
}

// TestPodCrashRecoveryGivenNetns is TestPodCrashRecovery for a pod added
// into a namespace the caller made (--netns): the rollback removes the
// eth0 the add made there and leaves the namespace, which takes the pod
// again.
func TestPodCrashRecoveryGivenNetns(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1})
	ctx := context.Background()
	name := "given" + l.Name()
	ns := l.Name() + "-given"
	nsPath := nettest.Netns(t, ns)
	hasEth0 := func() bool { return exec.Command("ip", "-n", ns, "link", "show", "eth0").Run() == nil }
	t.Cleanup(func() {
		os.Unsetenv("PODNET_TEST_CRASH_AT")
		l.StopDaemon("worker1", syscall.SIGKILL)
		l.StartDaemon(ctx, "worker1")
	})
	for _, step := range []string{"add-link", "add-wep"} {
		t.Run(step, func(t *testing.T) {
			if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil && !strings.Contains(err.Error(), "not running") {
				t.Fatal(err)
			}
			os.Setenv("PODNET_TEST_CRASH_AT", step)
			err := l.StartDaemon(ctx, "worker1")
			os.Unsetenv("PODNET_TEST_CRASH_AT")
			if err != nil {
				t.Fatal(err)
			}
			w1 := nodeClient(t, l, "worker1")
			if _, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, Netns: nsPath}); err == nil || !strings.Contains(err.Error(), "went away") {
				t.Fatalf("the daemon died at %s; the client said %v", step, err)
			}
			if !hasEth0() {
				t.Fatal("the add died after making eth0, but there is none: the crash point is wrong")
			}
			l.StopDaemon("worker1", syscall.SIGKILL)
			if err := l.StartDaemon(ctx, "worker1"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 15*time.Second, "the add rolled back", func() string {
				st, err := w1.Status()
				switch {
				case err != nil:
					return err.Error()
				case len(st.PendingReleases) > 0:
					return fmt.Sprintf("pending releases %v", st.PendingReleases)
				case hasEth0():
					return "eth0 still in " + ns
				}
				return ""
			})
			if _, err := os.Stat(nsPath); err != nil {
				t.Fatalf("the caller's namespace went with the rollback: %v", err)
			}
			ipamCheck(t, l)
			a, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, Netns: nsPath})
			if err != nil {
				t.Fatalf("pod add into the same namespace after the restart: %v", err)
			}
			ping(t, l, "test-1", netip.MustParseAddr(a.IP))
			if err := w1.DeletePod(name); err != nil {
				t.Fatal(err)
			}
			ipamCheck(t, l)
		})
	}
}

// TestPodRecordsLost is issue 14's report: a pod that runs but whose
// WorkloadEndpoint is missing looks leaked to ipam check, and `ipam
// release --leaked` frees its address for the next pod. A restarted
// daemon puts both records back (checkPods): ipam check is clean and
// the next pod gets another address.
func TestPodRecordsLost(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1})
	w1 := nodeClient(t, l, "worker1")
	name, next := "lost"+l.Name(), "next"+l.Name()
	for _, p := range []string{name, next} {
		t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", p)) })
	}
	a, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, New: true})
	if err != nil {
		t.Fatal(err)
	}
	mustPodnet(t, l, "", "delete", "wep", api.WorkloadEndpointName("worker1", name))
	if out, err := podnetIn(l, "worker1", "", "ipam", "check"); err == nil || !strings.Contains(out, a.IP+" leaked") {
		t.Fatalf("ipam check with the endpoint gone: %v, want %s leaked:\n%s", err, a.IP, out)
	}
	mustPodnet(t, l, "", "ipam", "release", "--leaked", "--grace=1s")

	if err := l.StopDaemon("worker1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
		t.Fatal(err)
	}
	// ipam check is clean before the daemon's check too (a free
	// address without endpoint is no problem to it): wait for the
	// endpoint to be back.
	waitFor(t, 15*time.Second, "the pod's endpoint back, ipam check clean", func() string {
		if out, err := podnetIn(l, "worker1", "", "get", "wep", api.WorkloadEndpointName("worker1", name)); err != nil {
			return fmt.Sprintf("get wep: %v: %s", err, out)
		}
		if out, err := podnetIn(l, "worker1", "", "ipam", "check"); err != nil {
			return fmt.Sprintf("%v: %s", err, out)
		}
		return ""
	})
	b, err := w1.AddPod(nodeapi.AddPodRequest{Name: next, New: true})
	if err != nil {
		t.Fatal(err)
	}
	if b.IP == a.IP {
		t.Fatalf("the next pod got %s, the address of running pod %s", b.IP, name)
	}
	ping(t, l, "test-1", netip.MustParseAddr(a.IP))
	ping(t, l, "test-1", netip.MustParseAddr(b.IP))
	for _, p := range []string{name, next} {
		if err := w1.DeletePod(p); err != nil {
			t.Fatalf("pod del %s: %v", p, err)
		}
	}
	ipamCheck(t, l)
}

// ipamCheck fails unless `podnet ipam check` on worker1 finds nothing.
func ipamCheck(t *testing.T, l *lab.Lab) {
	t.Helper()
	if out, err := podnetIn(l, "worker1", "", "ipam", "check"); err != nil {
		t.Fatalf("ipam check: %v\n%s", err, out)
	}
}
