package nat

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"podnet/internal/packet"
)

// ownGoroutines returns the stacks of goroutines running NAT or gVisor
// code.
func ownGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, mark := range []string{"podnet/nat.(*NAT)", "podnet/nat.(*splice)", "podnet/nat.(*sockets)", "gvisor.dev/gvisor/"} {
			if strings.Contains(g, mark) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// TestCloseStopsEverything closes a NAT with flows of every kind open and
// a TCP dial pending: Close returns promptly and no goroutine of NAT or of
// gVisor survives it. gVisor itself keeps no background goroutine once the
// stack is destroyed (its TCP processors and timers stop with it), so
// nothing is exempt from the check.
func TestCloseStopsEverything(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		if g := ownGoroutines(); len(g) != 0 {
			t.Fatalf("goroutines left by earlier tests:\n%s", strings.Join(g, "\n\n"))
		}
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		// An open TCP connection, idle in both directions.
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 9))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		// A UDP and an ICMP flow.
		u := pod.dialUDP(t, netip.AddrPortFrom(remoteAddr, 7))
		u.SetDeadline(time.Now().Add(10 * time.Second))
		u.Write([]byte("x"))
		if _, err := u.Read(make([]byte, 10)); err != nil {
			t.Fatalf("udp: %v", err)
		}
		n.Handle(buildEcho(podAddr, remoteAddr, packet.ICMPEcho, 1, 1, nil), 0)
		// A TCP dial that hangs: nobody answers ARP for .99, so the host
		// connect waits ~3s before EHOSTUNREACH.
		dialDone := make(chan error, 1)
		go func() {
			c, err := pod.dial(ctx, netip.AddrPortFrom(netip.MustParseAddr("10.252.0.99"), 80))
			if err == nil {
				c.Close()
			}
			dialDone <- err
		}()
		if !waitFor(5*time.Second, func() bool { return n.Stats().Entries == 4 }) {
			t.Fatalf("want 4 entries, have %+v", n.Entries())
		}
		if len(ownGoroutines()) == 0 {
			t.Fatal("no NAT goroutines seen while running: the check is broken")
		}

		start := time.Now()
		if err := n.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		took := time.Since(start)
		t.Logf("Close took %v", took)
		if took > 2*time.Second {
			t.Errorf("Close took %v: a pending dial was not cancelled", took)
		}
		if err := n.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		before := n.Stats().Drops["closed"]
		n.Handle(buildUDP(netip.AddrPortFrom(podAddr, 1), netip.AddrPortFrom(remoteAddr, 7), nil), 0)
		if s := n.Stats(); s.Drops["closed"] != before+1 || s.Entries != 0 || s.PortsInUse != 0 {
			t.Errorf("after Close: %+v", s)
		}
		pod.close()
		<-dialDone

		var left []string
		if !waitFor(5*time.Second, func() bool { left = ownGoroutines(); return len(left) == 0 }) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
		}
	})
}

// A flow offered after Close drained the table is refused: a connection
// request that was dialling while NAT closed must not put a flow back that
// nobody would close (its splice would keep Close waiting).
func TestDrainedTableRefusesFlows(t *testing.T) {
	tb := newTable(8)
	k := func(port uint16) flowKey {
		return flowKey{packet.ProtoTCP, netip.MustParseAddrPort("10.0.0.1:1000"), netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)}
	}
	kept := &flow{key: k(1)}
	if _, ok := tb.insert(kept); !ok {
		t.Fatal("insert into an open table refused")
	}
	if got := tb.drain(); len(got) != 1 || got[0] != kept || tb.len() != 0 {
		t.Fatalf("drain returned %v, left %d; want the one flow, none left", got, tb.len())
	}
	if got, ok := tb.insert(&flow{key: k(2)}); ok || got != nil {
		t.Fatalf("insert after drain: got %v %v, want nil false", got, ok)
	}
	if _, ok := tb.replace(&flow{key: k(1)}); ok || tb.len() != 0 {
		t.Fatalf("replace after drain: ok %v, %d flows; want refused, none", ok, tb.len())
	}
}
