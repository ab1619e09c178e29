package node_test

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
)

// TestConcurrentAddsOneNetns: two pod adds into one namespace at once
// (the daemon holds each for 2 s after it reserves the pod, the test-only
// PODNET_TEST_PAUSE_AT hook, so that both pass the eth0 check before
// either makes its link). One gets the namespace; the other is refused,
// naming it and the pod that has it, and its failure leaves the winner's
// eth0 alone: the winner answers pings.
func TestConcurrentAddsOneNetns(t *testing.T) {
	labtest.RequireRoot(t)
	// The daemon inherits the test's environment; the lab adds no pod.
	t.Setenv("PODNET_TEST_PAUSE_AT", "add-intent")
	t.Setenv("PODNET_TEST_PAUSE_FOR", "2s")
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: lab.NoPods})
	w1 := nodeClient(t, l, "worker1")
	ns := l.HandPodNetns("worker1", "shared")
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
	}
	t.Cleanup(func() { removeNetns(ns) })
	path := "/run/netns/" + ns

	type result struct {
		name string
		info nodeapi.PodInfo
		err  error
	}
	results := make(chan result, 2)
	for _, name := range []string{"first", "second"} {
		go func() {
			info, err := w1.AddPod(nodeapi.AddPodRequest{Name: name, Netns: path})
			results <- result{name, info, err}
		}()
	}
	var won, lost []result
	var said []string
	for range 2 {
		r := <-results
		if r.err == nil {
			won = append(won, r)
			said = append(said, r.name+": added "+r.info.IP)
		} else {
			lost = append(lost, r)
			said = append(said, r.name+": "+r.err.Error())
		}
	}
	if len(won) != 1 {
		t.Fatalf("two adds into one netns: %d succeeded, want one:\n%s", len(won), strings.Join(said, "\n"))
	}
	winner, loser := won[0], lost[0]
	for _, want := range []string{"netns " + path, "pod " + winner.name} {
		if !strings.Contains(loser.err.Error(), want) {
			t.Errorf("the refused add (%s) said %q; want it to name %q", loser.name, loser.err, want)
		}
	}
	ping(t, l, "worker1", netip.MustParseAddr(winner.info.IP))
	if err := w1.DeletePod(winner.name); err != nil {
		t.Fatal(err)
	}
	pods, err := w1.Pods()
	if err != nil || len(pods) != 0 {
		t.Fatalf("pods after the delete: %+v, %v; want none", pods, err)
	}
}
