package vswitch

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"

	"podnet/internal/packet"
	"podnet/switch/tap"
)

type portKind uint8

const (
	kindPod portKind = iota
	kindHost
	kindUnderlay
	kindVXLAN
)

// port is one attachment of the switch. Its fields are set before the port
// is published and never change; only the counters move.
type port struct {
	index     int
	name      string
	kind      portKind
	ip        netip.Addr
	ip4       [4]byte
	mac       packet.MAC
	dev       *tap.Device     // pod ports
	tun       tun.Device      // the host port
	offload   bool            // dev frames carry a virtio-net header
	under     Underlay        // the underlay port
	mtu       int             // the underlay's MTU
	vx        VXLANUnderlay   // the VXLAN port's receiving socket
	vxSenders []VXLANUnderlay // and the sockets it sends from
	vni       uint32
	vxPort    uint16

	c    counters
	done chan struct{} // closed when the reader exits
}

func (p *port) stats() PortStats {
	s := p.c.snapshot()
	s.Index, s.Name = p.index, p.name
	switch p.kind {
	case kindPod:
		s.Kind, s.Device, s.IP, s.Offload = "pod", p.dev.Name(), p.ip.String(), p.offload
	case kindHost:
		s.Kind, s.Device, s.Offload = "host", "podnet0", true
		if n, err := p.tun.Name(); err == nil {
			s.Device = n
		}
	case kindUnderlay:
		s.Kind, s.Device = "underlay", "ipip"
	case kindVXLAN:
		s.Kind, s.Device = "underlay", "vxlan"
	}
	return s
}
