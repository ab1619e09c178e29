package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/datastore"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	"podnet/router"
)

// TestEtcdDownRestart restarts worker1's daemon while the lab's etcd is
// frozen (SIGSTOP) for longer than the liveness lease's 15 s:
//
//   - the daemon starts, re-attaches its recorded pods, and they forward;
//
//   - BGP comes up by the view cache (view.json in the state dir): the
//     mesh session to worker2 and the route to its pod;
//
//   - status says the datastore is unreachable, at once; pod add is
//     refused at once, saying why; a pod deleted meanwhile is listed as
//     a pending release;
//
//   - once etcd runs again: the node registers, routes by a fresh read
//     of the datastore, the pending release is done (ipam check is clean),
//     pod add works, and both daemons hold a liveness lease again
//     (worker2's, running all along, was lost in the stall).
//
//     etcd (stopped 20 s+) ··· worker1 (restarted meanwhile) ══ BGP ══ worker2
func TestEtcdDownRestart(t *testing.T) {
	labtest.RequireRoot(t)
	// test-1 and test-3 on worker1, test-2 on worker2.
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 3})
	w1 := nodeClient(t, l, "worker1")
	block := blockOf(l, "test-2")
	waitFor(t, 30*time.Second, "worker1 routes worker2's block", func() string {
		if r, ok := routeTo(t, l, "worker1", block); !ok || r.Kind != router.KindRemote {
			return fmt.Sprintf("route %+v (found %v)", r, ok)
		}
		return ""
	})
	// A pod to delete while etcd is down.
	gone := "gone" + l.Name()
	t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", gone)) })
	goneInfo, err := w1.AddPod(nodeapi.AddPodRequest{Name: gone, New: true})
	if err != nil {
		t.Fatalf("pod add %s: %v", gone, err)
	}

	if err := l.StopDaemon("worker1", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	resume := freezeEtcd(t, l)
	stopped := time.Now()

	if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
		t.Fatalf("daemon restart with etcd stopped: %v", err)
	}
	ping(t, l, "test-1", l.PodIP("test-3"))
	ping(t, l, "test-3", l.NodeAddr("worker1"))
	// BGP by the view cache: the mesh session to worker2 comes back and
	// worker2's pod is reached both ways, etcd still stopped.
	took := waitFor(t, 15*time.Second, "worker1 routes worker2's block by its view cache, etcd stopped", func() string {
		if r, ok := routeTo(t, l, "worker1", block); !ok || r.Kind != router.KindRemote {
			return fmt.Sprintf("route %+v (found %v)", r, ok)
		}
		return ""
	})
	t.Logf("worker2's block routed %v after the restart, etcd stopped", took)
	ping(t, l, "test-1", l.PodIP("test-2"))
	ping(t, l, "test-2", l.PodIP("test-3"))

	// quick fails unless f answers within 2 s: nothing here may wait
	// for etcd.
	quick := func(what string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s with etcd stopped: %v", what, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s with etcd stopped: no answer after 2s", what)
		}
	}
	quick("status", func() error {
		st, err := w1.Status()
		if err == nil && (st.Datastore != nodeapi.DatastoreUnreachable || st.Registered || st.Pods != 3) {
			err = fmt.Errorf("status %+v, want the datastore unreachable, not registered, 3 pods", st)
		}
		return err
	})
	quick("podnet status", func() error {
		out, err := podnetIn(l, "worker1", "", "status")
		if err == nil && (!strings.Contains(out, "datastore:") || !strings.Contains(out, "unreachable since")) {
			err = fmt.Errorf("podnet status does not say the datastore is unreachable:\n%s", out)
		}
		return err
	})
	quick("podnet node status", func() error {
		out, err := podnetIn(l, "worker1", "", "node", "status")
		if !strings.Contains(out, "unreachable since") {
			return fmt.Errorf("node status does not say the datastore is unreachable (%v):\n%s", err, out)
		}
		return nil
	})
	quick("pods", func() error {
		pods, err := w1.Pods()
		if err != nil {
			return err
		}
		for _, p := range pods {
			if !p.Attached {
				return fmt.Errorf("pod %s not attached: %s", p.Name, p.Error)
			}
		}
		if len(pods) != 3 {
			return fmt.Errorf("pods %+v, want test-1, test-3 and %s", pods, gone)
		}
		return nil
	})
	quick("pod add", func() error {
		_, err := w1.AddPod(nodeapi.AddPodRequest{Name: "refused" + l.Name(), New: true})
		if err == nil || !strings.Contains(err.Error(), "datastore unreachable") {
			return fmt.Errorf("pod add answered %v, want a datastore unreachable error", err)
		}
		return nil
	})
	quick("pod del", func() error { return w1.DeletePod(gone) })
	st, err := w1.Status()
	if err != nil || !slices.Equal(st.PendingReleases, []string{gone}) {
		t.Fatalf("status after the delete: %+v (%v), want %s's release pending", st, err, gone)
	}

	// Past the lease's TTL (15 s), then etcd runs again.
	time.Sleep(time.Until(stopped.Add(20 * time.Second)))
	resume()

	took = waitFor(t, 30*time.Second, "worker1 registered, BGP routes worker2's block, release done", func() string {
		st, err := w1.Status()
		if err != nil {
			return err.Error()
		}
		if st.Datastore != nodeapi.DatastoreReachable || !st.Registered || len(st.PendingReleases) > 0 {
			return fmt.Sprintf("status %+v", st)
		}
		if r, ok := routeTo(t, l, "worker1", block); !ok || r.Kind != router.KindRemote {
			return fmt.Sprintf("route %+v (found %v)", r, ok)
		}
		return ""
	})
	t.Logf("worker1 registered %v after etcd resumed", took)
	ping(t, l, "test-1", l.PodIP("test-2"))
	ipamCheck(t, l)

	// Both daemons hold a liveness lease again.
	store, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Datastore()}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	time.Sleep(2 * time.Second) // the stalled leases expire now, if they do
	took = waitFor(t, 20*time.Second, "both daemons alive in the datastore", func() string {
		alive, err := store.AliveNodes(context.Background())
		if err != nil {
			return err.Error()
		}
		if !alive["worker1"] || !alive["worker2"] {
			return fmt.Sprintf("alive: %v", alive)
		}
		return ""
	})

	t.Logf("both daemons alive %v later", took)
	// Pod add works again; the released address may be reused, once.
	again := "again" + l.Name()
	t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", again)) })
	info, err := w1.AddPod(nodeapi.AddPodRequest{Name: again, New: true})
	if err != nil {
		t.Fatalf("pod add after etcd came back: %v", err)
	}
	t.Logf("deleted with etcd down: %s; added after: %s", goneInfo.IP, info.IP)
	ping(t, l, "test-1", l.PodIP("test-2"))
	if err := w1.DeletePod(again); err != nil {
		t.Fatalf("pod del: %v", err)
	}
	ipamCheck(t, l)
}

// TestAliveAfterEtcdStall freezes etcd past the liveness lease's TTL
// under a running daemon: the lease is lost (the client stops renewing
// after 15 s without an answer, and etcd expires it), and the daemon
// must grant itself a new one, or `ipam check` takes it for dead.
func TestAliveAfterEtcdStall(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: lab.NoPods})
	store, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Datastore()}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	alive := func() string {
		a, err := store.AliveNodes(context.Background())
		if err != nil {
			return err.Error()
		}
		if !a["worker1"] {
			return fmt.Sprintf("alive: %v", a)
		}
		return ""
	}
	waitFor(t, 10*time.Second, "worker1 alive", alive)
	resume := freezeEtcd(t, l)
	time.Sleep(18 * time.Second)
	resume()
	time.Sleep(2 * time.Second) // etcd expires the stalled lease now
	waitFor(t, 20*time.Second, "worker1 alive again after the stall", alive)
	// And it stays: the new lease is renewed.
	time.Sleep(16 * time.Second)
	if msg := alive(); msg != "" {
		t.Fatalf("a lease's TTL later: %s", msg)
	}
}
