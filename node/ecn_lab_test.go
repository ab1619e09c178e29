package node_test

import (
	"context"
	"os"
	"testing"

	"podnet/internal/netnsutil"
	"podnet/internal/procnet"
	"podnet/lab"
	"podnet/lab/labtest"
)

// Congestion marks from the underlay reach the pods over both tunnels
// (RFC 6040). nftables on worker1's way out stands in for a congested
// router: it marks the outer header of ECN-capable tunnel packets CE. A
// pod whose TCP does ECN then counts CE packets arriving (IpExt
// InCEPkts), and its transfer arrives intact. A broken router that marks
// CE on packets that do not do ECN gets them dropped on worker2 and
// counted there as ecn-not-ect.
func TestTunnelECNLab(t *testing.T) {
	labtest.RequireRoot(t)
	for _, tc := range []struct {
		encap string
		match string // nft expression for worker1's outer tunnel packets
		port  string // worker2's tunnel port
	}{
		{lab.EncapVXLAN, "udp dport 4789", "vxlan"},
		{lab.EncapIPIP, "ip protocol 4", "ipip"},
	} {
		t.Run(tc.encap, func(t *testing.T) {
			l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: tc.encap})
			c2 := nodeClient(t, l, "worker2")
			from, to := nsPath(t, l, "test-1"), nsPath(t, l, "test-2")
			// The sender asks for ECN; the receiver's default (2)
			// accepts it.
			if err := netnsutil.Do(from, func() error {
				return os.WriteFile("/proc/sys/net/ipv4/tcp_ecn", []byte("1"), 0o644)
			}); err != nil {
				t.Fatalf("tcp_ecn in test-1: %v", err)
			}
			nft(t, l, "worker1", "add table ip ecntest",
				"add chain ip ecntest post { type filter hook postrouting priority 0 ; }",
				"add rule ip ecntest post "+tc.match+" ip ecn ect0 ip ecn set ce")

			before := inCEPkts(t, l, "test-2")
			transfer(t, from, to, l.PodIP("test-2"), 8<<20)
			if got := inCEPkts(t, l, "test-2") - before; got == 0 {
				t.Errorf("test-2 counted no CE packets after the transfer: the underlay's marks did not reach it%s", pathState(l))
			}
			if s := portStats(t, c2, tc.port); len(s.Drops) != 0 || s.ECNCE == 0 {
				t.Errorf("worker2 %s: drops %v and %d CE marks counted, want none and some", tc.port, s.Drops, s.ECNCE)
			}

			// A router marking what does not do ECN: ping's packets.
			nft(t, l, "worker1", "flush chain ip ecntest post",
				"add rule ip ecntest post "+tc.match+" ip ecn not-ect ip ecn set ce")
			if out, err := l.Output(context.Background(), "test-1", "ping", "-c", "2", "-i", "0.2", "-W", "1", l.PodIP("test-2").String()); err == nil {
				t.Errorf("ping through a router marking Not-ECT packets CE got answers, want them dropped:\n%s", out)
			}
			if got := portStats(t, c2, tc.port).Drops["ecn-not-ect"]; got == 0 {
				t.Errorf("worker2 %s counted no ecn-not-ect drops%s", tc.port, pathState(l))
			}
		})
	}
}

// nft runs nft commands in target's namespace, one per call.
func nft(t *testing.T, l *lab.Lab, target string, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := l.Output(context.Background(), target, "nft", c); err != nil {
			t.Fatalf("nft %s in %s: %v\n%s", c, target, err, out)
		}
	}
}

// inCEPkts is target's IpExt InCEPkts: IP packets received with ECN CE.
func inCEPkts(t *testing.T, l *lab.Lab, target string) uint64 {
	t.Helper()
	out, err := l.Output(context.Background(), target, "cat", "/proc/net/netstat")
	if err != nil {
		t.Fatalf("netstat of %s: %v\n%s", target, err, out)
	}
	n, err := procnet.Counter(string(out), "IpExt", "InCEPkts")
	if err != nil {
		t.Fatalf("%s's netstat: %v", target, err)
	}
	return n
}
