package nat

import (
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"podnet/internal/packet"
)

// Netstack tuning. TCP from pods ends in a gVisor netstack; these sizes
// decide how much a slow side can buffer per connection.
const (
	nicID = 1
	// linkMTU is the netstack NIC's MTU. It only bounds the MSS the
	// netstack advertises; what it sends to a pod is bounded by the MSS the
	// pod advertises from its own MTU, so a large value never produces a
	// packet a pod cannot take, and the switch has already cut pods' GSO
	// superframes down to their MTU.
	linkMTU = 65535
	// DeliverRoom is the room NAT leaves before the packets it delivers
	// from the netstack and from host sockets (Config.Deliver): the
	// switch's, for writing them to a pod in place.
	DeliverRoom = packet.Headroom
	// linkQueueLen is the channel endpoint's outbound queue, in packets.
	// When routineNetstackOut falls behind, the netstack's writes fail
	// with ErrNoBufferSpace and TCP retransmits.
	linkQueueLen = 4096
	// tcpBufDefault and tcpBufMax are the netstack's TCP send and receive
	// buffer sizes (bytes). Receive-buffer moderation grows a connection
	// from the default toward the max; the max also sets the window scale
	// (gVisor derives it from the largest receive buffer; scaling itself
	// is always on).
	tcpBufMin     = 4 << 10
	tcpBufDefault = 1 << 20
	tcpBufMax     = 8 << 20
	// maxInFlight bounds connection requests being dialled at once; SYNs
	// beyond it are ignored (the pod retransmits).
	maxInFlight = 4096
)

// tcpipErr converts gVisor's tcpip.Error, which deliberately is not an
// error, at the package boundary.
func tcpipErr(op string, e tcpip.Error) error {
	if e == nil {
		return nil
	}
	return fmt.Errorf("%s: %s", op, e)
}

// newNetstack builds the stack TCP from pods terminates in: IPv4 and TCP
// on one channel NIC that accepts and answers for every address
// (promiscuous for inbound, spoofing for outbound), with every
// destination routed to it. SYNs go to the forwarder, which calls
// n.routineTCPRequest.
func (n *NAT) newNetstack() error {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"sack", ptr(tcpip.TCPSACKEnabled(true))},
		{"moderate receive buffer", ptr(tcpip.TCPModerateReceiveBufferOption(true))},
		{"receive buffer", &tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}},
		{"send buffer", &tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: tcpBufDefault, Max: tcpBufMax}},
		{"nagle off", ptr(tcpip.TCPDelayEnabled(false))},
		{"congestion control", ptr(tcpip.CongestionControlOption("cubic"))},
		// The netstack is one end of connections it only relays; a pod
		// that opens connections fast reuses ports while the netstack
		// still holds the old 4-tuple in TIME_WAIT, and gVisor drops such
		// SYNs. A short TIME_WAIT keeps the pod's new connections flowing
		// (seen: dial timeouts after ~3000 connections in a second).
		{"time-wait timeout", ptr(tcpip.TCPTimeWaitTimeoutOption(time.Second))},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			s.Destroy()
			return tcpipErr("netstack tcp option "+o.name, err)
		}
	}
	ep := channel.New(linkQueueLen, linkMTU, "")
	// Receive checksum offload: Handle takes pods' TCP packets as the
	// switch reads them from their TAPs, TSO superframes whole with only
	// the pseudo-header sum in the TCP checksum (a partial checksum), as
	// a NIC driver hands its stack packets whose checksums it vouches
	// for.
	ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	// Host GSO: what the netstack sends to pods leaves as TSO superframes
	// with partial checksums (see offloadOf), which a pod's TAP takes
	// in one write, instead of one write, and one pass of the pod's
	// stack, per MSS segment. The switch cuts them for pods without
	// offloads.
	ep.SupportedGSOKind = stack.HostGSOSupported
	if err := s.CreateNIC(nicID, ep); err != nil {
		s.Destroy()
		return tcpipErr("netstack create nic", err)
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		s.Destroy()
		return tcpipErr("netstack promiscuous", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		s.Destroy()
		return tcpipErr("netstack spoofing", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	fwd := tcp.NewForwarder(s, tcpBufDefault, maxInFlight, n.routineTCPRequest)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	n.stack, n.link = s, ep
	return nil
}

func ptr[T any](v T) *T { return &v }

// injectTCP hands a pod's TCP packet to the netstack. The netstack only
// queues it (segments are processed by its own workers), so this never
// waits on the network.
func (n *NAT) injectTCP(ip packet.IPv4) {
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: buffer.MakeWithData(ip), // copies: Handle's caller reuses pkt
	})
	n.link.InjectInbound(header.IPv4ProtocolNumber, pkb)
	pkb.DecRef()
}

// routineNetstackOut delivers what the netstack sends (to pods) through
// cfg.Deliver. New starts it; it exits when Close cancels n.ctx.
func (n *NAT) routineNetstackOut() {
	defer n.wg.Done()
	n.log.Debug("netstack output started")
	defer n.log.Debug("netstack output stopped")
	scratch := make([]byte, DeliverRoom, DeliverRoom+linkMTU)
	for {
		pkb := n.link.ReadContext(n.ctx)
		if pkb == nil {
			return
		}
		b := scratch[:DeliverRoom]
		for _, v := range pkb.AsSlices() {
			b = append(b, v...)
		}
		gso := pkb.GSOOptions
		pkb.DecRef()
		ip := packet.IPv4(b[DeliverRoom:])
		if ip.Validate() != packet.ParseOK {
			n.c.drop(DropNetstackOut)
			continue
		}
		ip = ip[:ip.TotalLen()]
		hdr, ok := offloadOf(ip, gso)
		if !ok {
			n.c.drop(DropNetstackOut)
			continue
		}
		n.cfg.Deliver(b[:DeliverRoom+len(ip)], DeliverRoom, hdr)
	}
}

// offloadOf turns the netstack's GSO options for ip into the virtio-net
// header a pod's TAP takes, offsets counted from the IP header. With host
// GSO every TCP packet the netstack sends has a partial checksum; one
// with more payload than the segment size is a superframe.
func offloadOf(ip packet.IPv4, gso stack.GSO) (packet.VirtioNetHdr, bool) {
	if gso.Type == stack.GSONone || !gso.NeedsCsum {
		return packet.VirtioNetHdr{}, true
	}
	if gso.Type != stack.GSOTCPv4 || ip.Protocol() != packet.ProtoTCP || ip.IsFragment() || len(ip.Payload()) < packet.TCPMinHeaderLen {
		return packet.VirtioNetHdr{}, false
	}
	ihl := ip.HeaderLen()
	hdr := packet.VirtioNetHdr{
		Flags:      packet.VirtioNetHdrFNeedsCsum,
		CsumStart:  uint16(ihl),
		CsumOffset: gso.CsumOffset,
	}
	thl := packet.TCP(ip.Payload()).DataOffset()
	if thl < packet.TCPMinHeaderLen || thl > len(ip.Payload()) || gso.MSS == 0 {
		return packet.VirtioNetHdr{}, false
	}
	if len(ip.Payload())-thl > int(gso.MSS) {
		hdr.GSOType = packet.GSOTCPv4
		hdr.GSOSize = gso.MSS
		hdr.HdrLen = uint16(ihl + thl)
	}
	return hdr, true
}
