package nat

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"podnet/encap"
	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
)

// rewriteTCP keeps a complete checksum valid, and a partial one the
// pseudo-header sum of the new addresses, both ways; it changes nothing
// else.
func TestRewriteTCP(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		var a, b [4]byte
		binary.BigEndian.PutUint32(a[:], rng.Uint32())
		binary.BigEndian.PutUint32(b[:], rng.Uint32())
		pod := netip.AddrPortFrom(netip.AddrFrom4(a), uint16(rng.Uint32()))
		remote := netip.AddrPortFrom(netip.AddrFrom4(b), uint16(rng.Uint32()))
		payload := make([]byte, rng.IntN(200))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		pkt := buildTCP(pod, remote, packet.TCPFlagACK, rng.Uint32())
		pkt = append(pkt, payload...)
		ip := packet.IPv4(pkt)
		ip.SetTotalLen(uint16(len(pkt)))
		ip.ComputeChecksum()
		tcp := packet.TCP(ip.Payload())
		tcp.SetChecksum(0)
		tcp.SetChecksum(packet.Checksum(tcp, packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp)))))

		var node [4]byte
		binary.BigEndian.PutUint32(node[:], rng.Uint32())
		port := uint16(rng.Uint32())
		partial := i%2 == 1
		if partial {
			tcp.SetChecksum(packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp)))))
		}
		rewriteTCP(ip, partial, true, node, port)
		check := func(dir string, src, dst netip.AddrPort) {
			t.Helper()
			if ip.Src() != src.Addr() || ip.Dst() != dst.Addr() || tcp.SrcPort() != src.Port() || tcp.DstPort() != dst.Port() {
				t.Fatalf("%s: %v:%d -> %v:%d, want %v -> %v", dir, ip.Src(), tcp.SrcPort(), ip.Dst(), tcp.DstPort(), src, dst)
			}
			if packet.Checksum(ip[:ip.HeaderLen()], 0) != 0 {
				t.Fatalf("%s: IPv4 header checksum wrong", dir)
			}
			if partial {
				want := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp))))
				if tcp.Checksum() != want {
					t.Fatalf("%s: partial checksum %#x, want the pseudo-header sum %#x", dir, tcp.Checksum(), want)
				}
			} else if !packet.TransportChecksumValid(ip) {
				t.Fatalf("%s: TCP checksum wrong", dir)
			}
			if string(ip.Payload()[packet.TCPMinHeaderLen:]) != string(payload) {
				t.Fatalf("%s: payload changed", dir)
			}
		}
		nodeAP := netip.AddrPortFrom(netip.AddrFrom4(node), port)
		check("out", nodeAP, remote)
		// The reply: the remote's packet to the node, back to the pod.
		copy(ip[12:16], b[:])
		copy(ip[16:20], node[:])
		tcp.SetSrcPort(remote.Port())
		tcp.SetDstPort(port)
		ip.ComputeChecksum()
		tcp.SetChecksum(0)
		if partial {
			tcp.SetChecksum(packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp)))))
		} else {
			tcp.SetChecksum(packet.Checksum(tcp, packet.PseudoHeaderSum(packet.ProtoTCP, ip.SrcBytes(), ip.DstBytes(), uint16(len(tcp)))))
		}
		rewriteTCP(ip, partial, false, pod.Addr().As4(), pod.Port())
		check("back", remote, pod)
	}
}

// Where there are no tcx links, openSteer replaces a filter a daemon
// that did not stop cleanly left on the underlay, and close removes the
// filter and the qdisc it added.
func TestSteerFilterAttachAndCleanup(t *testing.T) {
	name := nettest.UniqueName("nats")
	ns := nettest.Netns(t, name)
	run(t, "-n", name, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
	filters := func() (ours []*netlink.BpfFilter, qdisc bool) {
		err := netnsutil.Do(ns, func() error {
			l, err := netlink.LinkByName("ul0")
			if err != nil {
				return err
			}
			fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
			for _, f := range fs {
				if b, ok := f.(*netlink.BpfFilter); ok && b.Name == steerName {
					ours = append(ours, b)
				}
			}
			qs, _ := netlink.QdiscList(l)
			for _, q := range qs {
				qdisc = qdisc || q.Type() == "clsact"
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return ours, qdisc
	}
	open := func() *steer {
		var s *steer
		err := netnsutil.Do(ns, func() (err error) {
			s, err = openSteerWith("ul0", [4]byte{10, 9, 0, 1}, 1, false)
			return err
		})
		if err != nil {
			t.Fatalf("openSteer: %v", err)
		}
		return s
	}
	stale := open() // stands for the crashed daemon's: never closed before the next opens
	s := open()
	ours, qdisc := filters()
	info, _ := s.prog.Info()
	id, _ := info.ID()
	if len(ours) != 1 || ours[0].Id != int(id) || !qdisc {
		t.Fatalf("after a second openSteer: filters %+v (want one, program %d), clsact %v", ours, id, qdisc)
	}
	if err := s.check(); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := stale.check(); err == nil {
		t.Errorf("check of the replaced program found it attached")
	}
	if err := s.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if ours, _ := filters(); len(ours) != 0 {
		t.Errorf("filters left after close: %+v", ours)
	}
	if err := stale.close(); err != nil {
		t.Errorf("close of the first: %v", err)
	}
	if ours, qdisc := filters(); len(ours) != 0 || qdisc {
		t.Errorf("after both closed: filters %+v, clsact %v; want none", ours, qdisc)
	}
}

// tcxPrograms lists the programs attached to ul0's tcx ingress in ns.
func tcxPrograms(t *testing.T, ns string) []link.AttachedProgram {
	t.Helper()
	var progs []link.AttachedProgram
	err := netnsutil.Do(ns, func() error {
		l, err := netlink.LinkByName("ul0")
		if err != nil {
			return err
		}
		r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		progs = r.Programs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return progs
}

// openSteer attaches with a tcx link; check sees it detached; close
// leaves nothing attached.
func TestSteerTCX(t *testing.T) {
	name := nettest.UniqueName("natx")
	ns := nettest.Netns(t, name)
	run(t, "-n", name, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
	var s *steer
	err := netnsutil.Do(ns, func() (err error) {
		s, err = openSteer("ul0", [4]byte{10, 9, 0, 1}, 1)
		return err
	})
	if err != nil {
		t.Fatalf("openSteer: %v", err)
	}
	if s.tcx == nil {
		s.close()
		t.Fatalf("openSteer fell back to a tc filter on Linux with tcx")
	}
	info, _ := s.prog.Info()
	id, _ := info.ID()
	if progs := tcxPrograms(t, ns); len(progs) != 1 || progs[0].ID != id {
		t.Errorf("tcx ingress programs %+v, want only %d", progs, id)
	}
	if err := s.check(); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := s.tcx.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if err := s.check(); err == nil {
		t.Errorf("check found a detached link attached")
	}
	if err := s.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if progs := tcxPrograms(t, ns); len(progs) != 0 {
		t.Errorf("tcx ingress programs after close: %+v", progs)
	}
}

// A daemon killed with its packet path open leaves nothing on the
// underlay: the kernel removes the tcx link with the process's last
// descriptor of it. The test runs itself as that daemon.
func TestSteerGoesWithProcess(t *testing.T) {
	if ns := os.Getenv("PODNET_STEER_HELPER"); ns != "" {
		err := netnsutil.Do(ns, func() error {
			_, err := openSteer("ul0", [4]byte{10, 9, 0, 1}, 1)
			return err
		})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("attached")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	name := nettest.UniqueName("natk")
	ns := nettest.Netns(t, name)
	run(t, "-n", name, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSteerGoesWithProcess$")
	cmd.Env = append(os.Environ(), "PODNET_STEER_HELPER="+ns)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "attached\n" {
		t.Fatalf("helper: %q", line)
	}
	if progs := tcxPrograms(t, ns); len(progs) != 1 {
		t.Fatalf("tcx ingress programs while the helper runs: %+v, want one", progs)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed = true
	// The kernel frees the link once the dead process's files are.
	var progs []link.AttachedProgram
	if !waitFor(5*time.Second, func() bool { progs = tcxPrograms(t, ns); return len(progs) == 0 }) {
		t.Fatalf("tcx ingress programs after the helper was killed: %+v", progs)
	}
}

// An ICMP error about a connection on the packet path reaches the pod
// with its quote rewritten to the pod's own packet: R answers SYNs to
// port 83 with host unreachable, and the pod's dial fails at once. The
// port range makes the node's port another than the pod's, so a quote
// left as it was would name no connection of the pod's.
func TestPacketPathICMPError(t *testing.T) {
	tp := newTopo(t)
	nft := exec.Command("nsenter", "--net="+tp.r, "nft", "-f", "-")
	nft.Stdin = strings.NewReader("table inet reject83 {\n chain in {\n  type filter hook input priority 0;\n  tcp dport 83 reject with icmp type host-unreachable\n }\n}\n")
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft in R: %v\n%s", err, out)
	}
	n, d := newNAT(t, tp, Config{Underlay: "vn0", PortMin: 40000, PortMax: 40009})
	pod := newPodStack(t, n, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 83))
	if err == nil {
		c.Close()
		t.Fatal("dial :83 succeeded")
	}
	if !strings.Contains(err.Error(), "no route to host") || time.Since(start) > 5*time.Second {
		t.Errorf("dial :83: %v after %v, want no route to host at once", err, time.Since(start))
	}
	if d.unreach.Load() == 0 {
		t.Errorf("no ICMP destination unreachable delivered")
	}
	wantPath(t, n, true, 1)
}

// echoConn opens a connection from a pod stack to R's echo server
// through a NAT with the packet path, and returns it with its entry.
func echoConn(t *testing.T) (*topo, *NAT, *deliverCheck, *gonet.TCPConn, Entry) {
	t.Helper()
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{Underlay: "vn0"})
	pod := newPodStack(t, n, d)
	echo := netip.AddrPortFrom(remoteAddr, 9)
	c, err := pod.dial(context.Background(), echo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, ok := findEntry(n, "tcp", echo)
	if !ok {
		t.Fatalf("no entry: %+v", n.Entries())
	}
	return tp, n, d, c, e
}

// sendFromR sends IPv4 packets, headers and all, from R to addr through
// a raw socket, as anyone on the underlay could.
func sendFromR(t *testing.T, tp *topo, addr netip.Addr, pkts ...[]byte) {
	t.Helper()
	err := netnsutil.Do(tp.r, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, pkt := range pkts {
			if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A packet to a NAT port from anyone but the connection's remote goes
// nowhere: it is counted as no-flow and the pod never sees it.
func TestPacketPathStranger(t *testing.T) {
	tp, n, d, c, e := echoConn(t)
	before := d.count.Load()
	// From R, to the connection's node port, from another port of R.
	sendFromR(t, tp, e.Node.Addr(), buildTCP(netip.AddrPortFrom(remoteAddr, 4444), e.Node, packet.TCPFlagACK, 1))
	if !waitFor(5*time.Second, func() bool { return n.Stats().Drops[DropNoFlow.String()] == 1 }) {
		t.Fatalf("drops %v, want one %s", n.Stats().Drops, DropNoFlow)
	}
	if got := d.count.Load(); got != before {
		t.Errorf("%d packets delivered to the pod meanwhile", got-before)
	}
	// The connection itself is untouched.
	if _, err := c.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("echo after the stranger's packet: %q, %v", buf, err)
	}
}

// With its tc program detached the packet path cannot get replies: NAT notices
// within a reaper tick or two, says so in Stats, and takes new connections
// through the netstack.
func TestPacketPathFallsBack(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{Underlay: "vn0"})
	pod := newPodStack(t, n, d)
	if s := n.Stats(); s.TCPPath != "packet" {
		t.Fatalf("TCPPath %q, want packet", s.TCPPath)
	}
	// As an administrator's bpftool link detach would.
	if err := n.fast.steer.tcx.Detach(); err != nil {
		t.Fatalf("detach the tcx link: %v", err)
	}
	if !waitFor(5*time.Second, func() bool { return strings.HasPrefix(n.Stats().TCPPath, "netstack: ") }) {
		t.Fatalf("TCPPath %q after the filter went", n.Stats().TCPPath)
	}
	t.Logf("TCPPath: %s", n.Stats().TCPPath)
	resp, err := pod.httpClient().Get("http://10.252.0.2/")
	if err != nil {
		t.Fatalf("GET after the fallback: %v", err)
	}
	resp.Body.Close()
	wantPath(t, n, false, 1)
}

// FuzzPacketPathReply: whatever reaches the packet path's TAP from the
// underlay (anyone can send to the node's address; the tc program lets
// through what names a NAT port) is dropped and counted, or reaches the
// flow's pod as one valid packet: a TCP segment from the flow's remote
// to the pod's own port, or an ICMP error quoting the pod's own packet.
// The input is what follows the Ethernet header, its checksums made
// valid where its lengths parse (a sender can always do that much); the
// kernel writes the virtio-net header, not the wire, so it is zero.
func FuzzPacketPathReply(f *testing.F) {
	node := nodeAddr
	pod := netip.AddrPortFrom(podAddr, 33000)
	remote := netip.AddrPortFrom(remoteAddr, 443)
	const port = 40000
	nodePort := netip.AddrPortFrom(node, port)
	f.Add(buildTCP(remote, nodePort, packet.TCPFlagSYN|packet.TCPFlagACK, 7))
	f.Add(append(buildTCP(remote, nodePort, packet.TCPFlagACK|packet.TCPFlagPSH, 8), "data"...))
	f.Add(buildTCP(remote, nodePort, packet.TCPFlagRST, 9))
	f.Add(buildTCP(netip.AddrPortFrom(remoteAddr, 444), nodePort, packet.TCPFlagACK, 1))
	quote := buildTCP(nodePort, remote, packet.TCPFlagSYN, 5)
	f.Add(buildIPv4(packet.ProtoICMP, remoteAddr, node, append([]byte{packet.ICMPDestUnreachable, 1, 0, 0, 0, 0, 0, 0}, quote...)))
	f.Add(buildIPv4(packet.ProtoICMP, remoteAddr, node, append([]byte{packet.ICMPTimeExceeded, 0, 0, 0, 0, 0, 0, 0}, quote[:28]...)))
	f.Add(buildIPv4(packet.ProtoICMP, remoteAddr, node, []byte{packet.ICMPEchoReply, 0, 0, 0, 0, 1, 0, 1}))
	f.Add([]byte{0x45, 0, 0, 20})

	// One NAT for every input (its port table is half a megabyte); each
	// input gets a fresh flow, counters and delivery check.
	var d *deliverCheck
	n := &NAT{cfg: Config{Deliver: func(buf []byte, off int, hdr packet.VirtioNetHdr) { d.deliver(buf, off, hdr) }},
		epoch: time.Now(), fast: &packetTCP{src: node.As4(), replyBuf: make([]byte, packet.Headroom+packet.MaxFrameLen)}}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 2000 {
			return
		}
		var got []packet.IPv4
		d = &deliverCheck{t: t}
		fn := func(pkt []byte) { got = append(got, append(packet.IPv4(nil), pkt...)) }
		d.next.Store(&fn)
		for i := range n.c.drops {
			n.c.drops[i].Store(0)
		}
		fl := &flow{key: flowKey{packet.ProtoTCP, pod, remote}, pkt: &packetFlow{port: port}}
		fl.setState(stateSynSent)
		n.fast.byPort[port].Store(fl)

		ip := append([]byte(nil), in...)
		fixChecksums(ip)
		start := packet.Headroom - encap.PlainTapHeadroom
		buf := make([]byte, start+encap.PlainTapHeadroom+len(ip))
		eth := packet.Ethernet(buf[start+packet.VirtioNetHdrLen:])
		eth.SetEtherType(packet.EtherTypeIPv4)
		copy(buf[start+encap.PlainTapHeadroom:], ip)
		n.packetReply(buf, start)

		if d.bad.Load() != 0 {
			t.Fatalf("invalid packet delivered for input % x", in)
		}
		if len(got) > 1 {
			t.Fatalf("%d packets delivered for one", len(got))
		}
		var dropped uint64
		for i := range n.c.drops {
			dropped += n.c.drops[i].Load()
		}
		if len(got)+int(dropped) != 1 {
			t.Fatalf("%d delivered and %d dropped for one input % x", len(got), dropped, in)
		}
		if len(got) == 0 {
			return
		}
		p := got[0]
		if p.Dst() != pod.Addr() {
			t.Fatalf("delivered to %v, want the pod %v", p.Dst(), pod.Addr())
		}
		switch p.Protocol() {
		case packet.ProtoTCP:
			tcp := packet.TCP(p.Payload())
			if p.Src() != remote.Addr() || tcp.SrcPort() != remote.Port() || tcp.DstPort() != pod.Port() {
				t.Fatalf("TCP %v:%d -> :%d delivered, want %v -> %v", p.Src(), tcp.SrcPort(), tcp.DstPort(), remote, pod)
			}
		case packet.ProtoICMP:
			q := packet.IPv4(p.Payload()[8:])
			if q.Src() != pod.Addr() || q.Dst() != remote.Addr() || packet.TCP(q[q.HeaderLen():]).SrcPort() != pod.Port() {
				t.Fatalf("ICMP error quoting %v -> %v delivered, want the pod's own packet", q.Src(), q.Dst())
			}
		default:
			t.Fatalf("protocol %d delivered", p.Protocol())
		}
	})
}

// fixChecksums makes the IPv4 header checksum of b valid, and the TCP or
// ICMP checksum if the header's lengths hold.
func fixChecksums(b []byte) {
	ip := packet.IPv4(b)
	if len(b) < packet.IPv4MinHeaderLen || ip.HeaderLen() < packet.IPv4MinHeaderLen || ip.HeaderLen() > len(b) {
		return
	}
	ip.ComputeChecksum()
	if ip.Validate() != packet.ParseOK {
		return
	}
	ip = ip[:ip.TotalLen()]
	switch ip.Protocol() {
	case packet.ProtoTCP:
		if len(ip.Payload()) >= packet.TCPMinHeaderLen {
			packet.TCP(ip.Payload()).SetChecksum(packet.TransportChecksum(ip))
		}
	case packet.ProtoICMP:
		if len(ip.Payload()) >= packet.ICMPHeaderLen {
			packet.ICMP(ip.Payload()).SetChecksum(packet.TransportChecksum(ip))
		}
	}
}

// Which port a connection on the packet path gets: the pod's own where
// it is inside the node's ephemeral range and free (as MASQUERADE keeps
// it), else one the kernel picks from that range; never a port below it,
// where the node's services listen, and never port 0.
func TestPacketPathPorts(t *testing.T) {
	tp := newTopo(t)
	n, _ := newNAT(t, tp, Config{Underlay: "vn0"})
	lo, hi := n.fast.ephLo, n.fast.ephHi
	web := netip.AddrPortFrom(remoteAddr, 80)
	echo := netip.AddrPortFrom(remoteAddr, 9)
	inRange := lo + 7
	for _, c := range []struct {
		pod      uint16
		remote   netip.AddrPort
		identity bool
	}{
		{inRange, web, true},
		{inRange, echo, false}, // the node holds inRange already
		{179, web, false},
		{0, web, false},
		{0, echo, false},
	} {
		n.Handle(buildTCP(netip.AddrPortFrom(podAddr, c.pod), c.remote, packet.TCPFlagSYN, 1000), 0)
	}
	seen := map[uint16]bool{}
	es := n.Entries()
	if len(es) != 5 {
		t.Fatalf("entries %+v, want 5", es)
	}
	for _, e := range es {
		p := e.Node.Port()
		if seen[p] {
			t.Errorf("node port %d given twice: %+v", p, es)
		}
		seen[p] = true
		if e.Pod.Port() == inRange && p == inRange {
			continue // the one that kept its port
		}
		if p < lo || p > hi || p == e.Pod.Port() {
			t.Errorf("entry %+v: want a port of %d-%d other than the pod's", e, lo, hi)
		}
	}
	if !seen[inRange] {
		t.Errorf("no connection kept the pod's port %d: %+v", inRange, es)
	}
}

// A RST or FIN that anyone could send with the remote's address, not
// the sequence number the pod expects, neither ends the connection's row
// nor lets go of its port: the pod's TCP ignores it (or answers with a
// challenge ACK), and so must NAT.
func TestPacketPathBlindRSTAndFIN(t *testing.T) {
	tp, n, _, c, e := echoConn(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip := func(what string) {
		t.Helper()
		if _, err := c.Write([]byte(what)); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		buf := make([]byte, len(what))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != what {
			t.Fatalf("%s: echo %q, %v", what, buf, err)
		}
	}
	roundTrip("before")
	// From R, as the remote, with sequence numbers nobody told it.
	var pkts [][]byte
	for _, flags := range []uint8{packet.TCPFlagRST, packet.TCPFlagRST | packet.TCPFlagACK, packet.TCPFlagFIN | packet.TCPFlagACK} {
		pkts = append(pkts, buildTCP(e.Remote, e.Node, flags, 0x12345678))
	}
	sendFromR(t, tp, e.Node.Addr(), pkts...)
	// The echo comes back through the TAP after them, so once it is
	// here NAT has seen them; closing the row would have happened then.
	roundTrip("after")
	if e, _ := findEntry(n, "tcp", e.Remote); e.State != "established" {
		t.Errorf("entry after the blind RST and FIN: %+v, want established", e)
	}
}

// Past its share of the node's ports, a pod's new connections go through
// the netstack, whose sockets share ports among remotes, not refused.
// Port 81 of R refuses them, which ends each quickly either way.
func TestPacketPathPortShare(t *testing.T) {
	tp := newTopo(t)
	n, _ := newNAT(t, tp, Config{Underlay: "vn0"})
	n.fast.maxHeldPerPod = 2
	closed := netip.AddrPortFrom(remoteAddr, 81)
	for i := range 3 {
		n.Handle(buildTCP(netip.AddrPortFrom(podAddr, uint16(20000+i)), closed, packet.TCPFlagSYN, 1000), 0)
	}
	other := netip.MustParseAddr("192.168.1.3")
	n.Handle(buildTCP(netip.AddrPortFrom(other, 20000), closed, packet.TCPFlagSYN, 1000), 0)
	if !waitFor(5*time.Second, func() bool { return n.Stats().Drops["dial-refused"] == 1 }) {
		t.Fatalf("stats %+v, want the first pod's third connection refused through the netstack", n.Stats())
	}
	if s := n.Stats(); s.PacketConnsTotal != 3 {
		t.Errorf("%d connections on the packet path, want 3 (two of the first pod's, the other pod's)", s.PacketConnsTotal)
	}
}

// Frames that reach the packet path's TAP while its queue is full never
// reach NAT; Stats counts them as queue-full, exactly the kernel's count,
// so that every frame is accounted for once.
func TestPacketPathQueueFull(t *testing.T) {
	const burst = 5000
	tp := newTopo(t)
	n, _ := newNAT(t, tp, Config{Underlay: "vn0"})
	ns := tp.n[len("/run/netns/"):]
	run(t, "-n", ns, "link", "set", PlainTapName, "txqueuelen", "1")
	before := nettest.TxDropped(t, ns, PlainTapName)
	base := n.Stats().Drops
	// Not IPv4, so NAT drops what it reads as malformed; the kernel
	// sends them far faster than NAT reads them one at a time.
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	frame[12], frame[13] = 0x88, 0xb5
	nettest.SendFrames(t, tp.n, PlainTapName, frame, burst)
	var read, full uint64
	if !waitFor(5*time.Second, func() bool {
		d := n.Stats().Drops
		read, full = d[DropMalformed.String()]-base[DropMalformed.String()], d[DropQueueFull.String()]-base[DropQueueFull.String()]
		return read+full == burst
	}) {
		t.Fatalf("of %d frames NAT read %d and counted %d as queue-full", burst, read, full)
	}
	kernel := nettest.TxDropped(t, ns, PlainTapName) - before
	t.Logf("of %d frames NAT read %d, the kernel dropped %d", burst, read, kernel)
	if kernel == 0 {
		t.Fatalf("the kernel dropped nothing from a queue of one frame: the test shows nothing")
	}
	if full != kernel {
		t.Errorf("queue-full %d, want the kernel's %d", full, kernel)
	}
}
