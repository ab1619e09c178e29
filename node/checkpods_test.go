package node

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"podnet/datastore"
)

// TestCheckPodsGivesUp: checkPods against an etcd that takes connections
// and never answers (as a stopped one does) returns within
// checkPodsTimeout, though its caller's context has no deadline, and
// frees the pods it held busy, so that their deletes go on.
func TestCheckPodsGivesUp(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "etcd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	n, err := New(Config{Name: "worker1", StateDir: dir,
		Datastore: datastore.Config{Endpoints: []string{"unix://" + sock}}})
	if err != nil {
		t.Fatal(err)
	}
	closeStore, err := n.openDatastore()
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the loop's stop (cleanups run last first): a
	// checkPods still waiting on etcd ends with the client.
	t.Cleanup(closeStore)

	s := newState()
	s.pods["p1"] = &pod{phase: podReady, rec: PodRecord{Name: "p1", IP: netip.MustParseAddr("192.168.0.5"),
		Netns: "/run/netns/p1", Handle: n.podHandle("p1")}}
	stop := make(chan struct{})
	go func() { // the loop, without the kernel routes of the real one
		defer close(n.loopDone)
		for {
			select {
			case op := <-n.ops:
				op(s)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop) })

	old := checkPodsTimeout
	checkPodsTimeout = time.Second
	t.Cleanup(func() { checkPodsTimeout = old })
	done := make(chan error, 1)
	go func() { done <- n.checkPods(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("checkPods against an etcd that does not answer: no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("checkPods still waiting for etcd after 10s (its bound is 1s)")
	}
	var busy bool
	n.do(func(s *state) error { busy = s.pods["p1"].busy; return nil })
	if busy {
		t.Error("pod p1 still busy after checkPods returned")
	}
}
