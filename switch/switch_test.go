package vswitch

// Tests on real TAPs: an in-process switch whose pod ports are created in
// a node namespace and moved into pod namespaces, as the daemon does.
//
//	<x>a (pod a, 10.99.0.1)   <x>b (pod b, 10.99.0.2)
//	     eth0 (TAP) ╲          ╱ eth0 (TAP)
//	                 this test's Switch   (TAPs made in <x>n, then moved)

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
	"podnet/router"
)

type testPod struct {
	name, ns string
	ip       netip.Addr
	mac      packet.MAC
	port     int
}

type testNet struct {
	s      *Switch
	nodeNS string
	pods   []*testPod
	// host is the host TUN's name once attachHost made it, hostIP the
	// node's address on it.
	host   string
	hostIP netip.Addr
}

func newTestNet(t testing.TB) *testNet { return newTestNetConfig(t, Config{}) }

func newTestNetConfig(t testing.TB, cfg Config) *testNet {
	t.Helper()
	// These tests need real TAPs and namespaces. Without root only the
	// in-memory tests (paths_test.go) run; make test runs as root, so CI
	// always runs these too.
	if os.Geteuid() != 0 {
		t.Skip("needs root for TAP devices and namespaces; the in-memory path tests cover the forwarding logic")
	}
	prefix := nettest.UniqueName("sw")
	tn := &testNet{s: New(cfg), nodeNS: nettest.Netns(t, prefix+"n")}
	t.Cleanup(func() { tn.s.Close() })
	return tn
}

func (tn *testNet) addPod(t testing.TB, name string, ip string, offload bool) *testPod {
	t.Helper()
	p := &testPod{name: name, ns: nettest.Netns(t, nettest.UniqueName("sw"+name)), ip: netip.MustParseAddr(ip)}
	err := netnsutil.Do(tn.nodeNS, func() error {
		dev, mac, err := CreatePodLink(PodLinkConfig{Pod: name + p.ns[len(p.ns)-6:], Netns: p.ns, IP: p.ip, Offload: offload})
		if err != nil {
			return err
		}
		p.mac = mac
		p.port, err = tn.s.AddPodPort(PodPort{Name: name, IP: p.ip, MAC: mac, Dev: dev})
		return err
	})
	if err != nil {
		t.Fatalf("add pod %s: %v", name, err)
	}
	tn.pods = append(tn.pods, p)
	tn.publish(t)
	return p
}

func (tn *testNet) publish(t testing.TB) {
	var routes []router.Route
	for _, p := range tn.pods {
		routes = append(routes, router.Route{Prefix: netip.PrefixFrom(p.ip, 32), Kind: router.KindLocalPod, Port: p.port, Dev: p.name})
	}
	if tn.host != "" {
		routes = append(routes, router.Route{Prefix: netip.PrefixFrom(tn.hostIP, 32), Kind: router.KindHost, Dev: tn.host})
	}
	tab, err := router.NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	tn.s.SetRoutes(tab)
}

// attachHost joins the node namespace to the switch as the daemon does:
// a host TUN with address nodeIP and a route to the pods' 10.99.0.0/24
// through it.
func (tn *testNet) attachHost(t testing.TB, nodeIP string) {
	t.Helper()
	tn.hostIP = netip.MustParseAddr(nodeIP)
	var host HostDevice
	err := netnsutil.Do(tn.nodeNS, func() (err error) {
		if host, err = OpenHostTUN(nettest.UniqueName("pn"), 1500); err != nil {
			return err
		}
		tn.host, _ = host.Name()
		// As the daemon does: the node's IPv6 chatter stays off the port.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+tn.host+"/disable_ipv6", []byte("1"), 0); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"addr", "add", nodeIP + "/32", "dev", tn.host},
			{"link", "set", tn.host, "up"},
			{"route", "add", "10.99.0.0/24", "dev", tn.host, "src", nodeIP},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		return nil
	})
	if err != nil {
		if host != nil {
			host.Close()
		}
		t.Fatal(err)
	}
	if err := tn.s.AttachHost(host); err != nil {
		host.Close()
		t.Fatal(err)
	}
	tn.publish(t)
}

func (tn *testNet) stats(name string) PortStats { return portStats(tn.s, name) }

// TestMixedOffload moves TCP between a pod whose TAP takes TSO superframes
// and one with a plain TAP: superframes from a must be segmented, with
// complete checksums, for b; b's plain frames get a virtio header for a.
func TestMixedOffload(t *testing.T) {
	tn := newTestNet(t)
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", false)
	nettest.Transfer(t, a.ns, b.ns, b.ip, 4<<20)
	nettest.Transfer(t, b.ns, a.ns, a.ip, 4<<20)
	sa, sb := tn.stats("a"), tn.stats("b")
	if sa.GSOFrames == 0 {
		t.Errorf("pod a sent no superframes; the segmentation path was not exercised")
	}
	if len(sa.Drops) != 0 || len(sb.Drops) != 0 {
		t.Errorf("unexpected drops: a %v, b %v", sa.Drops, sb.Drops)
	}
}

// TestOffloadToOffload checks superframes cross TAP to TAP unchanged.
func TestOffloadToOffload(t *testing.T) {
	tn := newTestNet(t)
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", true)
	nettest.Transfer(t, a.ns, b.ns, b.ip, 8<<20)
	if tn.stats("a").GSOFrames == 0 {
		t.Errorf("no superframes from a")
	}
	// The receiver can finish reading before the switch has added the
	// last write to the counters: give it a moment.
	deadline := time.Now().Add(time.Second)
	for tn.stats("b").TxBytes < 8<<20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if tn.stats("b").TxBytes < 8<<20 {
		t.Errorf("b got %d bytes, want ≥ %d", tn.stats("b").TxBytes, 8<<20)
	}
}

// TestReplyPollingTAP: with reply polling on, pod b's ping replies, which
// its kernel makes while the switch's write is in progress, are forwarded
// by a's reader (counted on b as polled), and bulk TCP both ways between
// an offload TAP and a plain one still arrives whole and in order.
func TestReplyPollingTAP(t *testing.T) {
	tn := newTestNetConfig(t, Config{ReplyPoll: 200 * time.Microsecond})
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", false)
	out, err := exec.Command("nsenter", "--net="+a.ns, "ping", "-c", "20", "-i", "0.01", "-W", "1", b.ip.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping a → b: %v\n%s", err, out)
	}
	if polled := tn.stats("b").Polled; polled == 0 {
		t.Errorf("none of b's 20 ping replies was polled by a's reader; b's counters %+v", tn.stats("b"))
	}
	nettest.Transfer(t, a.ns, b.ns, b.ip, 4<<20)
	nettest.Transfer(t, b.ns, a.ns, a.ip, 4<<20)
	if sa, sb := tn.stats("a"), tn.stats("b"); len(sa.Drops) != 0 || len(sb.Drops) != 0 {
		t.Errorf("unexpected drops: a %v, b %v", sa.Drops, sb.Drops)
	}
}

// TestHostTUNOffload: the host port's own TUN passes superframes whole
// both ways. The node's stack sends TSO packets into podnet0, which reach
// an offload pod whole and a plain pod in segments; a pod's superframes
// reach the node's stack whole. Every byte arrives (SHA-256).
func TestHostTUNOffload(t *testing.T) {
	tn := newTestNet(t)
	tn.attachHost(t, "10.99.1.1")
	nodeIP := tn.hostIP
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", false)

	nettest.Transfer(t, tn.nodeNS, a.ns, a.ip, 8<<20)
	nettest.Transfer(t, a.ns, tn.nodeNS, nodeIP, 8<<20)
	nettest.Transfer(t, tn.nodeNS, b.ns, b.ip, 4<<20)
	h := tn.stats("host")
	if h.GSOFrames == 0 || tn.stats("a").GSOFrames == 0 {
		t.Errorf("superframes read: %d from the node, %d from pod a; want both > 0", h.GSOFrames, tn.stats("a").GSOFrames)
	}
	if !h.Offload {
		t.Errorf("host port reports no offload")
	}
	for _, n := range []string{"host", "a", "b"} {
		if d := tn.stats(n).Drops; len(d) != 0 {
			t.Errorf("drops on %s: %v", n, d)
		}
	}
}

// udpFrame builds, in a fresh buffer at packet.Headroom, a pod frame from
// src to dst: virtio header (zero) when offload, Ethernet, IPv4, UDP with
// payloadLen bytes. It returns the buffer and the frame length.
func udpFrame(src, dst *testPod, offload bool, payloadLen int) ([]byte, int) {
	buf := make([]byte, packet.BufferSize)
	off := packet.Headroom
	if offload {
		off += vnetLen
	}
	eth := packet.Ethernet(buf[off:])
	eth.SetDst(packet.GatewayMAC)
	eth.SetSrc(src.mac)
	eth.SetEtherType(packet.EtherTypeIPv4)
	ip := packet.IPv4(buf[off+ethLen:])
	total := 20 + 8 + payloadLen
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(total))
	ip[8] = 64
	ip[9] = packet.ProtoUDP
	ip.SetSrc(src.ip.As4())
	ip.SetDst(dst.ip.As4())
	ip.ComputeChecksum()
	udp := packet.UDP(ip[20:])
	binary.BigEndian.PutUint16(udp[0:], 9)
	binary.BigEndian.PutUint16(udp[2:], 9) // discard
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payloadLen))
	ip = ip[:total]
	udp.SetChecksum(packet.TransportChecksum(ip))
	return buf, off - packet.Headroom + ethLen + total
}

func (tn *testNet) port(p *testPod) *podPort {
	tn.s.mu.Lock()
	defer tn.s.mu.Unlock()
	return tn.s.att.pods[p.port]
}

// TestForwardAllocs requires that forwarding a frame pod to pod allocates
// nothing (the write goes to the real egress TAP).
func TestForwardAllocs(t *testing.T) {
	tn := newTestNet(t)
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", true)
	buf, n := udpFrame(a, b, true, 64)
	f := newForwarder(tn.s)
	in := tn.port(a)
	allocs := testing.AllocsPerRun(1000, func() {
		f.begin()
		// Refresh TTL so the frame stays forwardable on every run.
		ip := packet.IPv4(buf[packet.Headroom+vnetLen+ethLen:])
		ip[8] = 64
		ip.ComputeChecksum()
		f.fromPod(in, buf, packet.Headroom, n)
		f.end()
	})
	if allocs != 0 {
		t.Fatalf("got %v allocs per forwarded frame, want 0", allocs)
	}
	if tx := tn.stats("b").TxFrames; tx < 1000 {
		t.Fatalf("b transmitted %d frames, want ≥ 1000", tx)
	}
}

// BenchmarkForwardPodToPod reports ns per frame forwarded from one pod
// port to another, including the write(2) into the egress TAP.
func BenchmarkForwardPodToPod(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(sizeName(size), func(b *testing.B) {
			tn := newTestNet(b)
			pa := tn.addPod(b, "a", "10.99.0.1", true)
			pb := tn.addPod(b, "b", "10.99.0.2", true)
			buf, n := udpFrame(pa, pb, true, size)
			f := newForwarder(tn.s)
			in := tn.port(pa)
			ip := packet.IPv4(buf[packet.Headroom+vnetLen+ethLen:])
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				ip[8] = 64
				ip.ComputeChecksum()
				f.begin()
				f.fromPod(in, buf, packet.Headroom, n)
				f.end()
			}
		})
	}
}

func sizeName(n int) string {
	return fmt.Sprintf("payload-%d", n)
}

// BenchmarkClassify reports the switch's own per-frame work (parse,
// anti-spoofing, snapshot lookup, counters) without a device write: the
// destination is a blackhole route.
func BenchmarkClassify(b *testing.B) {
	tn := newTestNet(b)
	pa := tn.addPod(b, "a", "10.99.0.1", true)
	sink := &testPod{ip: netip.MustParseAddr("10.98.0.1")}
	tab, err := router.NewTable([]router.Route{
		{Prefix: netip.PrefixFrom(pa.ip, 32), Kind: router.KindLocalPod, Port: pa.port},
		{Prefix: netip.MustParsePrefix("10.98.0.0/16"), Kind: router.KindBlackhole},
	})
	if err != nil {
		b.Fatal(err)
	}
	tn.s.SetRoutes(tab)
	buf, n := udpFrame(pa, sink, true, 64)
	f := newForwarder(tn.s)
	in := tn.port(pa)
	b.ReportAllocs()
	for b.Loop() {
		f.begin()
		f.fromPod(in, buf, packet.Headroom, n)
		f.end()
	}
	if got := tn.stats("a").Drops["blackhole"]; got == 0 {
		b.Fatalf("no blackhole drops counted")
	}
}
