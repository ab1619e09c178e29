package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"podnet/internal/nettest"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/node"
)

// TestIPIPSuperframesLab: a TCP transfer between pods on two nodes of an
// IP-in-IP lab leaves worker1 as superframes whole through its
// IPIPTapName TAP, crosses the veth fabric whole and arrives at worker2
// as superpackets, intact. Once the TAP's tc program is gone (someone
// flushed the qdisc), worker1's status says superframes stopped, and the
// next transfer is cut in userspace, still intact.
func TestIPIPSuperframesLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapIPIP})
	c1, c2 := nodeClient(t, l, "worker1"), nodeClient(t, l, "worker2")
	if st, err := c1.Status(); err != nil || !strings.HasPrefix(st.IPIPSuperframes, "on") {
		t.Fatalf("worker1 status: ipip superframes %q (%v), want on", st.IPIPSuperframes, err)
	}
	from, to := nsPath(t, l, "test-1"), nsPath(t, l, "test-2")
	transfer(t, from, to, l.PodIP("test-2"), 16<<20)
	if s := portStats(t, c1, "ipip"); s.TxSuperframes == 0 || len(s.Drops) != 0 {
		t.Errorf("worker1 sent the transfer with %d superframes whole and drops %v, want some and none", s.TxSuperframes, s.Drops)
	}
	if s := portStats(t, c2, "ipip"); s.GSOFrames == 0 || len(s.Drops) != 0 {
		t.Errorf("worker2 took the transfer with %d superpackets and drops %v, want some and none", s.GSOFrames, s.Drops)
	}

	if out, err := l.Output(context.Background(), "worker1", "tc", "qdisc", "del", "dev", node.IPIPTapName, "clsact"); err != nil {
		t.Fatalf("tc qdisc del on worker1: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "worker1 status saying ipip superframes stopped", func() string {
		st, err := c1.Status()
		if err == nil && strings.HasPrefix(st.IPIPSuperframes, "off (stopped)") && strings.Contains(st.IPIPSuperframes, "no longer attached") {
			return ""
		}
		return fmt.Sprintf("status %q (%v)", st.IPIPSuperframes, err)
	})
	before := portStats(t, c1, "ipip").TxSuperframes
	transfer(t, from, to, l.PodIP("test-2"), 8<<20)
	if after := portStats(t, c1, "ipip"); after.TxSuperframes != before || len(after.Drops) != 0 {
		t.Errorf("after the program went: %d superframes whole (was %d), drops %v; want none more, cut in userspace", after.TxSuperframes, before, after.Drops)
	}
}

// TestIPIPUDPSuperframesLab: UDP between pods on two nodes of an IP-in-IP
// lab leaves worker1 as superframes whole too (where the kernel has USO):
// bursts of datagrams that the switch merges, and a pod's own
// UDP_SEGMENT sends. They cross the veth fabric whole, marked with their
// datagrams' size, and worker2 delivers every datagram once, in order,
// with its own size and bytes.
func TestIPIPUDPSuperframesLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: lab.EncapIPIP})
	c1, c2 := nodeClient(t, l, "worker1"), nodeClient(t, l, "worker2")
	if st, err := c1.Status(); err != nil || !strings.HasPrefix(st.IPIPSuperframes, "on, TCP and UDP") {
		t.Fatalf("worker1 status: ipip superframes %q (%v), want on for TCP and UDP", st.IPIPSuperframes, err)
	}
	from, to, dst := nsPath(t, l, "test-1"), nsPath(t, l, "test-2"), l.PodIP("test-2")
	ping(t, l, "test-1", dst) // resolve the gateway: a burst would overflow ARP's queue

	rx := nettest.ListenUDP(t, to, dst, 7100)
	size := func(int) int { return 200 }
	sent := nettest.SendBursts(t, from, dst, 7100, 30, 40, size)
	nettest.ReadSeq(t, rx, 0, sent, size)
	merged := portStats(t, c1, "ipip").TxSuperframes
	if merged == 0 {
		t.Errorf("bursts of 40 datagrams: none left worker1 as a superframe whole")
	}

	const sends, segs, segSize, tail = 10, 40, 300, 100
	segmented := nettest.SegmentedSizes(segs, segSize, tail)
	rx2 := nettest.ListenUDP(t, to, dst, 7101)
	nettest.SendSegmented(t, from, dst, 7101, sends, segs, segSize, tail, func(first, n int) { nettest.ReadSeq(t, rx2, first, n, segmented) })

	s1, s2 := portStats(t, c1, "ipip"), portStats(t, c2, "ipip")
	t.Logf("worker1 sent %d packets, %d of them superframes whole (%d from the bursts); worker2 read %d, %d superframes", s1.TxFrames, s1.TxSuperframes, merged, s2.RxFrames, s2.GSOFrames)
	if s1.TxSuperframes-merged < sends || s2.GSOFrames < s1.TxSuperframes {
		t.Errorf("%d UDP_SEGMENT sends: %d superframes left worker1 whole after the bursts, worker2 took %d in all of %d; want one a send, and all",
			sends, s1.TxSuperframes-merged, s2.GSOFrames, s1.TxSuperframes)
	}
	if len(s1.Drops) != 0 || len(s2.Drops) != 0 {
		t.Errorf("drops: worker1 %v, worker2 %v", s1.Drops, s2.Drops)
	}
}
