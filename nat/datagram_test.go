package nat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
	"podnet/internal/udpoffload"
)

func TestUDPEcho(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{UDP: time.Second, UDPAssured: 2 * time.Second})
	pod := newPodStack(t, n, d)
	echo := netip.AddrPortFrom(remoteAddr, 7)
	c := pod.dialUDP(t, echo)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i, msg := range []string{"ping", "pong", strings.Repeat("x", 1400)} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		buf := make([]byte, 2000)
		nr, err := c.Read(buf)
		if err != nil || string(buf[:nr]) != msg {
			t.Fatalf("echo %d: got %q, %v; want %q", i, buf[:nr], err, msg)
		}
	}
	e, ok := findEntry(n, "udp", echo)
	if !ok {
		t.Fatalf("no udp entry in %+v", n.Entries())
	}
	if e.State != "assured" || e.Node.Addr() != nodeAddr || e.BytesOut != 1408 || e.BytesIn != 1408 {
		t.Errorf("entry %+v: want assured, node %v, 1408 bytes each way", e, nodeAddr)
	}
	// Assured flows live UDPAssured (2s) after the last packet.
	if !waitFor(6*time.Second, func() bool { _, ok := findEntry(n, "udp", echo); return !ok }) {
		t.Errorf("udp entry did not expire: %+v", n.Entries())
	}
	// The reaper takes expired flows out of the table first and closes
	// them (releasing their ports) after it lets go of the table, so the
	// port may still be held for an instant after the entry is gone.
	if !waitFor(time.Second, func() bool { s := n.Stats(); return s.PortsInUse == 0 && s.Entries == 0 }) {
		t.Errorf("after expiry: %+v", n.Stats())
	}
}

func TestUDPPortUnreachable(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{})
	pod := newPodStack(t, n, d)
	c := pod.dialUDP(t, netip.AddrPortFrom(remoteAddr, 81))
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatalf("write: %v", err)
	}
	// gonet's Read waits for readable events only, not for the error
	// event an ICMP error raises, so let the error arrive first.
	if !waitFor(10*time.Second, func() bool { return d.unreach.Load() > 0 }) {
		t.Fatal("no ICMP port unreachable delivered")
	}
	_, err := c.Read(make([]byte, 100))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("read after sending to a closed port: %v, want connection refused", err)
	}
}

// TestUDPPortUnreachableICMP checks the ICMP error itself: its source is
// the remote, and it quotes the datagram as the pod sent it.
func TestUDPPortUnreachableICMP(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{})
	ch := capture(d)
	src := netip.AddrPortFrom(podAddr, 5555)
	dst := netip.AddrPortFrom(remoteAddr, 81)
	n.Handle(buildUDP(src, dst, []byte("hello?")), 0)
	ip := expectPacket(t, ch, "ICMP port unreachable", func(ip packet.IPv4) bool { return ip.Protocol() == packet.ProtoICMP })
	m := packet.ICMP(ip.Payload())
	if m.Type() != packet.ICMPDestUnreachable || m.Code() != packet.ICMPPortUnreachable {
		t.Fatalf("ICMP type %d code %d, want 3/3", m.Type(), m.Code())
	}
	if ip.Src() != remoteAddr || ip.Dst() != podAddr {
		t.Errorf("ICMP %v -> %v, want %v -> %v", ip.Src(), ip.Dst(), remoteAddr, podAddr)
	}
	q := packet.IPv4(m[packet.ICMPHeaderLen:])
	if q.Validate() != packet.ParseOK || q.Src() != podAddr || q.Dst() != remoteAddr {
		t.Fatalf("quoted header %x", []byte(q))
	}
	u := packet.UDP(q.Payload())
	if u.SrcPort() != 5555 || u.DstPort() != 81 || !bytes.Equal(u[8:], []byte("hello?")) {
		t.Errorf("quoted udp %x", []byte(u))
	}
}

func TestICMPEcho(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{ICMP: time.Second})
	ch := capture(d)
	payload := []byte("podnet ping payload 0123456789")
	const id, seq = 0x1234, 7
	n.Handle(buildEcho(podAddr, remoteAddr, packet.ICMPEcho, id, seq, payload), 0)
	ip := expectPacket(t, ch, "echo reply", func(ip packet.IPv4) bool { return ip.Protocol() == packet.ProtoICMP })
	m := packet.ICMP(ip.Payload())
	if m.Type() != packet.ICMPEchoReply || m.Code() != 0 {
		t.Fatalf("got ICMP %d/%d, want echo reply", m.Type(), m.Code())
	}
	if ip.Src() != remoteAddr || ip.Dst() != podAddr {
		t.Errorf("reply %v -> %v, want %v -> %v", ip.Src(), ip.Dst(), remoteAddr, podAddr)
	}
	if gotID, gotSeq := binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:]); gotID != id || gotSeq != seq {
		t.Errorf("id/seq %#x/%d, want %#x/%d", gotID, gotSeq, id, seq)
	}
	if !bytes.Equal(m[8:], payload) {
		t.Errorf("payload %q, want %q", m[8:], payload)
	}
	e, ok := findEntry(n, "icmp", netip.AddrPortFrom(remoteAddr, 0))
	if !ok || e.Pod != netip.AddrPortFrom(podAddr, id) || e.Node.Addr() != nodeAddr {
		t.Errorf("entry %+v (found %v)", e, ok)
	}
	// A second request reuses the flow.
	n.Handle(buildEcho(podAddr, remoteAddr, packet.ICMPEcho, id, seq+1, payload), 0)
	ip = expectPacket(t, ch, "second echo reply", func(ip packet.IPv4) bool { return ip.Protocol() == packet.ProtoICMP })
	if s := binary.BigEndian.Uint16(ip.Payload()[6:]); s != seq+1 {
		t.Errorf("second reply seq %d", s)
	}
	if s := n.Stats(); s.ConnsTotal != 1 || s.ByProto["icmp"] != 1 {
		t.Errorf("stats %+v: want one icmp flow", s)
	}
	if !waitFor(5*time.Second, func() bool { return n.Stats().Entries == 0 }) {
		t.Errorf("icmp flow did not expire: %+v", n.Entries())
	}
}

// TestHostUnreachableDatagrams: a datagram and an echo request to an
// address on the link that nobody answers ARP for come back as ICMP host
// unreachable from the node, each quoting what the pod sent (its port,
// its echo identifier), not what the host socket sent.
func TestHostUnreachableDatagrams(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for ARP to fail (~3s)")
	}
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{})
	ch := capture(d)
	dead := netip.MustParseAddr("10.252.0.99")
	n.Handle(buildUDP(netip.AddrPortFrom(podAddr, 4444), netip.AddrPortFrom(dead, 53), []byte("q")), 0)
	n.Handle(buildEcho(podAddr, dead, packet.ICMPEcho, 0x4242, 1, []byte("ping")), 0)
	seen := map[uint8]bool{}
	for len(seen) < 2 {
		ip := expectPacket(t, ch, "ICMP host unreachable", func(ip packet.IPv4) bool { return ip.Protocol() == packet.ProtoICMP })
		m := packet.ICMP(ip.Payload())
		if m.Type() != packet.ICMPDestUnreachable || m.Code() != packet.ICMPHostUnreachable {
			t.Fatalf("ICMP %d/%d, want host unreachable", m.Type(), m.Code())
		}
		if ip.Src() != nodeAddr || ip.Dst() != podAddr {
			t.Errorf("error %v -> %v, want %v -> %v", ip.Src(), ip.Dst(), nodeAddr, podAddr)
		}
		q := packet.IPv4(m[packet.ICMPHeaderLen:])
		if q.Validate() != packet.ParseOK || q.Src() != podAddr || q.Dst() != dead {
			t.Fatalf("quoted header %x", []byte(q))
		}
		l4 := q.Payload()
		switch q.Protocol() {
		case packet.ProtoUDP:
			if u := packet.UDP(l4); u.SrcPort() != 4444 || u.DstPort() != 53 {
				t.Errorf("quoted udp ports %d -> %d", u.SrcPort(), u.DstPort())
			}
		case packet.ProtoICMP:
			if id := binary.BigEndian.Uint16(l4[4:]); id != 0x4242 || l4[0] != packet.ICMPEcho {
				t.Errorf("quoted echo type %d id %#x, want the pod's %#x", l4[0], id, 0x4242)
			}
			if packet.Checksum(l4, 0) != 0 {
				t.Errorf("quoted echo checksum does not match the rewritten identifier")
			}
		}
		seen[q.Protocol()] = true
	}
}

// TestUDPAssuredOnlyAfterReply: one datagram and its reply leave a flow
// "replied" (the short UDP timeout), however fast the reply comes; only
// the pod's next datagram makes it "assured". The echo answers on
// loopback-fast paths, so the reply often lands while the first
// datagram's Handle is still returning: a flow promoted after sending
// would be promoted by its own first datagram. Many flows make that
// window show.
func TestUDPAssuredOnlyAfterReply(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{UDP: time.Hour, UDPAssured: time.Hour})
	ch := capture(d)
	echo := netip.AddrPortFrom(remoteAddr, 7)
	const flows = 200
	state := func(src netip.AddrPort) string {
		for _, e := range n.Entries() {
			if e.Proto == "udp" && e.Pod == src {
				return e.State
			}
		}
		return "(none)"
	}
	isReplyTo := func(src netip.AddrPort) func(packet.IPv4) bool {
		return func(ip packet.IPv4) bool {
			return ip.Protocol() == packet.ProtoUDP && packet.UDP(ip.Payload()).DstPort() == src.Port()
		}
	}
	for i := range flows {
		src := netip.AddrPortFrom(podAddr, uint16(20000+i))
		n.Handle(buildUDP(src, echo, []byte("one")), 0)
		expectPacket(t, ch, "echo reply", isReplyTo(src))
		if got := state(src); got != "replied" {
			t.Fatalf("flow %d after one datagram and its reply: state %q, want replied", i, got)
		}
	}
	src := netip.AddrPortFrom(podAddr, 20000)
	n.Handle(buildUDP(src, echo, []byte("two")), 0)
	expectPacket(t, ch, "second echo reply", isReplyTo(src))
	if got := state(src); got != "assured" {
		t.Errorf("after the pod spoke again: state %q, want assured", got)
	}
}

// A UDP superframe (a burst of one flow's datagrams that the switch
// merged) leaves as the datagrams the pod sent: same boundaries, same
// bytes, in order. Where the kernel refuses to segment (a segment bigger
// than the path MTU), the flow falls back to one send per datagram.
func TestUDPSuperframe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mtu     int // of N's link to R; 0: leave it
		gsoSize int
		sizes   []int
		noGSO   bool // the flow must have fallen back
	}{
		{name: "one send", gsoSize: 100, sizes: []int{100, 100, 100, 100, 37}},
		{name: "equal sizes", gsoSize: 64, sizes: []int{64, 64, 64}},
		{name: "segment above path MTU", mtu: 1000, gsoSize: 1200, sizes: []int{1200, 1200, 500}, noGSO: true},
		// A pod's own UDP_SEGMENT send may hold 128 datagrams, more
		// than one send takes on kernels before 6.9: it leaves in parts.
		{name: "more than one send holds", gsoSize: 20, sizes: append(slices.Repeat([]int{20}, 127), 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t)
			if tc.mtu > 0 {
				run(t, "-n", filepath.Base(tp.n), "link", "set", "vn0", "mtu", strconv.Itoa(tc.mtu))
			}
			n, _ := newNAT(t, tp, Config{})
			_, pc := tp.listen(t, "udp4", "10.252.0.2:9100")
			t.Cleanup(func() { pc.Close() })
			dst := netip.AddrPortFrom(remoteAddr, 9100)
			src := netip.AddrPortFrom(podAddr, 4000)

			var payload []byte
			for i, sz := range tc.sizes {
				payload = append(payload, bytes.Repeat([]byte{byte('a' + i)}, sz)...)
			}
			n.Handle(buildUDP(src, dst, payload), tc.gsoSize)

			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 65536)
			for i, sz := range tc.sizes {
				nr, _, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				if want := bytes.Repeat([]byte{byte('a' + i)}, sz); !bytes.Equal(buf[:nr], want) {
					t.Fatalf("datagram %d: %d bytes starting %q, want %d bytes of %q", i, nr, buf[:min(nr, 4)], sz, want[:1])
				}
			}
			pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if nr, _, err := pc.ReadFrom(buf); err == nil {
				t.Fatalf("an extra datagram of %d bytes", nr)
			}
			e, ok := findEntry(n, "udp", dst)
			if !ok || e.BytesOut != uint64(len(payload)) {
				t.Errorf("entry %+v (found %v), want %d bytes out", e, ok, len(payload))
			}
			if got := n.Stats().Drops["send-error"]; got != 0 {
				t.Errorf("send-error = %d", got)
			}
			f := n.table.lookup(flowKey{packet.ProtoUDP, src, dst})
			if f == nil || f.dgram.noGSO.Load() != tc.noGSO {
				t.Errorf("flow fell back to one send per datagram: %v, want %v", f != nil && f.dgram.noGSO.Load(), tc.noGSO)
			}
		})
	}
}

// Replies the kernel reads merged (here the remote sends them with UDP
// GSO; on a real node a NIC's GRO merges them too) reach the pod as one
// UDP superframe, which cut back gives the datagrams as sent.
func TestUDPRepliesCoalesced(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{})
	ch := capture(d)
	_, pc := tp.listen(t, "udp4", "10.252.0.2:9200")
	t.Cleanup(func() { pc.Close() })
	sizes := []int{100, 100, 100, 100, 100, 37}
	var burst []byte
	for i, sz := range sizes {
		burst = append(burst, bytes.Repeat([]byte{byte('A' + i)}, sz)...)
	}
	go func() {
		buf := make([]byte, 2048)
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		ua := from.(*net.UDPAddr)
		to := &unix.SockaddrInet4{Port: ua.Port, Addr: [4]byte(ua.IP.To4())}
		var cmsg udpoffload.SegmentCmsg
		cmsg.Init()
		cmsg.Size = 100
		rc, _ := pc.(*net.UDPConn).SyscallConn()
		rc.Write(func(fd uintptr) bool {
			if err := unix.Sendmsg(int(fd), burst, cmsg.Bytes(), to, 0); err != nil {
				t.Errorf("GSO send from R: %v", err)
			}
			return true
		})
	}()
	src, dst := netip.AddrPortFrom(podAddr, 4000), netip.AddrPortFrom(remoteAddr, 9200)
	n.Handle(buildUDP(src, dst, []byte("go")), 0)
	for i, sz := range sizes {
		ip := expectPacket(t, ch, fmt.Sprintf("reply datagram %d", i), func(ip packet.IPv4) bool { return ip.Protocol() == packet.ProtoUDP })
		u := packet.UDP(ip.Payload())
		if want := bytes.Repeat([]byte{byte('A' + i)}, sz); u.SrcPort() != 9200 || u.DstPort() != 4000 || !bytes.Equal(u[packet.UDPHeaderLen:], want) {
			t.Fatalf("datagram %d: ports %d -> %d, %d bytes starting %q; want 9200 -> 4000, %d bytes of %q",
				i, u.SrcPort(), u.DstPort(), len(u)-packet.UDPHeaderLen, u[packet.UDPHeaderLen:min(len(u), packet.UDPHeaderLen+1)], sz, want[:1])
		}
	}
	if got := d.udpSuperframes.Load(); got != 1 {
		t.Errorf("%d UDP superframes delivered (%d datagrams), want the burst as one", got, d.datagrams.Load())
	}
	if e, ok := findEntry(n, "udp", dst); !ok || e.BytesIn != uint64(len(burst)) {
		t.Errorf("entry %+v (found %v), want %d bytes in", e, ok, len(burst))
	}
}
