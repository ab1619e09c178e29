package capture

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
)

// vxlanFrame is an Ethernet frame carrying VXLAN between two nodes with a
// TCP segment from 10.0.0.1:40000 to 10.0.2.5:80 inside.
func vxlanFrame(t testing.TB) []byte {
	inner := []gopacket.SerializableLayer{
		&layers.Ethernet{SrcMAC: net.HardwareAddr{0x66, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0x66, 0, 0, 0, 0, 3}, EthernetType: layers.EthernetTypeIPv4},
	}
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolTCP, SrcIP: net.IP{10, 0, 0, 1}, DstIP: net.IP{10, 0, 2, 5}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Seq: 7, Window: 100}
	tcp.SetNetworkLayerForChecksum(ip)
	inner = append(inner, ip, tcp)
	outerIP := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{172, 16, 0, 1}, DstIP: net.IP{172, 16, 0, 3}}
	udp := &layers.UDP{SrcPort: 51000, DstPort: 4789}
	udp.SetNetworkLayerForChecksum(outerIP)
	all := append([]gopacket.SerializableLayer{
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}, EthernetType: layers.EthernetTypeIPv4},
		outerIP, udp, &layers.VXLAN{ValidIDFlag: true, VNI: 4096},
	}, inner...)
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, all...); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestFilter(t *testing.T) {
	p := Decode(vxlanFrame(t), Ethernet)
	for _, tc := range []struct {
		expr string
		want bool
	}{
		{"", true},
		{"host 10.0.2.5", true}, // the inner header
		{"host 172.16.0.3 and udp", true},
		{"tcp and port 80", true},
		{"port 4789", true},
		{"icmp", false},
		{"host 10.9.9.9", false},
		{"tcp and port 81", false},
	} {
		f, err := ParseFilter(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		if got := f.Match(p); got != tc.want {
			t.Errorf("%q matches %v, want %v", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{"host", "host ::1", "port x", "port 70000", "src 1.2.3.4", "or"} {
		if _, err := ParseFilter(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestLine(t *testing.T) {
	got := Line(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Out, Decode(vxlanFrame(t), Ethernet))
	want := "03:04:05.000006 out 172.16.0.1 > 172.16.0.3 ttl 64 len 96 UDP 51000 > 4789 VXLAN vni 4096 | 10.0.0.1 > 10.0.2.5 ttl 63 len 40 TCP 40000 > 80 [S] seq 7 ack 0 win 100, 0 bytes"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestPcapOpensInTshark writes a capture file of a switch port and has
// tshark, and our own reader, read it back with each packet's direction.
func TestPcapOpensInTshark(t *testing.T) {
	frame := vxlanFrame(t)
	var buf bytes.Buffer
	w, err := NewPortWriter(&buf, "pod-a", Ethernet)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dirs := []Dir{In, Out, In}
	for _, d := range dirs {
		if err := w.Write(now, d, frame); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range dirs {
		ts, dir, data, err := r.Next()
		if err != nil || !bytes.Equal(data, frame) || r.Link() != Ethernet || dir != want || !ts.Equal(now) {
			t.Fatalf("read back %d: %v, same bytes %v, link %v, direction %q (want %q), time %v (want %v)",
				i, err, bytes.Equal(data, frame), r.Link(), dir, want, ts, now)
		}
	}
	file := filepath.Join(t.TempDir(), "c.pcap")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "frame.interface_name", "-e", "vxlan.vni", "-e", "ip.dst")
	cmd.Stderr = &stderr // tshark warns when run as root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s%s", err, out, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || lines[0] != "pod-a:in\t4096\t172.16.0.3,10.0.2.5" || !strings.HasPrefix(lines[1], "pod-a:out\t") {
		t.Fatalf("tshark read:\n%s\nwant 3 packets, in, out, in, with VNI 4096 and both IPv4 destinations", out)
	}
}

// TestReadClassicPcap: the reader takes classic pcap too (what tcpdump
// writes, what daemons before pcapng sent), whose packets have no
// direction.
func TestReadClassicPcap(t *testing.T) {
	frame := vxlanFrame(t)
	var buf bytes.Buffer
	w := pcapgo.NewWriterNanos(&buf)
	if err := w.WriteFileHeader(SnapLen, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(frame), Length: len(frame)}, frame); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, dir, data, err := r.Next(); err != nil || dir != Wire || !bytes.Equal(data, frame) || r.Link() != Ethernet {
		t.Fatalf("read back: %v, direction %q, same bytes %v, link %v", err, dir, bytes.Equal(data, frame), r.Link())
	}
}

// TestInterface reads a frame off a veth in a namespace of its own.
func TestInterface(t *testing.T) {
	ns := nettest.Netns(t, nettest.UniqueName("cap"))
	for _, args := range [][]string{
		{"link", "add", "c0", "type", "veth", "peer", "name", "c1"},
		{"addr", "add", "10.253.0.1/24", "dev", "c0"},
		{"link", "set", "c0", "up"}, {"link", "set", "c1", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(ns)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	err := netnsutil.Do(ns, func() error {
		ifc, err := OpenInterface("c1")
		if err != nil {
			return err
		}
		defer ifc.Close()
		c, err := net.Dial("udp4", "10.253.0.2:9")
		if err != nil {
			return err
		}
		defer c.Close()
		// The first frame may be an ARP request for .2: read until the
		// question for it shows up.
		c.Write([]byte("hello"))
		deadline := time.Now().Add(5 * time.Second)
		for {
			frame, err := ifc.Read(deadline)
			if err != nil {
				t.Fatalf("no frame seen on c1: %v", err)
			}
			if line := Line(time.Now(), Wire, Decode(frame, Ethernet)); strings.Contains(line, "10.253.0.2") {
				t.Logf("seen: %s", line)
				return nil
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ifc, err := OpenInterface("no-such-if0")
	if err == nil {
		ifc.Close()
		t.Fatal("OpenInterface of a missing interface: no error")
	}
}
