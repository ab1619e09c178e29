package packet

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestBuildARPReply(t *testing.T) {
	req, r := ParseARPFrame(arpRequestFrame(podMAC, podA, switchIP))
	if r != ParseOK {
		t.Fatalf("ParseARPFrame: %v", r)
	}
	if req.Op() != ARPRequest || req.SenderMAC() != podMAC || req.SenderIP() != netip.AddrFrom4(podA) ||
		req.TargetIP() != netip.AddrFrom4(switchIP) || req.TargetMAC() != (MAC{}) {
		t.Fatalf("request view: op %d sender %v %v target %v %v", req.Op(), req.SenderMAC(), req.SenderIP(), req.TargetMAC(), req.TargetIP())
	}

	dst := make([]byte, 64)
	n := BuildARPReply(dst, req, GatewayMAC)
	if n != ARPFrameLen {
		t.Fatalf("n: got %d, want %d", n, ARPFrameLen)
	}
	// Our own views.
	eth := Ethernet(dst[:n])
	if eth.Dst() != podMAC || eth.Src() != GatewayMAC || eth.EtherType() != EtherTypeARP {
		t.Errorf("ethernet: got dst %v src %v type %#x", eth.Dst(), eth.Src(), eth.EtherType())
	}
	rep, r := ParseARPFrame(dst[:n])
	if r != ParseOK {
		t.Fatalf("reply does not parse: %v", r)
	}
	if rep.Op() != ARPReply || rep.SenderMAC() != GatewayMAC || rep.SenderIP() != netip.AddrFrom4(switchIP) ||
		rep.TargetMAC() != podMAC || rep.TargetIP() != netip.AddrFrom4(podA) {
		t.Errorf("reply view: op %d sender %v %v target %v %v", rep.Op(), rep.SenderMAC(), rep.SenderIP(), rep.TargetMAC(), rep.TargetIP())
	}

	// An independent decoder.
	p := gopacket.NewPacket(dst[:n], layers.LayerTypeEthernet, gopacket.Default)
	a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if !ok {
		t.Fatalf("gopacket: no ARP layer: %v", p.ErrorLayer())
	}
	if a.Operation != layers.ARPReply ||
		!bytes.Equal(a.SourceHwAddress, GatewayMAC[:]) || !bytes.Equal(a.SourceProtAddress, switchIP[:]) ||
		!bytes.Equal(a.DstHwAddress, podMAC[:]) || !bytes.Equal(a.DstProtAddress, podA[:]) {
		t.Errorf("gopacket: got op %d %v %v → %v %v", a.Operation,
			net.HardwareAddr(a.SourceHwAddress), net.IP(a.SourceProtAddress), net.HardwareAddr(a.DstHwAddress), net.IP(a.DstProtAddress))
	}
}

// Answering in place, over the request frame itself, must still read the
// request's addresses before overwriting them.
func TestBuildARPReplyInPlace(t *testing.T) {
	f := arpRequestFrame(podMAC, podA, switchIP)
	req := ARP(f[EthernetHeaderLen:])
	if n := BuildARPReply(f, req, GatewayMAC); n != ARPFrameLen {
		t.Fatalf("n: got %d", n)
	}
	rep := ARP(f[EthernetHeaderLen:])
	if rep.SenderIP() != netip.AddrFrom4(switchIP) || rep.TargetIP() != netip.AddrFrom4(podA) || rep.TargetMAC() != podMAC {
		t.Errorf("got sender %v target %v %v", rep.SenderIP(), rep.TargetMAC(), rep.TargetIP())
	}
}

func TestBuildARPReplyRejects(t *testing.T) {
	good := arpRequestFrame(podMAC, podA, switchIP)[EthernetHeaderLen:]
	bad := append([]byte(nil), good...)
	bad[5] = 16 // IPv6-sized protocol address
	tests := []struct {
		name string
		dst  []byte
		req  ARP
	}{
		{"dst too small", make([]byte, ARPFrameLen-1), ARP(good)},
		{"short request", make([]byte, 64), ARP(good[:27])},
		{"not ipv4 arp", make([]byte, 64), ARP(bad)},
		{"nil", make([]byte, 64), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := BuildARPReply(tt.dst, tt.req, GatewayMAC); n != 0 {
				t.Errorf("got %d, want 0", n)
			}
		})
	}
}

func TestAllocsBuildARPReply(t *testing.T) {
	req := ARP(arpRequestFrame(podMAC, podA, switchIP)[EthernetHeaderLen:])
	dst := make([]byte, 64)
	got := testing.AllocsPerRun(100, func() { BuildARPReply(dst, req, GatewayMAC) })
	if got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}
