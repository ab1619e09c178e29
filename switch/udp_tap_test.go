package vswitch

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
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

	var rx *net.UDPConn
	err := netnsutil.Do(b.ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: b.ip.AsSlice(), Port: 7001})
		rx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	rx.SetReadBuffer(8 << 20)
	if rc, err := rx.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	}

	const bursts, perBurst = 20, 50
	// Every 7th datagram is shorter: it ends a superframe, and the next
	// starts a new one.
	size := func(seq int) int {
		if seq%7 == 6 {
			return 40
		}
		return 300
	}
	var tx *net.UDPConn
	err = netnsutil.Do(a.ns, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.ip.AsSlice(), Port: 7001})
		tx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	pc := ipv4.NewPacketConn(tx)
	seq := 0
	for range bursts {
		msgs := make([]ipv4.Message, perBurst)
		for i := range msgs {
			d := make([]byte, size(seq))
			binary.BigEndian.PutUint32(d, uint32(seq))
			for j := 4; j < len(d); j++ {
				d[j] = byte(seq + j)
			}
			msgs[i].Buffers = [][]byte{d}
			seq++
		}
		for sent := 0; sent < len(msgs); {
			n, err := pc.WriteBatch(msgs[sent:], 0)
			if err != nil {
				t.Fatalf("sendmmsg: %v", err)
			}
			sent += n
		}
		time.Sleep(2 * time.Millisecond) // let the TAP's queue drain: no loss
	}

	readSeq(t, rx, 0, seq, size)
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
	size := func(seq int) int {
		if seq%perSend == segs {
			return tail
		}
		return segSize
	}
	for _, p := range []*testPod{a, b} {
		rx := listenUDP(t, p.ns, p.ip, 7002)
		// Each send's datagrams are read before the next send, so no
		// queue on the way overflows.
		sendSegmented(t, tn.nodeNS, p.ip, 7002, sends, segs, segSize, tail, func(first, n int) { readSeq(t, rx, first, n, size) })
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
	size := func(seq int) int {
		if seq%perSend == segs {
			return tail
		}
		return segSize
	}
	type dest struct {
		name string
		ns   string
		ip   netip.Addr
	}
	for _, d := range []dest{{"b", b.ns, b.ip}, {"c", c.ns, c.ip}, {"host", tn.nodeNS, tn.hostIP}} {
		rx := listenUDP(t, d.ns, d.ip, 7003)
		sendSegmented(t, a.ns, d.ip, 7003, sends, segs, segSize, tail, func(first, n int) { readSeq(t, rx, first, n, size) })
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

// listenUDP opens a UDP socket on ip:port in namespace ns with a large
// receive buffer, closed when the test ends.
func listenUDP(t *testing.T, ns string, ip netip.Addr, port int) *net.UDPConn {
	t.Helper()
	var rx *net.UDPConn
	err := netnsutil.Do(ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip.AsSlice(), Port: port})
		rx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	if rc, err := rx.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	}
	return rx
}

// sendSegmented sends, from namespace ns to dst:port, `sends` buffers of
// segs datagrams of segSize bytes and one of tail bytes each, with
// UDP_SEGMENT: the kernel cuts each buffer into its datagrams, or hands
// it whole to a device with USO. Datagram k starts with k (big endian)
// and byte j of it is byte(k+j). After each send, sent is called with
// the first datagram's number and how many the send held.
func sendSegmented(t *testing.T, ns string, dst netip.Addr, port, sends, segs, segSize, tail int, sent func(first, n int)) {
	t.Helper()
	var tx *net.UDPConn
	err := netnsutil.Do(ns, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: port})
		tx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	rc, err := tx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, segSize) })
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	seq := 0
	for range sends {
		first := seq
		buf := make([]byte, 0, segs*segSize+tail)
		for i := 0; i <= segs; i++ {
			n := segSize
			if i == segs {
				n = tail
			}
			d := make([]byte, n)
			binary.BigEndian.PutUint32(d, uint32(seq))
			for j := 4; j < n; j++ {
				d[j] = byte(seq + j)
			}
			buf = append(buf, d...)
			seq++
		}
		if _, err := tx.Write(buf); err != nil {
			t.Fatalf("send %d bytes with UDP_SEGMENT %d: %v", len(buf), segSize, err)
		}
		sent(first, seq-first)
	}
}

// readSeq reads count datagrams from rx and checks that they are
// datagrams first, first+1, ... in order, datagram k size(k) bytes long,
// with the bytes sendSegmented wrote.
func readSeq(t *testing.T, rx *net.UDPConn, first, count int, size func(int) int) {
	t.Helper()
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for want := first; want < first+count; want++ {
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", want, err)
		}
		got := int(binary.BigEndian.Uint32(buf))
		if got != want || n != size(want) {
			t.Fatalf("datagram %d: got seq %d of %d bytes, want %d bytes", want, got, n, size(want))
		}
		for j := 4; j < n; j++ {
			if buf[j] != byte(want+j) {
				t.Fatalf("datagram %d: byte %d differs", want, j)
			}
		}
	}
}
