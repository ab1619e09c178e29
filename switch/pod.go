package vswitch

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"podnet/internal/packet"
	"podnet/internal/queuedrops"
	"podnet/internal/turn"
	"podnet/router"
)

// PodDevice is a pod port's device: a TAP (package tap) in the daemon, an
// in-memory device in tests. Reads and writes follow wireguard-go's batch
// shape; with Offload every frame starts with a virtio-net header.
type PodDevice interface {
	Name() string
	Offload() bool
	// Read reads one or more frames into bufs[i][offset:] and their lengths
	// into sizes; it blocks until at least one is there.
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// WriteOne writes one frame.
	WriteOne(frame []byte) error
	Close() error
}

// pollable is a device that readers other than its own may read without
// waiting (reply polling): TryRead returns what is queued, or 0, or
// turn.ErrHeld while its own reader is at work. Read and TryRead return
// frames holding the turn set with SetTurn; the caller gives it back
// once it has forwarded them. tap.Device is one.
type pollable interface {
	SetTurn(*turn.Turn)
	TryRead(bufs [][]byte, sizes []int, offset int) (int, error)
}

// udpSegmenter is a device that takes GSO_UDP_L4 superframes on write
// (tap.Device on a kernel with USO): GRO merges datagrams toward it.
type udpSegmenter interface{ UDPSegmentation() bool }

// udpSuperframeReader is a device whose reads may be GSO_UDP_L4
// superframes (a pod's TAP on a kernel with USO: the pod's own
// UDP_SEGMENT sends, whole).
type udpSuperframeReader interface{ ReadsUDPSuperframes() bool }

// readsUDPGSO says whether dev is an offload device whose reads may be
// UDP superframes.
func readsUDPGSO(dev any, offload bool) bool {
	u, ok := dev.(udpSuperframeReader)
	return offload && ok && u.ReadsUDPSuperframes()
}

// takesUDPGSO says whether dev is an offload device that takes UDP
// superframes.
func takesUDPGSO(dev any, offload bool) bool {
	u, ok := dev.(udpSegmenter)
	return offload && ok && u.UDPSegmentation()
}

// PodPort describes a pod port to add.
type PodPort struct {
	Name string     // pod name, for people
	IP   netip.Addr // the pod's /32; frames from other sources are dropped
	MAC  packet.MAC // the pod's eth0 MAC: frames to the pod are addressed to it
	Dev  PodDevice  // open device; the switch reads it until RemovePort or Close
}

// podPort is a pod's attachment: an ingress (what the pod sends) and an
// egress (what routes to the pod deliver). Fields never change once the
// port is published; only the counters move.
type podPort struct {
	index   int
	name    string
	ip      netip.Addr
	ip4     [4]byte
	mac     packet.MAC
	dev     PodDevice
	offload bool // dev frames carry a virtio-net header
	uso     bool // dev takes GSO_UDP_L4 superframes
	readUSO bool // and its reads may be GSO_UDP_L4 superframes
	c       counters
	queue   *queuedrops.Counter // dev's kernel queue drops (queue-full)
	capt    atomic.Pointer[Capture]
	done    chan struct{} // closed when the reader exits

	// Reply polling (replies.go): poll is dev when other readers may poll
	// it, turn says who reads it now, and misses and quietUntil let
	// pollers leave alone a pod that does not answer quickly.
	poll       pollable
	classify   func(f *forwarder, i int, buf []byte, size int) // fromPod for this port, made once
	turn       turn.Turn
	misses     atomic.Int32
	quietUntil atomic.Int64 // unix nanoseconds
}

// AddPodPort starts forwarding for a pod and returns its port index, which
// local-pod routes refer to.
func (s *Switch) AddPodPort(pp PodPort) (int, error) {
	if !pp.IP.Is4() {
		return 0, fmt.Errorf("add port %s: pod IP %s is not IPv4", pp.Name, pp.IP)
	}
	if pp.Dev == nil {
		return 0, fmt.Errorf("add port %s: no device", pp.Name)
	}
	queue, qerr := queuedrops.Follow(pp.Dev)
	if qerr != nil {
		s.log.Warn("what the kernel drops before the switch reads it goes uncounted on this port", "pod", pp.Name, "err", qerr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := len(s.att.pods)
	for i, p := range s.att.pods {
		if p == nil {
			idx = i
			break
		}
	}
	p := &podPort{
		index: idx, name: pp.Name, ip: pp.IP, ip4: pp.IP.As4(),
		mac: pp.MAC, dev: pp.Dev, offload: pp.Dev.Offload(), uso: takesUDPGSO(pp.Dev, pp.Dev.Offload()),
		readUSO: readsUDPGSO(pp.Dev, pp.Dev.Offload()),
		queue:   queue,
		done:    make(chan struct{}),
	}
	p.classify = func(f *forwarder, _ int, buf []byte, size int) { f.fromPod(p, buf, packet.Headroom, size) }
	if pd, ok := pp.Dev.(pollable); ok {
		pd.SetTurn(&p.turn)
		p.poll = pd
	}
	// A new slice: readers may still hold the FIB compiled from the old one.
	next := make([]*podPort, max(len(s.att.pods), idx+1))
	copy(next, s.att.pods)
	next[idx] = p
	s.att.pods = next
	s.recompileLocked()
	s.wg.Add(1)
	go s.routinePodReader(p)
	s.log.Debug("port added", "port", idx, "pod", pp.Name, "ip", pp.IP, "dev", pp.Dev.Name())
	return idx, nil
}

// RemovePort stops forwarding for a pod port, closes its device, waits
// for its reader to exit and ends a capture on it. A persistent TAP stays in the kernel; the
// caller deletes it if the pod is gone.
func (s *Switch) RemovePort(idx int) error {
	s.mu.Lock()
	if idx < 0 || idx >= len(s.att.pods) || s.att.pods[idx] == nil {
		s.mu.Unlock()
		return fmt.Errorf("remove port %d: no such port", idx)
	}
	p := s.att.pods[idx]
	next := make([]*podPort, len(s.att.pods))
	copy(next, s.att.pods)
	next[idx] = nil
	for len(next) > 0 && next[len(next)-1] == nil {
		next = next[:len(next)-1]
	}
	s.att.pods = next
	s.recompileLocked()
	s.mu.Unlock()
	err := p.dev.Close()
	<-p.done
	endCapture(&p.capt, fmt.Sprintf("pod %s was removed", p.name))
	return err
}

// routinePodReader forwards frames a pod sends. AddPodPort starts it; it
// exits when the port's device is closed (RemovePort, Close) and then
// closes p.done.
func (s *Switch) routinePodReader(p *podPort) {
	defer s.wg.Done()
	defer close(p.done)
	s.readLoop(p.name, &p.c, min(podBatchStart, s.podBatch), s.podBatch, &p.capt, p.skip(), LinkEthernet, p,
		func(bufs [][]byte, sizes []int) (int, error) { return p.dev.Read(bufs, sizes, packet.Headroom) },
		p.classify)
}

// skip is how many bytes precede the Ethernet header of a frame read.
func (p *podPort) skip() int {
	if p.offload {
		return vnetLen
	}
	return 0
}

// fromPod classifies one frame read from pod port in: buf[off:off+size] is
// the frame, with its virtio header first when in.offload.
func (f *forwarder) fromPod(in *podPort, buf []byte, off, size int) {
	var hdr packet.VirtioNetHdr
	l2 := off
	if in.offload {
		if size < vnetLen || hdr.Decode(buf[off:]) != nil {
			in.c.drop(DropBadVirtioHeader)
			return
		}
		l2 += vnetLen
	}
	end := off + size
	if end-l2 < ethLen {
		in.c.drop(DropTooShort)
		return
	}
	eth := packet.Ethernet(buf[l2:end])
	switch eth.EtherType() {
	case packet.EtherTypeARP:
		f.arp(in, eth)
		return
	case packet.EtherTypeIPv4:
	case packet.EtherTypeIPv6:
		in.c.drop(DropIPv6)
		return
	default:
		in.c.drop(DropUnknownEtherType)
		return
	}
	ip, perr := packet.ParseIPv4Frame(eth)
	if perr != packet.ParseOK {
		in.c.drop(ipDropReason(perr))
		return
	}
	if !offloadValid(&in.c, hdr, ethLen, ip, in.readUSO) {
		return
	}
	if ip.SrcBytes() != in.ip4 {
		in.c.drop(DropSpoofedSource)
		return
	}
	f.forward(in, packetRef{buf: buf, ip: l2 + ethLen, n: len(ip), gso: toL3(hdr)})
}

// offloadValid checks what a kernel's virtio header asks of the switch for
// ip, with l2 bytes of link header counted in its offsets: a superframe
// must be TCP/IPv4 (counted in gsoFrames), or UDP/IPv4 where the port
// reads UDP superframes (udp), and a partial checksum must lie in the
// transport header. A refusal is counted on c.
func offloadValid(c *counters, hdr packet.VirtioNetHdr, l2 int, ip packet.IPv4, udp bool) bool {
	if hdr.GSOType != packet.GSONone {
		c.gsoFrames.Add(1)
		ok := false
		switch hdr.GSOType &^ packet.GSOECN {
		case packet.GSOTCPv4:
			ok = ip.Protocol() == packet.ProtoTCP
		case packet.GSOUDPL4:
			ok = udp && hdr.GSOType == packet.GSOUDPL4 && udpSuperframeValid(hdr, l2, ip)
		}
		if !ok {
			c.drop(DropBadGSO)
			return false
		}
	}
	if !csumInTransport(hdr, l2, ip) {
		c.drop(DropBadVirtioHeader)
		return false
	}
	return true
}

// maxUDPSuperframeSegments is the most datagrams a UDP superframe may
// hold: the kernel's UDP_MAX_SEGMENTS (128 since Linux 6.9, 64 before),
// which no UDP_SEGMENT send exceeds.
const maxUDPSuperframeSegments = 128

// udpSuperframeValid checks a GSO_UDP_L4 superframe, its header's
// offsets counted from l2 bytes before ip, as a kernel makes one
// (packet.CheckUDPSuperframe, with the partial checksum every kernel
// asks for) of at most maxUDPSuperframeSegments datagrams. A pod writing
// its own virtio headers (a VM) gets nothing else through: a one-byte
// segment size would have one read cut into 65,000 datagrams.
func udpSuperframeValid(hdr packet.VirtioNetHdr, l2 int, ip packet.IPv4) bool {
	if hdr.Flags&packet.VirtioNetHdrFNeedsCsum == 0 || int(hdr.CsumStart) < l2 {
		return false
	}
	hdr.CsumStart -= uint16(l2)
	if packet.CheckUDPSuperframe(ip, hdr) != nil {
		return false
	}
	payload := len(ip) - ip.HeaderLen() - packet.UDPHeaderLen
	return (payload+int(hdr.GSOSize)-1)/int(hdr.GSOSize) <= maxUDPSuperframeSegments
}

// csumInTransport says whether a virtio header's partial checksum (if it
// asks for one) lies past the IPv4 header and inside the packet, l2 bytes
// of link header counted in its offsets. A kernel never writes anything
// else; a header that does would have the checksum written into the IP
// header by whoever completes it (found by FuzzForward).
func csumInTransport(h packet.VirtioNetHdr, l2 int, ip packet.IPv4) bool {
	if h.Flags&packet.VirtioNetHdrFNeedsCsum == 0 {
		return true
	}
	start := int(h.CsumStart) - l2
	field := start + int(h.CsumOffset)
	return start >= ip.HeaderLen() && h.CsumOffset%2 == 0 && field+2 <= len(ip)
}

func ipDropReason(e packet.ParseError) DropReason {
	switch e {
	case packet.ErrBadVersion:
		return DropBadIPVersion
	case packet.ErrBadIHL:
		return DropBadIHL
	case packet.ErrBadTotalLength:
		return DropBadTotalLength
	default:
		return DropTooShort
	}
}

// arp answers ARP requests from a pod with the gateway MAC, whatever
// address they ask for (proxy ARP, as Calico does on its veths): every
// destination is reached through the switch. Requests for the pod's own
// address (duplicate address detection) get no answer.
func (f *forwarder) arp(in *podPort, eth packet.Ethernet) {
	a, perr := packet.ParseARPFrame(eth)
	if perr != packet.ParseOK {
		in.c.drop(DropBadARP)
		return
	}
	if a.Op() != packet.ARPRequest || a.TargetIP() == in.ip {
		return // replies and probes need nothing from us
	}
	start := packet.Headroom
	l2 := start
	if in.offload {
		l2 += vnetLen
		clear(f.icmp[start:l2])
	}
	n := packet.BuildARPReply(f.icmp[l2:], a, packet.GatewayMAC)
	if n == 0 {
		return
	}
	if err := in.dev.WriteOne(f.icmp[start : l2+n]); err == nil {
		in.c.arpReplies.Add(1)
		in.c.txFrames.Add(1)
		in.c.txBytes.Add(uint64(l2 + n - start))
	}
}

// A pod reaches every egress: other pods, the host, tunnels, NAT.
func (p *podPort) stats() *counters                                      { return &p.c }
func (p *podPort) mayReach(egressKind, *router.Route) (bool, DropReason) { return true, 0 }
func (p *podPort) segmented() bool                                       { return false }
func (p *podPort) reply() egress                                         { return p }
func (p *podPort) icmpSource() [4]byte                                   { return GatewayIP.As4() }

func (p *podPort) kind() egressKind { return egressPod }

func (p *podPort) caps() egressCaps {
	return egressCaps{superframes: p.offload, partialChecksums: p.offload, coalesce: p.offload, coalesceUDP: p.uso}
}

// send frames p for the pod in the headroom before the IP header (a
// virtio header when the TAP takes one, Ethernet from the gateway MAC to
// the pod's) and writes it: the one place pod frames are built.
func (p *podPort) send(f *forwarder, in ingress, pkt packetRef, _ *hop) {
	l2 := pkt.ip - ethLen
	start := l2
	eth := packet.Ethernet(pkt.buf[l2:pkt.ip])
	eth.SetDst(p.mac)
	eth.SetSrc(packet.GatewayMAC)
	eth.SetEtherType(packet.EtherTypeIPv4)
	if p.offload {
		start -= vnetLen
		if pkt.gso == (packet.VirtioNetHdr{}) {
			clear(pkt.buf[start : start+vnetLen])
		} else {
			toL2(pkt.gso).Encode(pkt.buf[start : start+vnetLen])
		}
	}
	end := pkt.ip + pkt.n
	if err := p.dev.WriteOne(pkt.buf[start:end]); err != nil {
		in.stats().drop(DropEgressError)
		return
	}
	p.c.txFrames.Add(1)
	p.c.txBytes.Add(uint64(end - l2))
	if cp := p.capt.Load(); cp != nil {
		cp.put(true, LinkEthernet, pkt.buf[l2:end])
	}
	if p.poll != nil && f != nil { // Inject sends without a reader
		f.replyFrom = p
	}
}

func (p *podPort) portStats() PortStats {
	s := p.c.snapshot()
	s.Index, s.Name, s.Kind, s.Device, s.IP, s.Offload = p.index, p.name, "pod", p.dev.Name(), p.ip.String(), p.offload
	return s
}
