package node_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	"podnet/router"
)

// TestDatastoreStall freezes the lab's etcd (SIGSTOP) with a pod add in
// flight on worker1 and checks that worker1's daemon goes on without it:
// the API answers at once, and when worker2 dies, BGP's withdrawal of
// worker2's block reaches worker1's switch and kernel while etcd is still
// frozen. Only the pod add waits for etcd; it completes once etcd runs.
//
//	etcd (stopped) ··· worker1 ══ BGP ══ worker2 (then SIGKILL)
//	                   a pod add waiting in IPAM
func TestDatastoreStall(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2})
	w1 := nodeClient(t, l, "worker1")
	var remotePod string
	for _, p := range l.Status().Pods {
		if p.Node == "worker2" {
			remotePod = p.Name
		}
	}
	if remotePod == "" {
		t.Fatalf("no pod on worker2 in %+v", l.Status().Pods)
	}
	block := blockOf(l, remotePod)
	kernelRoute := func() string {
		out, err := l.Output(context.Background(), "worker1", "ip", "-4", "route", "show", block.String())
		if err != nil {
			t.Fatalf("ip route on worker1: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	waitFor(t, 30*time.Second, "worker1 routes worker2's block", func() string {
		if r, ok := routeTo(t, l, "worker1", block); !ok || r.Kind != router.KindRemote {
			return fmt.Sprintf("route %+v (found %v)", r, ok)
		}
		if kernelRoute() == "" {
			return "no kernel route"
		}
		return ""
	})

	resume := freezeEtcd(t, l)
	// The daemon names the pod's netns <node>-<pod>: unique per lab.
	pod := "stall" + l.Name()
	type addResult struct {
		info nodeapi.PodInfo
		err  error
	}
	added, addDone := make(chan addResult, 1), make(chan struct{})
	// Before the lab goes down (cleanups run last first), even when the
	// test fails half-way: etcd runs again, the add finishes, and its
	// netns goes.
	t.Cleanup(func() {
		resume()
		select {
		case <-addDone:
		case <-time.After(40 * time.Second):
		}
		removeNetns(l.HandPodNetns("worker1", pod))
	})
	go func() {
		defer close(addDone)
		info, err := w1.AddPod(nodeapi.AddPodRequest{Name: pod, New: true})
		added <- addResult{info, err}
	}()
	time.Sleep(time.Second) // the add is now waiting for etcd
	select {
	case r := <-added:
		t.Fatalf("pod add finished with etcd stopped: %+v, %v", r.info, r.err)
	default:
	}

	// quick fails unless f answers within 2 s (the API has no etcd call
	// to wait for; a stalled one would wait up to 30 s).
	quick := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s with etcd stopped: %v", what, err)
			}
			t.Logf("%s with etcd stopped: %v", what, time.Since(start).Round(time.Millisecond))
		case <-time.After(2 * time.Second):
			t.Fatalf("%s with etcd stopped: no answer after 2s", what)
		}
	}
	quick("status", func() error {
		st, err := w1.Status()
		if err == nil && st.Pods != 1 {
			err = fmt.Errorf("status says %d pods, want 1 (the pod being added is not counted)", st.Pods)
		}
		return err
	})
	quick("pods", func() error {
		pods, err := w1.Pods()
		if err == nil && (len(pods) != 1 || pods[0].Name == pod) {
			err = fmt.Errorf("pods %+v, want the one pod of the lab", pods)
		}
		return err
	})
	quick("routes", func() error { _, err := w1.Routes(); return err })

	// Route learning: worker2 dies, its session drops, and worker1
	// withdraws its block from the switch and the kernel, etcd or not.
	if err := l.StopDaemon("worker2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 20*time.Second, "worker1 withdraws worker2's block with etcd stopped", func() string {
		if r, ok := routeTo(t, l, "worker1", block); ok {
			return fmt.Sprintf("still routed: %+v", r)
		}
		if k := kernelRoute(); k != "" {
			return "kernel route left: " + k
		}
		return ""
	})
	t.Logf("worker2's block withdrawn from worker1 %v after SIGKILL, etcd stopped", took)
	select {
	case r := <-added:
		t.Fatalf("pod add finished with etcd stopped: %+v, %v", r.info, r.err)
	default:
	}

	resume()
	r := <-added
	if r.err != nil {
		t.Fatalf("pod add after etcd resumed: %v", r.err)
	}
	pods, err := w1.Pods()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pods {
		found = found || (p.Name == pod && p.Attached && p.IP == r.info.IP)
	}
	if !found {
		t.Fatalf("pods after the add: %+v, want %s attached at %s", pods, pod, r.info.IP)
	}
	if err := w1.DeletePod(pod); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	if pods, err := w1.Pods(); err != nil || len(pods) != 1 {
		t.Fatalf("pods after the delete: %+v, %v, want the lab's one", pods, err)
	}
}
