package vswitch

import (
	"net/netip"
	"os/exec"
	"testing"

	"podnet/internal/nettest"
)

// TestUDPSuperframesTAP: on real TAPs, bursts of one flow's datagrams are
// merged into GSO_UDP_L4 superframes for the receiving pod (when the
// kernel has USO), and the receiving kernel cuts them back exactly: every
// datagram arrives once, with its own size and bytes, in order.
func TestUDPSuperframesTAP(t *testing.T) {
	tn := newTestNet(t)
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", true)
	uso := tn.port(b).uso
	t.Logf("kernel takes UDP superframes (USO): %v", uso)

	// Resolve the gateway first: datagrams sent while ARP is pending wait
	// in a short queue that a burst overflows.
	if out, err := exec.Command("nsenter", "--net="+a.ns, "ping", "-c", "1", "-W", "2", b.ip.String()).CombinedOutput(); err != nil {
		t.Fatalf("ping a → b: %v\n%s", err, out)
	}

	rx := nettest.ListenUDP(t, b.ns, b.ip, 7001)
	const bursts, perBurst = 20, 50
	// Every 7th datagram is shorter: it ends a superframe, and the next
	// starts a new one.
	size := func(seq int) int {
		if seq%7 == 6 {
			return 40
		}
		return 300
	}
	seq := nettest.SendBursts(t, a.ns, b.ip, 7001, bursts, perBurst, size)
	nettest.ReadSeq(t, rx, 0, seq, size)
	if !uso {
		waitPortStats(t, tn.s, "b", "every write counted", func(s PortStats) bool { return s.TxFrames >= uint64(seq) })
	}

	st := tn.stats("b")
	t.Logf("%d datagrams reached b in %d writes", seq, st.TxFrames)
	if uso && st.TxFrames >= uint64(seq) {
		t.Errorf("%d datagrams in bursts of %d took %d writes: none were merged", seq, perBurst, st.TxFrames)
	}
	if !uso && st.TxFrames != uint64(seq) {
		t.Errorf("without USO: %d writes for %d datagrams", st.TxFrames, seq)
	}
}

// TestHostUDPSuperframes: what the node's own sockets send with
// UDP_SEGMENT reaches the host TUN's reader as one UDP superframe per
// send (on a kernel with USO), goes whole to a pod whose TAP takes UDP
// superframes, and is cut by the switch into its datagrams for a plain
// pod: every datagram arrives once, in order, with its own size and
// bytes (a wrong UDP checksum would make the pod's kernel drop it).
func TestHostUDPSuperframes(t *testing.T) {
	tn := newTestNet(t)
	tn.attachHost(t, "10.99.1.1")
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", false)
	uso := tn.s.UDPSuperframes()
	t.Logf("kernel takes UDP superframes (USO): %v", uso)

	const sends, segs, segSize, tail = 20, 40, 300, 100
	perSend := segs + 1 // the tail is a shorter last datagram
	size := nettest.SegmentedSizes(segs, segSize, tail)
	for _, p := range []*testPod{a, b} {
		rx := nettest.ListenUDP(t, p.ns, p.ip, 7002)
		// Each send's datagrams are read before the next send, so no
		// queue on the way overflows.
		nettest.SendSegmented(t, tn.nodeNS, p.ip, 7002, sends, segs, segSize, tail, func(first, n int) { nettest.ReadSeq(t, rx, first, n, size) })
	}
	waitPortStats(t, tn.s, "b", "every write counted", func(s PortStats) bool { return s.TxFrames >= uint64(sends*perSend) })

	h, sa, sb := tn.stats("host"), tn.stats("a"), tn.stats("b")
	t.Logf("host read %d frames (%d superframes); a got %d writes, b %d", h.RxFrames, h.GSOFrames, sa.TxFrames, sb.TxFrames)
	if uso {
		if h.GSOFrames < 2*sends {
			t.Errorf("host port read %d superframes, want one per send (%d)", h.GSOFrames, 2*sends)
		}
		if sa.TxFrames > sends {
			t.Errorf("pod a (USO) got %d writes for %d sends: superframes were cut", sa.TxFrames, sends)
		}
	} else if h.GSOFrames != 0 {
		t.Errorf("without USO the host port read %d superframes", h.GSOFrames)
	}
	if sb.TxFrames != uint64(sends*perSend) {
		t.Errorf("plain pod b got %d writes, want one per datagram (%d)", sb.TxFrames, sends*perSend)
	}
	for _, n := range []string{"host", "a", "b"} {
		if d := tn.stats(n).Drops; len(d) != 0 {
			t.Errorf("drops on %s: %v", n, d)
		}
	}
}

// TestPodUDPSuperframes: a pod's own UDP_SEGMENT sends reach its
// reader whole, one superframe per send (on a kernel with USO), go whole
// to a pod whose TAP takes UDP superframes and to the node, and are cut
// by the switch into their datagrams for a plain pod: every datagram
// arrives once, in order, with its own size and bytes.
func TestPodUDPSuperframes(t *testing.T) {
	tn := newTestNet(t)
	tn.attachHost(t, "10.99.1.1")
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", true)
	c := tn.addPod(t, "c", "10.99.0.3", false)
	uso := tn.port(a).readUSO
	t.Logf("pods' TAPs hand over UDP superframes (USO): %v", uso)

	const sends, segs, segSize, tail = 20, 40, 300, 100
	perSend := segs + 1
	size := nettest.SegmentedSizes(segs, segSize, tail)
	type dest struct {
		name string
		ns   string
		ip   netip.Addr
	}
	for _, d := range []dest{{"b", b.ns, b.ip}, {"c", c.ns, c.ip}, {"host", tn.nodeNS, tn.hostIP}} {
		rx := nettest.ListenUDP(t, d.ns, d.ip, 7003)
		nettest.SendSegmented(t, a.ns, d.ip, 7003, sends, segs, segSize, tail, func(first, n int) { nettest.ReadSeq(t, rx, first, n, size) })
	}
	waitPortStats(t, tn.s, "c", "every write counted", func(s PortStats) bool { return s.TxFrames >= uint64(sends*perSend) })

	sa, sb, sc, sh := tn.stats("a"), tn.stats("b"), tn.stats("c"), tn.stats("host")
	t.Logf("a read %d frames (%d superframes); b got %d writes, c %d, the node %d", sa.RxFrames, sa.GSOFrames, sb.TxFrames, sc.TxFrames, sh.TxFrames)
	if uso {
		if sa.GSOFrames < 3*sends {
			t.Errorf("pod a's port read %d superframes, want one per send (%d)", sa.GSOFrames, 3*sends)
		}
		if sa.RxFrames > 3*sends+10 { // and a few ARP and neighbour frames
			t.Errorf("pod a's port read %d frames for %d sends: the kernel cut them", sa.RxFrames, 3*sends)
		}
		if sb.TxFrames > sends || sh.TxFrames > sends {
			t.Errorf("b (USO) got %d writes and the node %d for %d sends: superframes were cut", sb.TxFrames, sh.TxFrames, sends)
		}
	} else if sa.GSOFrames != 0 {
		t.Errorf("without USO pod a's port read %d superframes", sa.GSOFrames)
	}
	if sc.TxFrames != uint64(sends*perSend) {
		t.Errorf("plain pod c got %d writes, want one per datagram (%d)", sc.TxFrames, sends*perSend)
	}
	for _, n := range []string{"host", "a", "b", "c"} {
		if d := tn.stats(n).Drops; len(d) != 0 {
			t.Errorf("drops on %s: %v", n, d)
		}
	}
}

// TestQueueFullCounted: frames a pod (or the node, into podnet0) sends
// while the device's queue is full never reach the switch; the port
// counts them as queue-full, exactly the kernel's count since the port
// was attached, so that every frame sent is accounted for once.
func TestQueueFullCounted(t *testing.T) {
	const burst = 5000
	tn := newTestNet(t)
	tn.attachHost(t, "10.99.1.1")
	a := tn.addPod(t, "a", "10.99.0.1", true)
	// Frames the switch drops once it reads them: a broadcast with a
	// local experimental EtherType to the pod's port, a packet of IP
	// version 0 to the host's.
	eth := make([]byte, 60)
	copy(eth, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	eth[12], eth[13] = 0x88, 0xb5
	for _, c := range []struct {
		port, ns, dev string
		frame         []byte
		readDrop      string
	}{
		{"a", a.ns, "eth0", eth, "unknown-ethertype"},
		{"host", tn.nodeNS, tn.host, make([]byte, 60), "bad-ip-version"},
	} {
		t.Run(c.port, func(t *testing.T) {
			ns := c.ns[len("/run/netns/"):]
			if out, err := exec.Command("ip", "-n", ns, "link", "set", c.dev, "txqueuelen", "1").CombinedOutput(); err != nil {
				t.Fatalf("txqueuelen: %v\n%s", err, out)
			}
			before := nettest.TxDropped(t, ns, c.dev)
			base := tn.stats(c.port).Drops
			// The kernel sends them far faster than a reader takes them
			// one at a time.
			nettest.SendFrames(t, c.ns, c.dev, c.frame, burst)
			var read, full uint64
			waitPortStats(t, tn.s, c.port, "every frame read or dropped by the kernel", func(s PortStats) bool {
				read, full = s.Drops[c.readDrop]-base[c.readDrop], s.Drops["queue-full"]-base["queue-full"]
				return read+full == burst
			})
			kernel := nettest.TxDropped(t, ns, c.dev) - before
			t.Logf("of %d frames the switch read %d, the kernel dropped %d", burst, read, kernel)
			if kernel == 0 {
				t.Fatalf("the kernel dropped nothing from a queue of one frame: the test shows nothing")
			}
			if full != kernel {
				t.Errorf("queue-full %d, want the kernel's %d", full, kernel)
			}
		})
	}
}
