package vswitch

import (
	"errors"
	"fmt"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"podnet/internal/packet"
)

// HostTUNName is the host port's device in the node's namespace.
const HostTUNName = "podnet0"

// tunOffset is where IP packets start in buffers handed to the host TUN:
// wireguard-go's tun writes its virtio header in the bytes before them.
const tunOffset = 16

// OpenHostTUN creates the host port's TUN in the calling thread's network
// namespace with virtio offloads on (wireguard-go splits the superframes
// the node's stack sends and coalesces what we write).
func OpenHostTUN(name string, mtu int) (tun.Device, error) {
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create host tun %s: %w", name, err)
	}
	return dev, nil
}

// HostDevice is the host port's device: wireguard-go's tun.Device in the
// daemon (which has more methods), an in-memory device in tests. Packets
// are plain IPv4, no link header; Read has already split superframes and
// completed checksums, Write may coalesce what it is given.
type HostDevice interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Name() (string, error)
	Close() error
}

// hostPort joins the node itself to the switch: an ingress for what the
// node sends to pods and tunnels, an egress (batched) for what routes of
// kind host deliver.
type hostPort struct {
	dev  HostDevice
	lane int
	c    counters
	capt atomic.Pointer[Capture]
	done chan struct{}
}

// AttachHost makes dev (a TUN in the node's namespace, see OpenHostTUN) the
// host port and starts its reader.
func (s *Switch) AttachHost(dev HostDevice) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.att.host != nil {
		return errors.New("attach host: host port already attached")
	}
	h := &hostPort{dev: dev, lane: s.newLaneIDLocked(), done: make(chan struct{})}
	s.att.host = h
	s.host.Store(h)
	s.recompileLocked()
	s.wg.Add(1)
	go s.routineHostReader(h)
	return nil
}

// routineHostReader forwards packets the node itself sends into the
// switch. AttachHost starts it; it exits when the TUN is closed (Close).
func (s *Switch) routineHostReader(h *hostPort) {
	defer s.wg.Done()
	defer close(h.done)
	// wireguard-go reports ErrTooManySegments and the like per read; they
	// "should not cause reads to cease", and readLoop retries.
	s.readLoop("host", &h.c, h.dev.BatchSize(), &h.capt, 0, LinkIPv4, nil,
		func(bufs [][]byte, sizes []int) (int, error) { return h.dev.Read(bufs, sizes, packet.Headroom) },
		func(f *forwarder, _ int, buf []byte, size int) { f.fromHost(h, buf, packet.Headroom, size) })
}

// fromHost classifies one IPv4 packet buf[off:off+size] from the host TUN.
func (f *forwarder) fromHost(h *hostPort, buf []byte, off, size int) {
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
	if !containsAddr(f.fib.pools, ip.Src()) && f.dry == nil {
		// From outside the cluster, routed to us by the node: remember the
		// flow so the pod's answers go back the same way.
		f.s.inbound.record(ip, f.now)
	}
	f.forward(h, packetRef{buf: buf, ip: off, n: len(ip)})
}

func (h *hostPort) stats() *counters { return &h.c }

// mayReach: the node reaches pods and tunnels. A packet the kernel routed
// to us that is for the node itself is a route loop, not something to
// bounce back; NAT is for pods (the node has its own address).
func (h *hostPort) mayReach(k egressKind) (bool, DropReason) {
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

// caps: wireguard-go's Write takes complete packets and merges them itself.
func (h *hostPort) caps() egressCaps { return egressCaps{} }

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
	l.bufs = append(l.bufs, p.buf[p.ip-tunOffset:p.ip+p.n])
	if cp := h.capt.Load(); cp != nil {
		cp.put(true, LinkIPv4, p.buf[p.ip:p.ip+p.n])
	}
}

// hostLane holds one reader's packets for the TUN, written in one call.
type hostLane struct {
	h    *hostPort
	bufs [][]byte
}

func (l *hostLane) flush() {
	if len(l.bufs) == 0 {
		return
	}
	var bytes int
	for _, b := range l.bufs {
		bytes += len(b) - tunOffset
	}
	if _, err := l.h.dev.Write(l.bufs, tunOffset); err != nil {
		l.h.c.drop(DropEgressError)
	} else {
		l.h.c.txFrames.Add(uint64(len(l.bufs)))
		l.h.c.txBytes.Add(uint64(bytes))
	}
	clear(l.bufs)
	l.bufs = l.bufs[:0]
}

func (h *hostPort) portStats() PortStats {
	s := h.c.snapshot()
	s.Index, s.Name, s.Kind, s.Device, s.Offload = -1, "host", "host", HostTUNName, true
	if n, err := h.dev.Name(); err == nil {
		s.Device = n
	}
	return s
}
