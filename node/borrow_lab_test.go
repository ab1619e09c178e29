package node_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router"
)

// TestBorrowedAddress: once a pool has no free block left, a node
// borrows an address from another node's block (Calico's IPAM, strict
// affinity off) and advertises it as a /32. The block's owner must route
// that /32 to the borrower rather than blackhole it with the rest of its
// block, and the borrower must take the owner's block although its own
// pod lies inside it: the two pods talk both ways.
//
// The pool has two /31 blocks; plain routing, so no node holds a tunnel
// address from it.
func TestBorrowedAddress(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: lab.NoPods, Encap: lab.EncapNone})
	ctx := context.Background()
	var out, errb strings.Builder
	err := l.Exec(ctx, "worker1", strings.NewReader(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: tiny
spec:
  cidr: 10.30.0.0/30
  blockSize: 31
  ipipMode: Never
  vxlanMode: Never
`), &out, &errb, "podnet", "apply", "-f", "-")
	if err != nil {
		t.Fatalf("apply the pool: %v\n%s%s", err, out.String(), errb.String())
	}
	add := func(name, node string) netip.Addr {
		t.Helper()
		st, err := l.AddPod(ctx, lab.PodSpec{Name: name, Node: node, Pool: "tiny"})
		if err != nil {
			t.Fatalf("add pod %s on %s: %v", name, node, err)
		}
		return st.IP
	}
	own1 := add("own1", "worker1")
	other := add("other", "worker2")
	own2 := add("own2", "worker1")
	borrowed := add("borrowed", "worker1") // both blocks are claimed: worker2's has room
	block2, _ := other.Prefix(31)
	if !block2.Contains(borrowed) {
		t.Fatalf("pods: own1 %s, own2 %s, other %s, borrowed %s; want borrowed in worker2's block %s", own1, own2, other, borrowed, block2)
	}
	waitFor(t, 20*time.Second, "worker2's route to the borrowed address", func() string {
		r, ok := routeTo(t, l, "worker2", netip.PrefixFrom(borrowed, 32))
		if !ok || r.Kind == router.KindBlackhole || r.NextHop != l.NodeAddr("worker1") {
			return "no /32 via worker1"
		}
		return ""
	})
	waitFor(t, 20*time.Second, "worker1's route to worker2's block", func() string {
		if _, ok := routeTo(t, l, "worker1", block2); !ok {
			return "no route"
		}
		return ""
	})
	ping(t, l, "borrowed", other)
	ping(t, l, "other", borrowed)
	ping(t, l, "other", own1)
	ping(t, l, "own2", borrowed)
}
