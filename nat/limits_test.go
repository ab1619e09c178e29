package nat

import (
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"podnet/internal/nettest"
	"podnet/internal/packet"
)

// TestMaxEntries fills a small table: further flows of every protocol are
// refused and counted, the table and host sockets stay bounded, and the
// flows already admitted keep working.
func TestMaxEntries(t *testing.T) {
	const max = 4
	tcpPaths(t, Config{MaxEntries: max}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		echo := netip.AddrPortFrom(remoteAddr, 7)

		var first = pod.dialUDP(t, echo)
		first.SetDeadline(time.Now().Add(10 * time.Second))
		roundTrip := func(what string) {
			t.Helper()
			if _, err := first.Write([]byte(what)); err != nil {
				t.Fatalf("%s: write: %v", what, err)
			}
			buf := make([]byte, 100)
			nr, err := first.Read(buf)
			if err != nil || string(buf[:nr]) != what {
				t.Fatalf("%s: echo %q, %v", what, buf[:nr], err)
			}
		}
		roundTrip("first")
		// The other flows' source ports lie below the pod stack's ephemeral
		// range (16000 and up), so none of them is first's flow: a "fill"
		// datagram from first's port would leave one entry short, a "more"
		// one would be let through and echoed to it.
		for i := range max - 1 {
			n.Handle(buildUDP(netip.AddrPortFrom(podAddr, uint16(10000+i)), echo, []byte("fill")), 0)
		}
		if s := n.Stats(); s.Entries != max {
			t.Fatalf("entries %d, want %d", s.Entries, max)
		}

		// Many more flows: all refused, nothing grows.
		const extra = 1000
		for i := range extra {
			n.Handle(buildUDP(netip.AddrPortFrom(podAddr, uint16(11000+i)), echo, []byte("more")), 0)
		}
		n.Handle(buildEcho(podAddr, remoteAddr, packet.ICMPEcho, 99, 1, nil), 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 80))
		if err == nil {
			c.Close()
			t.Fatal("TCP dial succeeded with a full table")
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Errorf("TCP dial with a full table: %v, want refused (RST)", err)
		}
		t.Logf("TCP refused after %v with a full table", time.Since(start))

		s := n.Stats()
		if s.Entries != max || s.PortsInUse > max {
			t.Errorf("stats %+v: want %d entries and at most %d ports", s, max, max)
		}
		if want := uint64(extra + 2); s.Drops["table-full"] != want {
			t.Errorf("table-full = %d, want %d", s.Drops["table-full"], want)
		}
		if got := n.hostSockets.Load(); got != max {
			t.Errorf("host sockets %d, want %d", got, max)
		}
		roundTrip("still works")
	})
}

// TestPortRange: host sockets take their ports from PortMin..PortMax and
// new flows are refused once the range is used up.
func TestPortRange(t *testing.T) {
	tcpPaths(t, Config{PortMin: 40000, PortMax: 40001}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		echo := netip.AddrPortFrom(remoteAddr, 7)
		for i := range 3 {
			n.Handle(buildUDP(netip.AddrPortFrom(podAddr, uint16(20000+i)), echo, []byte("x")), 0)
		}
		s := n.Stats()
		if s.Entries != 2 || s.Drops["ports-exhausted"] != 1 || s.PortsInUse != 2 || s.PortsTotal != 4 {
			t.Errorf("stats %+v: want 2 entries, 1 ports-exhausted, 2 of 4 ports in use", s)
		}
		for _, e := range n.Entries() {
			if p := e.Node.Port(); p < 40000 || p > 40001 {
				t.Errorf("entry %+v: node port outside 40000-40001", e)
			}
		}
		// TCP has its own ports.
		resp, err := pod.httpClient().Get("http://10.252.0.2/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		resp.Body.Close()
		cl := tp.httpClients()
		if len(cl) != 1 || cl[0].Port() < 40000 || cl[0].Port() > 40001 {
			t.Errorf("server saw %v, want a port in 40000-40001", cl)
		}
	})
}

// TestSourceAddr: with SourceAddr (natOutgoingAddress) remotes see that
// address instead of the one the kernel would choose.
func TestSourceAddr(t *testing.T) {
	tcpPaths(t, Config{SourceAddr: nodeAddr2}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		resp, err := pod.httpClient().Get("http://10.252.0.2/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		resp.Body.Close()
		if cl := tp.httpClients(); len(cl) != 1 || cl[0].Addr() != nodeAddr2 {
			t.Errorf("server saw %v, want %v", cl, nodeAddr2)
		}
		c := pod.dialUDP(t, netip.AddrPortFrom(remoteAddr, 7))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hi"))
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatalf("udp echo: %v", err)
		}
		e, ok := findEntry(n, "udp", netip.AddrPortFrom(remoteAddr, 7))
		if !ok || e.Node.Addr() != nodeAddr2 {
			t.Errorf("udp entry %+v, want node %v", e, nodeAddr2)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	deliver := func([]byte, int, packet.VirtioNetHdr) {}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no deliver", Config{}, "Deliver is required"},
		{"ipv6 source", Config{Deliver: deliver, SourceAddr: netip.MustParseAddr("::1")}, "not IPv4"},
		{"half range", Config{Deliver: deliver, PortMin: 1000}, "bad port range"},
		{"inverted range", Config{Deliver: deliver, PortMin: 2000, PortMax: 1000}, "bad port range"},
		{"negative max", Config{Deliver: deliver, MaxEntries: -1}, "negative"},
		{"bad netns", Config{Deliver: deliver, Netns: "/run/netns/does-not-exist-nat"}, "does-not-exist-nat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.cfg)
			if err == nil {
				n.Close()
				t.Fatalf("New succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// TestMalformed: bad packets are counted by reason and never panic.
func TestMalformed(t *testing.T) {
	tp := newTopo(t)
	n, _ := newNAT(t, tp, Config{})
	pod := netip.AddrPortFrom(podAddr, 1234)
	remote := netip.AddrPortFrom(remoteAddr, 7)
	udp := buildUDP(pod, remote, []byte("payload"))
	mut := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	frag := mut(udp, func(b []byte) { b[6] = 0x20; packet.IPv4(b).ComputeChecksum() }) // MF
	udpBadLen := mut(udp, func(b []byte) { b[24], b[25] = 0xff, 0xff })
	udpShortLen := mut(udp, func(b []byte) { b[24], b[25] = 0, 4 })
	gre := buildIPv4(47, podAddr, remoteAddr, make([]byte, 8))
	timestamp := buildEcho(podAddr, remoteAddr, 13, 1, 1, make([]byte, 12))
	icmpErr := buildEcho(podAddr, remoteAddr, packet.ICMPDestUnreachable, 0, 0, make([]byte, 28))
	tcpShort := buildIPv4(packet.ProtoTCP, podAddr, remoteAddr, make([]byte, 10))
	udpShort := buildIPv4(packet.ProtoUDP, podAddr, remoteAddr, make([]byte, 4))
	icmpShort := buildIPv4(packet.ProtoICMP, podAddr, remoteAddr, make([]byte, 4))

	tests := []struct {
		name   string
		pkt    []byte
		reason string
	}{
		{"empty", nil, "malformed"},
		{"truncated header", udp[:12], "malformed"},
		{"version 6", mut(udp, func(b []byte) { b[0] = 0x65 }), "malformed"},
		{"ihl 3", mut(udp, func(b []byte) { b[0] = 0x43 }), "malformed"},
		{"total length beyond buffer", mut(udp, func(b []byte) { b[2], b[3] = 0x10, 0 }), "malformed"},
		{"total length below header", mut(udp, func(b []byte) { b[2], b[3] = 0, 10 }), "malformed"},
		{"tcp header truncated", tcpShort, "malformed"},
		{"udp header truncated", udpShort, "malformed"},
		{"icmp header truncated", icmpShort, "malformed"},
		{"udp length beyond packet", udpBadLen, "malformed"},
		{"udp length below header", udpShortLen, "malformed"},
		{"gre", gre, "unsupported-protocol"},
		{"loopback destination", buildUDP(pod, netip.MustParseAddrPort("127.0.0.1:53"), nil), "bad-destination"},
		{"multicast destination", buildUDP(pod, netip.MustParseAddrPort("224.0.0.251:5353"), nil), "bad-destination"},
		{"broadcast destination", buildUDP(pod, netip.MustParseAddrPort("255.255.255.255:67"), nil), "bad-destination"},
		{"zero destination", buildTCP(pod, netip.MustParseAddrPort("0.0.0.0:80"), packet.TCPFlagSYN, 1), "bad-destination"},
		{"icmp timestamp", timestamp, "unsupported-icmp"},
		{"icmp error from pod", icmpErr, "unsupported-icmp"},
		{"udp fragment", frag, "fragment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := n.Stats().Drops[tt.reason]
			n.Handle(tt.pkt, 0)
			if got := n.Stats().Drops[tt.reason]; got != before+1 {
				t.Errorf("%s = %d, want %d", tt.reason, got, before+1)
			}
		})
	}
	if s := n.Stats(); s.Entries != 0 {
		t.Errorf("malformed packets created flows: %+v", n.Entries())
	}
}

// FuzzHandle feeds arbitrary bytes (seeded with well-formed packets) to a
// NAT whose node namespace has nothing but lo, with 10.252.0.2 on it:
// nothing leaves the test, yet packets to 10.252.0.2 get answers (echo
// replies, refusals, port unreachables) and everything else fails to
// route. Every delivered packet must be valid IPv4 with correct checksums.
func FuzzHandle(f *testing.F) {
	pod := netip.AddrPortFrom(podAddr, 1234)
	lo := netip.AddrPortFrom(remoteAddr, 9)
	for _, seed := range [][]byte{
		buildUDP(pod, lo, []byte("hello")),
		buildUDP(pod, netip.AddrPortFrom(noRoute, 53), nil),
		buildEcho(podAddr, lo.Addr(), packet.ICMPEcho, 7, 1, []byte("ping")),
		buildEcho(podAddr, noRoute, packet.ICMPEcho, 7, 1, nil),
		buildTCP(pod, lo, packet.TCPFlagSYN, 1000),
		buildTCP(pod, netip.AddrPortFrom(noRoute, 80), packet.TCPFlagSYN, 1),
		buildTCP(pod, lo, packet.TCPFlagACK|packet.TCPFlagRST, 5),
		buildIPv4(47, podAddr, remoteAddr, []byte{1, 2, 3, 4}),
		buildUDP(pod, netip.MustParseAddrPort("127.0.0.1:53"), nil),
		{0x45, 0, 0, 20},
	} {
		f.Add(seed)
	}
	nsPath := fuzzNetns(f)
	d := &deliverCheck{t: f}
	n, err := New(Config{Netns: nsPath, Deliver: d.deliver, MaxEntries: 64, UDP: time.Second, ICMP: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	f.Cleanup(func() { n.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		n.Handle(b, 0)
		if bad := d.bad.Load(); bad != 0 {
			t.Fatalf("%d invalid packets delivered", bad)
		}
		if s := n.Stats(); s.Entries > 64 {
			t.Fatalf("table grew to %d entries", s.Entries)
		}
	})
}

// fuzzNetns is a namespace with only lo up, holding 10.252.0.2, for
// FuzzHandle.
func fuzzNetns(f *testing.F) string {
	name := nettest.UniqueName("natfz")
	path := nettest.Netns(f, name)
	run(f, "-n", name, "addr", "add", "10.252.0.2/32", "dev", "lo")
	return path
}

// TestMaxDialsPerPod: a pod whose dials wait on a remote that does not
// answer may hold MaxDialsPerPod of them; its next request is ignored and
// counted, while another pod still connects.
func TestMaxDialsPerPod(t *testing.T) {
	const max = 3
	tcpPaths(t, Config{MaxDialsPerPod: max}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		// R drops SYNs to port 8999: each dial waits for dialTimeout, far
		// longer than the test.
		nft := exec.Command("nsenter", "--net="+tp.r, "nft", "-f", "-")
		nft.Stdin = strings.NewReader("table inet drop8999 {\n chain in {\n  type filter hook input priority 0;\n  tcp dport 8999 drop\n }\n}\n")
		if out, err := nft.CombinedOutput(); err != nil {
			t.Fatalf("nft in R: %v\n%s", err, out)
		}
		silent := netip.AddrPortFrom(remoteAddr, 8999)
		other := netip.MustParseAddr("192.168.1.3")
		for i := range max {
			n.Handle(buildTCP(netip.AddrPortFrom(other, uint16(20000+i)), silent, packet.TCPFlagSYN, 1000), 0)
		}
		if !waitFor(5*time.Second, func() bool { return n.Stats().ConnsTotal == max }) {
			t.Fatalf("%d connection requests under way, want %d", n.Stats().ConnsTotal, max)
		}
		n.Handle(buildTCP(netip.AddrPortFrom(other, 20100), silent, packet.TCPFlagSYN, 1000), 0)
		if !waitFor(5*time.Second, func() bool { return n.Stats().Drops[DropDialsPending.String()] == 1 }) {
			t.Fatalf("drops %v, want one %s", n.Stats().Drops, DropDialsPending)
		}
		// Another pod is not held up by them.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 9))
		if err != nil {
			t.Fatalf("the other pod's dial: %v (drops %v)", err, n.Stats().Drops)
		}
		c.Close()
		if got := n.Stats().Drops[DropDialsPending.String()]; got != 1 {
			t.Fatalf("%s counted %d times, want 1", DropDialsPending, got)
		}
	})
}

// TestFullTableEvictsClosed: in a table full of closed TCP flows (a pod
// that opened and closed connections fast), a new flow takes the place of
// one of them instead of being refused; live flows are never evicted.
func TestFullTableEvictsClosed(t *testing.T) {
	const max = 4
	tcpPaths(t, Config{MaxEntries: max}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		echo := netip.AddrPortFrom(remoteAddr, 9)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := range max {
			c, err := pod.dial(ctx, echo)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			c.Close()
		}
		if !waitFor(5*time.Second, func() bool {
			closed := 0
			for _, e := range n.Entries() {
				if e.State == "closed" {
					closed++
				}
			}
			return closed == max
		}) {
			t.Fatalf("entries %+v, want %d closed", n.Entries(), max)
		}
		// A new UDP flow and a new TCP connection both get in.
		u := pod.dialUDP(t, netip.AddrPortFrom(remoteAddr, 7))
		u.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := u.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if nr, err := u.Read(buf); err != nil || string(buf[:nr]) != "hi" {
			t.Fatalf("UDP echo through a table full of closed flows: %q %v", buf[:nr], err)
		}
		c, err := pod.dial(ctx, echo)
		if err != nil {
			t.Fatalf("TCP dial through a table full of closed flows: %v", err)
		}
		defer c.Close()
		s := n.Stats()
		if s.Entries != max || s.Drops["table-full"] != 0 {
			t.Fatalf("stats %+v: want %d entries and nothing refused", s, max)
		}
		// Now two live flows and two closed ones: two more get in, the third
		// is refused.
		for i := range 2 {
			n.Handle(buildUDP(netip.AddrPortFrom(podAddr, uint16(10000+i)), netip.AddrPortFrom(remoteAddr, 7), []byte("x")), 0)
		}
		n.Handle(buildUDP(netip.AddrPortFrom(podAddr, 10009), netip.AddrPortFrom(remoteAddr, 7), []byte("x")), 0)
		if s := n.Stats(); s.Drops["table-full"] != 1 || s.Entries != max {
			t.Fatalf("stats %+v: want the table full of live flows and one refused", s)
		}
	})
}
