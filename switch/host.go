package vswitch

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vishvananda/netlink"

	"podnet/internal/packet"
	"podnet/internal/queuedrops"
	"podnet/router"
	"podnet/switch/tap"
)

// HostTUNName is the host port's device in the node's namespace.
const HostTUNName = "podnet0"

// tunOffset is the headroom hostLane leaves in front of each packet it
// hands the host device: the offload TUN (hostTUN) finds there the virtio
// header hostPort.send wrote; other devices may use it as they like.
const tunOffset = 16

// OpenHostTUN creates the host port's TUN in the calling thread's network
// namespace, with virtio-net headers and TSO and checksum offloads (package
// tap), and sets its MTU. Superframes cross it whole both ways: the node's
// stack hands us its TSO packets unsplit, and takes ours as they are. On a
// kernel with USO that holds for UDP superframes too: what the node's own
// sockets send with UDP_SEGMENT, and what it forwards to pods from other
// nodes whole (a routed pod's burst that the other node's switch merged),
// is read once per burst, and shape cuts it for egresses that cannot take
// it.
func OpenHostTUN(name string, mtu int) (HostDevice, error) {
	d, err := tap.Open(tap.Config{Name: name, Offload: true, L3: true, ReadUDPSuperframes: true})
	if err != nil {
		return nil, fmt.Errorf("create host tun %s: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.LinkSetMTU(l, mtu)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("set host tun %s MTU %d: %w", name, mtu, err)
	}
	return &hostTUN{d: d}, nil
}

// HostDevice is the host port's device. Packets are IPv4, no link
// header; Write takes bufs[i][offset:] and may use the bytes before
// offset. A device whose Offload reports true (hostTUN) reads and writes
// a virtio-net header in front of each packet, and superframes with
// partial checksums; others (the tests' in-memory devices) read complete
// packets and take complete packets.
type HostDevice interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Name() (string, error)
	Close() error
}

// offloader is a HostDevice with virtio-net headers.
type offloader interface{ Offload() bool }

// hostTUN is the offload TUN as a HostDevice.
type hostTUN struct{ d *tap.Device }

func (t *hostTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.d.Read(bufs, sizes, offset)
}

// Write writes each packet with the virtio header hostPort.send put in
// the vnetLen bytes before offset.
func (t *hostTUN) Write(bufs [][]byte, offset int) (int, error) {
	return t.d.Write(bufs, offset-vnetLen)
}

func (t *hostTUN) BatchSize() int        { return hostTUNBatch }
func (t *hostTUN) Name() (string, error) { return t.d.Name(), nil }
func (t *hostTUN) Close() error          { return t.d.Close() }
func (t *hostTUN) Offload() bool         { return true }
func (t *hostTUN) UDPSegmentation() bool { return t.d.UDPSegmentation() }

func (t *hostTUN) QueueDrops() (uint64, error) { return t.d.QueueDrops() }

// hostTUNBatch is how many packets the host reader takes per wake-up.
// The node forwards for every pod at once (routed traffic from other
// nodes comes in here): a larger batch than a pod's lets GRO merge more
// of a burst, for 2 MiB of buffers once.
const hostTUNBatch = 32

// hostPort joins the node itself to the switch: an ingress for what the
// node sends to pods and tunnels, an egress (batched) for what routes of
// kind host deliver.
type hostPort struct {
	dev     HostDevice
	offload bool // dev reads and writes virtio-net headers
	uso     bool // dev takes GSO_UDP_L4 superframes, and may read them
	lane    int
	c       counters
	queue   *queuedrops.Counter // dev's kernel queue drops (queue-full)
	capt    atomic.Pointer[Capture]
	done    chan struct{}
}

// AttachHost makes dev (a TUN in the node's namespace, see OpenHostTUN) the
// host port and starts its reader.
func (s *Switch) AttachHost(dev HostDevice) error {
	queue, qerr := queuedrops.Follow(dev)
	if qerr != nil {
		s.log.Warn("what the kernel drops before the switch reads it goes uncounted on the host port", "err", qerr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.att.host != nil {
		return errors.New("attach host: host port already attached")
	}
	h := &hostPort{dev: dev, lane: s.newLaneIDLocked(), queue: queue, done: make(chan struct{})}
	if o, ok := dev.(offloader); ok {
		h.offload = o.Offload()
	}
	h.uso = takesUDPGSO(dev, h.offload)
	s.att.host = h
	s.host.Store(h)
	s.recompileLocked()
	s.wg.Add(1)
	go s.routineHostReader(h)
	return nil
}

// UDPSuperframes reports whether the host port takes UDP superframes
// (GSO_UDP_L4), which tells whether this kernel has USO: pod TAPs opened
// with offloads take them too.
func (s *Switch) UDPSuperframes() bool {
	h := s.host.Load()
	return h != nil && h.uso
}

// routineHostReader forwards packets the node itself sends into the
// switch. AttachHost starts it; it exits when the TUN is closed (Close).
func (s *Switch) routineHostReader(h *hostPort) {
	defer s.wg.Done()
	defer close(h.done)
	skip := 0
	if h.offload {
		skip = vnetLen
	}
	s.readLoop("host", &h.c, h.dev.BatchSize(), h.dev.BatchSize(), &h.capt, skip, LinkIPv4, nil,
		func(bufs [][]byte, sizes []int) (int, error) { return h.dev.Read(bufs, sizes, packet.Headroom) },
		func(f *forwarder, _ int, buf []byte, size int) { f.fromHost(h, buf, packet.Headroom, size) })
}

// fromHost classifies one IPv4 packet buf[off:off+size] from the host TUN
// (after its virtio-net header when h.offload).
func (f *forwarder) fromHost(h *hostPort, buf []byte, off, size int) {
	var hdr packet.VirtioNetHdr
	if h.offload {
		if size < vnetLen || hdr.Decode(buf[off:]) != nil {
			h.c.drop(DropBadVirtioHeader)
			return
		}
		off += vnetLen
		size -= vnetLen
	}
	pkt := buf[off : off+size]
	if size < 1 || pkt[0]>>4 != 4 {
		if size >= 1 && pkt[0]>>4 == 6 {
			h.c.drop(DropIPv6)
		} else {
			h.c.drop(DropBadIPVersion)
		}
		return
	}
	ip := packet.IPv4(pkt)
	if perr := ip.Validate(); perr != packet.ParseOK {
		h.c.drop(ipDropReason(perr))
		return
	}
	ip = ip[:ip.TotalLen()]
	if !offloadValid(&h.c, hdr, 0, ip, h.uso) {
		return
	}
	if !containsAddr(f.fib.pools, ip.Src()) && f.dry == nil {
		// From outside the cluster, routed to us by the node: remember the
		// flow so the pod's answers go back the same way.
		f.s.inbound.record(ip, f.now)
	}
	f.forward(h, packetRef{buf: buf, ip: off, n: len(ip), gso: hdr})
}

func (h *hostPort) stats() *counters { return &h.c }

// mayReach: the node reaches pods and tunnels. A packet the kernel routed
// to us that is for the node itself is a route loop, not something to
// bounce back; NAT is for pods (the node has its own address).
func (h *hostPort) mayReach(k egressKind, _ *router.Route) (bool, DropReason) {
	switch k {
	case egressHost:
		return false, DropNoRoute
	case egressNAT:
		return false, DropRemoteUnsupported
	}
	return true, 0
}
func (h *hostPort) segmented() bool     { return true }
func (h *hostPort) reply() egress       { return h }
func (h *hostPort) icmpSource() [4]byte { return GatewayIP.As4() }

func (h *hostPort) kind() egressKind { return egressHost }

// caps: the offload TUN takes superframes and partial checksums as they
// are, so segments from tunnels and datagrams are merged for it as for
// pods; other host devices take complete packets.
func (h *hostPort) caps() egressCaps {
	return egressCaps{superframes: h.offload, partialChecksums: h.offload, coalesce: h.offload, coalesceUDP: h.uso}
}

func (h *hostPort) laneID() int { return h.lane }

func (h *hostPort) newLane() lane {
	return &hostLane{h: h, bufs: make([][]byte, 0, laneMax)}
}

func (h *hostPort) send(f *forwarder, _ ingress, p packetRef, _ *hop) {
	l := f.laneOf(h).(*hostLane)
	if len(l.bufs) == 0 {
		f.markDirty(l)
	} else if len(l.bufs) == cap(l.bufs) {
		l.flush()
		f.markDirty(l)
	}
	if h.offload {
		p.gso.Encode(p.buf[p.ip-vnetLen : p.ip]) // zero for a complete packet
	}
	l.bufs = append(l.bufs, p.buf[p.ip-tunOffset:p.ip+p.n])
	if cp := h.capt.Load(); cp != nil {
		cp.put(true, LinkIPv4, p.buf[p.ip:p.ip+p.n])
	}
}

// hostLane holds one reader's packets for the TUN, written out at the
// end of its batch.
type hostLane struct {
	h    *hostPort
	bufs [][]byte
	one  [1][]byte // flush's argument to the device, kept to not allocate
}

func (l *hostLane) flush() {
	if len(l.bufs) == 0 {
		return
	}
	// One frame per call (a TUN takes one per write(2) anyway), so that a
	// frame the kernel refuses is counted as such and the others as sent.
	var frames, bytes int
	for _, b := range l.bufs {
		l.one[0] = b
		if n, err := l.h.dev.Write(l.one[:], tunOffset); n == 1 && err == nil {
			frames++
			bytes += len(b) - tunOffset
		} else {
			l.h.c.drop(DropEgressError)
		}
	}
	l.one[0] = nil
	l.h.c.txFrames.Add(uint64(frames))
	l.h.c.txBytes.Add(uint64(bytes))
	clear(l.bufs)
	l.bufs = l.bufs[:0]
}

func (h *hostPort) portStats() PortStats {
	s := h.c.snapshot()
	s.Index, s.Name, s.Kind, s.Device, s.Offload = -1, "host", "host", HostTUNName, h.offload
	if n, err := h.dev.Name(); err == nil {
		s.Device = n
	}
	return s
}
