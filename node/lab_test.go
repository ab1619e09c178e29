package node_test

// Integration tests on a real lab: one node netns running the real daemon
// (built by labtest), two pods with TAP eth0s, real TCP and raw frames.
//
//	  <lab>-test-1 (192.168.1.2)      <lab>-test-2 (192.168.1.3)
//	        eth0 (TAP)                       eth0 (TAP)
//	           ╲                               ╱
//	            ══ podnet daemon in <lab>-worker1 ══ podnet0 (TUN) ─ node stack (10.77.0.11)
//	                                │ eth0
//	                        <lab>-fabric br0 (10.77.0.1)

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	vswitch "podnet/switch"
)

func nsPath(t *testing.T, l *lab.Lab, target string) string {
	t.Helper()
	ns, err := l.Netns(target)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join("/run/netns", ns)
}

func nodeClient(t *testing.T, l *lab.Lab, nodeName string) *nodeapi.Client {
	t.Helper()
	for _, n := range l.Status().Nodes {
		if n.Name == nodeName {
			return nodeapi.NewClient(n.Socket)
		}
	}
	t.Fatalf("no node %s in lab", nodeName)
	return nil
}

func transfer(t *testing.T, from, to string, addr netip.Addr, size int64) {
	t.Helper()
	nettest.Transfer(t, from, to, addr, size)
}

func ping(t *testing.T, l *lab.Lab, from string, to netip.Addr) {
	t.Helper()
	out, err := l.Output(context.Background(), from, "ping", "-c", "2", "-i", "0.2", "-W", "2", to.String())
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s%s", to, from, err, out, pathState(l))
	}
}

// pathState describes what each node's switch counted and routes, for a
// failure message: where a lost packet went.
func pathState(l *lab.Lab) string {
	var b strings.Builder
	for _, n := range l.Status().Nodes {
		var ports []vswitch.PortStats
		if err := nodeapi.NewClient(n.Socket).Get(nodeapi.PathPorts, &ports); err != nil {
			fmt.Fprintf(&b, "\n%s: ports: %v", n.Name, err)
			continue
		}
		for _, p := range ports {
			fmt.Fprintf(&b, "\n%s %s %s: rx %d tx %d drops %v", n.Name, p.Kind, p.Name, p.RxFrames, p.TxFrames, p.Drops)
		}
		if out, err := l.Output(context.Background(), n.Name, "ip", "-4", "route"); err == nil {
			fmt.Fprintf(&b, "\n%s kernel routes:\n%s", n.Name, out)
		}
	}
	return b.String()
}

func portStats(t *testing.T, c *nodeapi.Client, pod string) vswitch.PortStats {
	t.Helper()
	var ports []vswitch.PortStats
	err := c.Get(nodeapi.PathPorts, &ports)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.Name == pod {
			return p
		}
	}
	t.Fatalf("no port for %s", pod)
	return vswitch.PortStats{}
}

// TestPlainTAPLab runs the pod paths with plain TAPs (no virtio header, no
// TSO), the --tap-offload=false mode.
func TestPlainTAPLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 2, DaemonArgs: []string{"--tap-offload=false"}})
	ip1, ip2 := l.PodIP("test-1"), l.PodIP("test-2")
	ping(t, l, "test-1", ip2)
	transfer(t, nsPath(t, l, "test-1"), nsPath(t, l, "test-2"), ip2, 8<<20)
	transfer(t, nsPath(t, l, "worker1"), nsPath(t, l, "test-2"), ip2, 4<<20)
	transfer(t, nsPath(t, l, "test-1"), nsPath(t, l, "worker1"), l.NodeAddr("worker1"), 4<<20)
	if p := portStats(t, nodeClient(t, l, "worker1"), "test-1"); p.Offload || p.GSOFrames != 0 {
		t.Fatalf("plain port reports offload=%v gso=%d, want false and 0", p.Offload, p.GSOFrames)
	}
	_ = ip1
}

func TestSingleNodeLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 2})
	ip1, ip2 := l.PodIP("test-1"), l.PodIP("test-2")
	nodeAddr := l.NodeAddr("worker1")
	ns1, ns2, nsNode := nsPath(t, l, "test-1"), nsPath(t, l, "test-2"), nsPath(t, l, "worker1")

	t.Run("ping", func(t *testing.T) {
		ping(t, l, "test-1", ip2)
		ping(t, l, "test-2", ip1)
		ping(t, l, "worker1", ip1)
		ping(t, l, "test-2", nodeAddr)
	})
	t.Run("pod-to-pod 50MB", func(t *testing.T) { transfer(t, ns1, ns2, ip2, 50<<20) })
	t.Run("node-to-pod", func(t *testing.T) { transfer(t, nsNode, ns1, ip1, 8<<20) })
	t.Run("pod-to-node", func(t *testing.T) { transfer(t, ns2, nsNode, nodeAddr, 8<<20) })
	t.Run("node address added", func(t *testing.T) {
		// A new address on the node becomes a host route without a restart.
		extra := netip.MustParseAddr("10.77.0.200")
		if out, err := l.Output(context.Background(), "worker1", "ip", "addr", "add", extra.String()+"/24", "dev", "eth0"); err != nil {
			t.Fatalf("add address: %v\n%s", err, out)
		}
		c := nodeClient(t, l, "worker1")
		deadline := time.Now().Add(5 * time.Second)
		for {
			routes, err := c.Routes()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range routes {
				found = found || (r.Prefix == netip.PrefixFrom(extra, 32) && r.Kind.String() == "host")
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no host route for %s after 5s: %v", extra, routes)
			}
			time.Sleep(50 * time.Millisecond)
		}
		ping(t, l, "test-1", extra)
	})
	t.Run("arp", func(t *testing.T) { checkProxyARP(t, ns1) })
	t.Run("bad frames", func(t *testing.T) { checkBadFrames(t, l, ns1, ip1, ip2) })
	t.Run("restart", func(t *testing.T) {
		// SIGKILL: no chance to clean up, the persistent TAPs stay behind
		// and the new daemon must pick them up.
		c := nodeClient(t, l, "worker1")
		before, err := c.Pods()
		if err != nil {
			t.Fatal(err)
		}
		if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
			t.Fatal(err)
		}
		after, err := c.Pods()
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Fatalf("got %d pods after restart, want %d", len(after), len(before))
		}
		for i := range before {
			if after[i].Name != before[i].Name || after[i].IP != before[i].IP || !after[i].Attached {
				t.Fatalf("after restart got %+v, want %+v attached", after[i], before[i])
			}
		}
		transfer(t, ns1, ns2, ip2, 8<<20)
		ping(t, l, "worker1", ip2)
	})
}

// openPacketSocket opens an AF_PACKET socket bound to eth0 in netns ns.
func openPacketSocket(t *testing.T, ns string) int {
	t.Helper()
	var fd int
	err := netnsutil.Do(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("packet socket in %s: %v", ns, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(3 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return fd
}

const ethHdrLen = 14

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func podMAC(t *testing.T, ns string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := netnsutil.Do(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// checkProxyARP asks for an arbitrary address from inside the pod and
// checks the reply with gopacket's decoder.
func checkProxyARP(t *testing.T, ns string) {
	fd := openPacketSocket(t, ns)
	mac := podMAC(t, ns)
	target := net.IPv4(10, 123, 45, 67).To4()
	sender := net.IPv4(192, 168, 1, 2).To4()
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6,
		ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: mac, SourceProtAddress: sender,
		DstHwAddress: make([]byte, 6), DstProtAddress: target}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, arp); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, buf.Bytes()); err != nil {
		t.Fatalf("send ARP request: %v", err)
	}
	rb := make([]byte, 2048)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			t.Fatalf("waiting for ARP reply: %v", err)
		}
		p := gopacket.NewPacket(rb[:n], layers.LayerTypeEthernet, gopacket.Default)
		al, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
		if !ok || al.Operation != layers.ARPReply {
			continue // our own request, or other traffic
		}
		e := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		gw := net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
		checks := []struct {
			what      string
			got, want string
		}{
			{"eth src", e.SrcMAC.String(), gw.String()},
			{"eth dst", e.DstMAC.String(), mac.String()},
			{"arp sender mac", net.HardwareAddr(al.SourceHwAddress).String(), gw.String()},
			{"arp sender ip", net.IP(al.SourceProtAddress).String(), net.IP(target).String()},
			{"arp target mac", net.HardwareAddr(al.DstHwAddress).String(), mac.String()},
			{"arp target ip", net.IP(al.DstProtAddress).String(), net.IP(sender).String()},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %s, want %s", c.what, c.got, c.want)
			}
		}
		return
	}
	t.Fatal("no ARP reply")
}

// ipv4Frame builds an Ethernet+IPv4+UDP frame toward the gateway.
func ipv4Frame(t *testing.T, src net.HardwareAddr, from, to netip.Addr) []byte {
	t.Helper()
	return udpFrame(t, src, from, to, 64, false, []byte("podnet"))
}

// udpFrame builds an Ethernet+IPv4+UDP frame toward the gateway.
func udpFrame(t *testing.T, src net.HardwareAddr, from, to netip.Addr, ttl uint8, df bool, payload []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: layers.IPProtocolUDP, SrcIP: from.AsSlice(), DstIP: to.AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 4001}
	udp.SetNetworkLayerForChecksum(ip)
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// checkBadFrames writes spoofed and malformed frames from inside a pod and
// checks each is dropped and counted under its reason.
func checkBadFrames(t *testing.T, l *lab.Lab, ns string, podIP, otherIP netip.Addr) {
	c := nodeClient(t, l, "worker1")
	fd := openPacketSocket(t, ns)
	mac := podMAC(t, ns)
	good := ipv4Frame(t, mac, podIP, otherIP)

	spoofed := ipv4Frame(t, mac, netip.MustParseAddr("10.1.2.3"), otherIP)
	badIHL := append([]byte(nil), good...)
	badIHL[14] = 0x43 // IHL 3 words < 5
	badLen := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(badLen[16:], 1400) // total length beyond the frame
	// The kernel refuses frames shorter than an Ethernet header on a packet
	// socket, so the shortest we can send carries half an IPv4 header.
	short := good[:ethHdrLen+10]
	unknown := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(unknown[12:], 0x88b5) // local experimental EtherType

	tests := []struct {
		name   string
		frame  []byte
		reason string
	}{
		{"spoofed source", spoofed, "spoofed-source"},
		{"bad IHL", badIHL, "bad-ihl"},
		{"bad total length", badLen, "bad-total-length"},
		{"too short", short, "too-short"},
		{"unknown ethertype", unknown, "unknown-ethertype"},
		{"ttl 1", udpFrame(t, mac, podIP, otherIP, 1, false, []byte("x")), "ttl-exceeded"},
		{"no route (in a pool, not routed)", udpFrame(t, mac, podIP, netip.MustParseAddr("192.168.250.1"), 64, false, []byte("x")), "no-route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := portStats(t, c, "test-1")
			if _, err := unix.Write(fd, tt.frame); err != nil {
				t.Fatalf("write frame: %v", err)
			}
			// The counter moves once the switch has read the frame; poll for it.
			deadline := time.Now().Add(5 * time.Second)
			for {
				after := portStats(t, c, "test-1")
				if d := after.Drops[tt.reason] - before.Drops[tt.reason]; d == 1 {
					break
				} else if d > 1 || time.Now().After(deadline) {
					t.Fatalf("drops[%s] went from %d to %d, want +1 (all drops now: %v)",
						tt.reason, before.Drops[tt.reason], after.Drops[tt.reason], after.Drops)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// The pod still works after all that.
	ping(t, l, "test-1", otherIP)
}

// TestPodAddBadInput checks that each bad `podnet pod add`/`pod del` fails
// with a one-line error and exit code 1, and leaves no TAP, record or
// route behind.
func TestPodAddBadInput(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 1})
	ctx := context.Background()
	if out, err := l.Output(ctx, "fabric", "ip", "netns", "add", l.Name()+"-test-9"); err != nil {
		t.Fatalf("make spare netns: %v\n%s", err, out)
	}
	spare := "/run/netns/" + l.Name() + "-test-9"
	t.Cleanup(func() { unix.Unmount(spare, unix.MNT_DETACH); removeNetns(spare) })
	taken := l.PodIP("test-1").String()

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"duplicate name", []string{"pod", "add", "test-1", "--netns", spare, "--ip", "192.168.1.50"}, "already exists"},
		{"duplicate ip", []string{"pod", "add", "dup", "--netns", spare, "--ip", taken}, "already used by pod test-1"},
		{"missing netns", []string{"pod", "add", "ghost", "--netns", "/run/netns/nope-" + l.Name(), "--ip", "192.168.1.51"}, "netns"},
		{"invalid ip", []string{"pod", "add", "bad", "--netns", spare, "--ip", "192.168.1.300"}, "invalid IPv4 address"},
		{"ip and pool", []string{"pod", "add", "bad", "--netns", spare, "--ip", "192.168.1.54", "--pool", "default-ipv4-ippool"}, "not both"},
		{"unknown pool", []string{"pod", "add", "bad", "--netns", spare, "--pool", "nosuchpool"}, "pool nosuchpool does not exist"},
		{"ip outside pools", []string{"pod", "add", "bad", "--netns", spare, "--ip", "172.31.9.9"}, "not in any IP pool"},
		{"bad name", []string{"pod", "add", "Bad_Name", "--netns", spare, "--ip", "192.168.1.52"}, "invalid pod name"},
		{"port name", []string{"pod", "add", "vxlan", "--netns", spare, "--ip", "192.168.1.56"}, `pod name "vxlan" is taken by the node's own port`},
		{"netns and new", []string{"pod", "add", "both", "--netns", spare, "--new", "--ip", "192.168.1.53"}, "exactly one of"},
		{"relative netns", []string{"pod", "add", "rel", "--netns", "run/netns/" + l.Name() + "-test-9", "--ip", "192.168.1.57"}, "must be an absolute path"},
		{"unclean netns", []string{"pod", "add", "unclean", "--netns", "/run/netns//" + l.Name() + "-test-9", "--ip", "192.168.1.58"}, "must be written plainly"},
		{"node address", []string{"pod", "add", "nodeip", "--netns", spare, "--ip", l.NodeAddr("worker1").String()}, "belongs to the node"},
		{"loopback", []string{"pod", "add", "lo", "--netns", spare, "--ip", "127.0.0.5"}, "--ip"},
		{"reserved", []string{"pod", "add", "res", "--netns", spare, "--ip", "240.0.0.1"}, "--ip"},
		{"unknown pod del", []string{"pod", "del", "nosuchpod"}, "not found"},
		// Pod a-web of worker1 and pod web of a node worker1-a share the
		// endpoint name worker1-a-web; the latter has it (below).
		{"endpoint name taken", []string{"pod", "add", "a-web", "--new", "--ip", "192.168.1.55"}, "belongs to pod web of node worker1-a"},
	}
	t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", "a-web")) }) // if the refused add left it
	foreign := `apiVersion: podnet.io/v1
kind: WorkloadEndpoint
metadata:
  name: worker1-a-web
spec:
  node: worker1-a
  workload: web
  interfaceName: eth0
  ipNetworks: [192.168.1.99/32]
`
	if out, err := podnetIn(l, "worker1", foreign, "create", "-f", "-"); err != nil {
		t.Fatalf("create the other node's endpoint: %v\n%s", err, out)
	}
	c := nodeClient(t, l, "worker1")
	before, err := c.Pods()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := l.Output(ctx, "worker1", append([]string{"podnet"}, tt.args...)...)
			if err == nil {
				t.Fatalf("podnet %v succeeded, want error containing %q:\n%s", tt.args, tt.want, out)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("got %v, want exit code 1", err)
			}
			msg := strings.TrimSpace(err.Error() + string(out))
			if !strings.Contains(msg, tt.want) {
				t.Fatalf("got %q, want it to contain %q", msg, tt.want)
			}
		})
	}
	after, err := c.Pods()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("pods changed: got %d, want %d", len(after), len(before))
	}
	if out, err := podnetIn(l, "worker1", "", "get", "wep", "worker1-a-web", "-o", "yaml"); err != nil || !strings.Contains(out, "node: worker1-a\n") || !strings.Contains(out, "192.168.1.99/32") {
		t.Fatalf("the other node's endpoint after the refused add: %v\n%s", err, out)
	}
	// No eth0 in the spare namespace, no TAP left in the node namespace.
	if out, _ := l.Output(ctx, "fabric", "ip", "-n", l.Name()+"-test-9", "-o", "link", "show"); strings.Contains(string(out), "eth0") {
		t.Fatalf("spare netns got an eth0:\n%s", out)
	}
	if out, _ := l.Output(ctx, "worker1", "ip", "-o", "link", "show"); strings.Contains(string(out), ": pn") {
		t.Fatalf("a pod TAP was left in the node namespace:\n%s", out)
	}

	// The daemon not running is an error too, naming the socket.
	t.Run("daemon not running", func(t *testing.T) {
		out, err := l.Output(ctx, "worker1", "podnet", "--socket", "/nonexistent/podnet.sock", "pod", "list")
		if err == nil || !strings.Contains(err.Error()+string(out), "daemon is not running") {
			t.Fatalf("got %v %s, want 'daemon is not running'", err, out)
		}
	})

	// A pod added with --new and deleted again leaves nothing.
	t.Run("new and del", func(t *testing.T) {
		t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", "tmp"+l.Name())) })
		if out, err := l.Output(ctx, "worker1", "podnet", "pod", "add", "tmp"+l.Name(), "--new", "--ip", "192.168.1.60"); err != nil {
			t.Fatalf("pod add --new: %v\n%s", err, out)
		}
		ping(t, l, "worker1", netip.MustParseAddr("192.168.1.60"))
		if out, err := l.Output(ctx, "worker1", "podnet", "pod", "del", "tmp"+l.Name()); err != nil {
			t.Fatalf("pod del: %v\n%s", err, out)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), l.HandPodNetns("worker1", "tmp"+l.Name())) {
			t.Fatalf("netns of deleted pod still there:\n%s", out)
		}
	})
}

func removeNetns(path string) { exec.Command("ip", "netns", "del", filepath.Base(path)).Run() }

// TestPoolWalk is the seed's IP story in a lab: add a pool from Calico
// YAML, disable the default pool, new pods get the new range while old
// pods keep answering; a pool with addresses cannot be deleted; ipam show
// and ipam check tell the truth throughout.
func TestPoolWalk(t *testing.T) {
	labtest.RequireRoot(t)
	// Plain routing: with an encapsulating pool the node would also hold a
	// tunnel address, one more "in use" than the pods.
	l := labtest.Up(t, lab.Config{Nodes: 1, Pods: 2, Encap: lab.EncapNone})
	ctx := context.Background()
	run := func(stdin string, args ...string) string {
		t.Helper()
		var out, errb strings.Builder
		err := l.Exec(ctx, "worker1", strings.NewReader(stdin), &out, &errb, append([]string{"podnet"}, args...)...)
		if err != nil {
			t.Fatalf("podnet %v: %v\n%s%s", args, err, out.String(), errb.String())
		}
		return out.String()
	}
	failsIn := func(stdin, want string, args ...string) {
		t.Helper()
		var out strings.Builder
		err := l.Exec(ctx, "worker1", strings.NewReader(stdin), &out, &out, append([]string{"podnet"}, args...)...)
		if err == nil || !strings.Contains(out.String(), want) {
			t.Fatalf("podnet %v: got %v %s, want failure containing %q", args, err, out.String(), want)
		}
	}
	fails := func(want string, args ...string) { t.Helper(); failsIn("", want, args...) }
	defaultPool := netip.MustParsePrefix("192.168.0.0/16")
	for _, pod := range []string{"test-1", "test-2"} {
		if !defaultPool.Contains(l.PodIP(pod)) {
			t.Fatalf("%s has %s, want an address in %s", pod, l.PodIP(pod), defaultPool)
		}
	}
	if out := run("", "ipam", "show"); !strings.Contains(out, "| IP Pool  | 192.168.0.0/16 |     65536 | 2 (0%)") {
		t.Fatalf("ipam show before: got\n%s", out)
	}

	run(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: new-pool
spec:
  cidr: 10.10.0.0/16
  ipipMode: Never
  natOutgoing: true
`, "apply", "-f", "-")
	run("", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":true}}`)
	if out := run("", "get", "ippool", "-o", "wide"); !strings.Contains(out, "new-pool") {
		t.Fatalf("get ippool -o wide: got\n%s", out)
	}

	// A new pod gets 10.10.x.x; the old ones still answer it.
	pod := "walk" + l.Name()
	t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", pod)) }) // a failed test must not leave it
	out := run("", "pod", "add", pod, "--new", "-o", "json")
	var info struct{ IP string }
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("pod add -o json: %v\n%s", err, out)
	}
	newIP := netip.MustParseAddr(info.IP)
	if !netip.MustParsePrefix("10.10.0.0/16").Contains(newIP) {
		t.Fatalf("new pod got %s, want an address in 10.10.0.0/16", newIP)
	}
	ping(t, l, "test-1", newIP)
	ping(t, l, "test-2", l.PodIP("test-1"))

	// Round trip: get -o yaml, re-enable by editing, apply.
	y := run("", "get", "ippool", "default-ipv4-ippool", "-o", "yaml")
	if !strings.Contains(y, "disabled: true") {
		t.Fatalf("yaml of disabled pool lacks disabled: true:\n%s", y)
	}
	var edited []string
	for _, line := range strings.SplitAfter(y, "\n") {
		if strings.TrimSpace(line) != "disabled: true" {
			edited = append(edited, line)
		}
	}
	run(strings.Join(edited, ""), "apply", "-f", "-")
	if y2 := run("", "get", "ippool", "default-ipv4-ippool", "-o", "yaml"); strings.Contains(y2, "disabled") {
		t.Fatalf("pool still disabled after apply:\n%s", y2)
	}
	// The document read before the change carries a stale resourceVersion
	// now, and is refused.
	failsIn(y, "update conflict", "apply", "-f", "-")

	show := run("", "ipam", "show")
	for _, want := range []string{"| IP Pool  | 192.168.0.0/16 |     65536 | 2 (0%)", "| IP Pool  | 10.10.0.0/16   |     65536 | 1 (0%)"} {
		if !strings.Contains(show, want) {
			t.Fatalf("ipam show: want %q in\n%s", want, show)
		}
	}
	fails("still has 1 allocated", "delete", "ippool", "new-pool")

	// A pod whose endpoint record vanished is a leak that check finds and
	// release --leaked repairs.
	run("", "delete", "workloadendpoint", "worker1-test-2")
	// check exits non-zero: it found a problem.
	failsIn("", l.PodIP("test-2").String()+" leaked", "ipam", "check")
	fails("ipam check: 1 problems found", "ipam", "check")
	run("", "ipam", "release", "--leaked", "--grace=1s")
	if out := run("", "ipam", "check"); !strings.Contains(out, "found 0 problems") {
		t.Fatalf("ipam check after release: got\n%s", out)
	}

	run("", "pod", "del", pod)
	run("", "delete", "ippool", "new-pool")
	// The deleted pool's (now empty) block went with it: nothing is left
	// outside the pools.
	if out := run("", "ipam", "show"); strings.Contains(out, "10.10.0.0/16") || strings.Contains(out, "No pool") || !strings.Contains(out, "| 1 (0%)") {
		t.Fatalf("ipam show at the end: got\n%s", out)
	}
}

// freezeEtcd stops the lab's etcd (SIGSTOP) and returns resume, which
// continues it once however often it is called. A cleanup resumes it in
// any case, before the lab goes down (cleanups run last first).
func freezeEtcd(t *testing.T, l *lab.Lab) (resume func()) {
	t.Helper()
	etcd := l.Status().EtcdPID
	if etcd == 0 {
		t.Fatal("the lab has no etcd process")
	}
	if err := syscall.Kill(etcd, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop etcd: %v", err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { syscall.Kill(etcd, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}
