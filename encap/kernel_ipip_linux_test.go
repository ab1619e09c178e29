package encap

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"podnet/internal/netnsutil"
)

// kernelTunnel adds the kernel's own IP-in-IP device ipip0 to node B,
// pointing at node A, with a pod-like address and a route to A's pods:
//
//	netns A                                 netns B
//	veth0 10.250.0.1 ────────────────────── veth0 10.250.0.2
//	IPIPConn                                ipip0 (local .2 remote .1)
//	  "pod" 192.168.1.2 (made up)           192.168.2.1/32, 192.168.1.0/24 dev ipip0
func kernelTunnel(t *testing.T, u *underlay) {
	t.Helper()
	add := []string{"-n", u.nameB, "link", "add", "ipip0", "type", "ipip", "local", "10.250.0.2", "remote", "10.250.0.1"}
	out, err := exec.Command("ip", add...).CombinedOutput()
	if err != nil {
		// The device type lives in the ipip module; try loading it once.
		var mod string
		if mout, merr := exec.Command("modprobe", "ipip").CombinedOutput(); merr != nil {
			mod = "modprobe ipip: " + strings.TrimSpace(string(mout)) + " (" + merr.Error() + ")"
		} else {
			mod = "modprobe ipip: ok"
			out, err = exec.Command("ip", add...).CombinedOutput()
		}
		if err != nil {
			rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
			msg := "the kernel's IP-in-IP device is unavailable, so wire interop with it cannot be tested: " +
				"ip " + strings.Join(add, " ") + ": " + strings.TrimSpace(string(out)) + "; " + mod +
				"; kernel " + strings.TrimSpace(string(rel)) + " needs CONFIG_NET_IPIP (=y or =m with module loading)"
			// Only a kernel without the device is a skip; any other
			// failure of the tunnel set-up fails the test.
			if strings.Contains(string(out), "Unknown device type") {
				t.Skip("SKIPPED, NOT PASSED: " + msg)
			}
			t.Fatal(msg)
		}
	}
	ip(t, "-n", u.nameB, "addr", "add", "192.168.2.1/32", "dev", "ipip0")
	ip(t, "-n", u.nameB, "link", "set", "ipip0", "up")
	ip(t, "-n", u.nameB, "route", "add", "192.168.1.0/24", "dev", "ipip0")
}

// TestKernelIPIPInterop checks our transport against Linux's own IP-in-IP
// on the wire, both ways: a datagram a real socket sends through the
// kernel tunnel arrives at our IPIPConn and decapsulates to exactly that
// datagram; an echo request we send is decapsulated and answered by the
// kernel, and its reply comes back to us through the tunnel.
func TestKernelIPIPInterop(t *testing.T) {
	u := newUnderlay(t)
	kernelTunnel(t, u)
	a := listen(t, u.nsA, IPIPConfig{Local: u.addrA})

	t.Run("kernel to IPIPConn", func(t *testing.T) {
		payload := []byte("from a kernel socket through ipip0")
		if err := netnsutil.Do(u.nsB, func() error {
			c, err := net.ListenPacket("udp4", "192.168.2.1:0")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.WriteTo(payload, &net.UDPAddr{IP: podA, Port: 7777})
			return err
		}); err != nil {
			t.Fatalf("send UDP from %s through ipip0: %v", u.nameB, err)
		}
		p := readN(t, a, 1, 5*time.Second)[0]
		outer, inner, r := DecapIPIP(p)
		if r != DecapOK {
			t.Fatalf("DecapIPIP: got %v, want ok (%x)", r, p)
		}
		if outer.Src() != u.addrB || outer.Dst() != u.addrA {
			t.Errorf("outer: got %v -> %v, want %v -> %v", outer.Src(), outer.Dst(), u.addrB, u.addrA)
		}
		pk := gopacket.NewPacket(inner, layers.LayerTypeIPv4, gopacket.Default)
		ip4, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if ip4 == nil || udp == nil {
			t.Fatalf("inner is not IPv4/UDP: %v", pk)
		}
		if !ip4.SrcIP.Equal(net.IPv4(192, 168, 2, 1)) || !ip4.DstIP.Equal(podA) {
			t.Errorf("inner: got %v -> %v, want 192.168.2.1 -> %v", ip4.SrcIP, ip4.DstIP, podA)
		}
		if udp.DstPort != 7777 || !bytes.Equal(udp.Payload, payload) {
			t.Errorf("inner UDP: got port %d payload %q, want port 7777 payload %q", udp.DstPort, udp.Payload, payload)
		}
		if int(ip4.Length) != len(inner) {
			t.Errorf("inner length: IPv4 says %d, view has %d", ip4.Length, len(inner))
		}
	})

	t.Run("IPIPConn to kernel and back", func(t *testing.T) {
		payload := []byte("ping through the kernel tunnel")
		req := echoRequest(t, podA, net.IPv4(192, 168, 2, 1).To4(), 0x4242, 7, payload)
		if n, err := a.WriteBatch([][]byte{req}, []netip.Addr{u.addrB}); n != 1 || err != nil {
			t.Fatalf("WriteBatch echo request: got (%d, %v), want (1, nil)", n, err)
		}
		p := readN(t, a, 1, 5*time.Second)[0]
		outer, inner, r := DecapIPIP(p)
		if r != DecapOK {
			t.Fatalf("DecapIPIP: got %v, want ok (%x)", r, p)
		}
		if outer.Src() != u.addrB {
			t.Errorf("outer source: got %v, want %v", outer.Src(), u.addrB)
		}
		pk := gopacket.NewPacket(inner, layers.LayerTypeIPv4, gopacket.Default)
		ip4, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		icmp, _ := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if ip4 == nil || icmp == nil {
			t.Fatalf("inner is not IPv4/ICMP: %v", pk)
		}
		if icmp.TypeCode.Type() != layers.ICMPv4TypeEchoReply || icmp.Id != 0x4242 || icmp.Seq != 7 {
			t.Errorf("inner ICMP: got %v id %#x seq %d, want echo reply id 0x4242 seq 7", icmp.TypeCode, icmp.Id, icmp.Seq)
		}
		if !ip4.SrcIP.Equal(net.IPv4(192, 168, 2, 1)) || !ip4.DstIP.Equal(podA) {
			t.Errorf("inner: got %v -> %v, want 192.168.2.1 -> %v", ip4.SrcIP, ip4.DstIP, podA)
		}
		if !bytes.Equal(icmp.Payload, payload) {
			t.Errorf("echo payload: got %q, want %q", icmp.Payload, payload)
		}
	})
}
