package vswitch

import (
	"fmt"

	"golang.zx2c4.com/wireguard/tun"

	"podnet/internal/packet"
	"podnet/router"
)

// HostTUNName is the host port's device in the node's namespace.
const HostTUNName = "podnet0"

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

// routineHostReader forwards packets the node itself sends into the
// switch. AttachHost starts it; it exits when the TUN is closed (Close).
func (s *Switch) routineHostReader(h *port) {
	defer s.wg.Done()
	defer close(h.done)
	// wireguard-go reports ErrTooManySegments and the like per read; they
	// "should not cause reads to cease", and readLoop retries.
	s.readLoop(h, h.tun.BatchSize(),
		func(bufs [][]byte, sizes []int) (int, error) { return h.tun.Read(bufs, sizes, packet.Headroom) },
		func(f *forwarder, _ int, buf []byte, size int) { f.fromHost(h, buf, packet.Headroom, size) })
}

// fromHost handles one IPv4 packet buf[off:off+size] from the host TUN.
// wireguard-go has already split superframes and completed checksums.
func (f *forwarder) fromHost(h *port, buf []byte, off, size int) {
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
	if ip.TTL() <= 1 {
		h.c.drop(DropTTLExceeded)
		f.icmpToHost(h, ip, packet.ICMPTimeExceeded, packet.ICMPTTLExceeded)
		return
	}
	r, ok := f.rt.Lookup(ip.Dst())
	if !ok {
		h.c.drop(DropNoRoute)
		f.icmpToHost(h, ip, packet.ICMPDestUnreachable, packet.ICMPNetUnreachable)
		return
	}
	switch r.Kind {
	case router.KindLocalPod:
		eg := f.portAt(r.Port)
		if eg == nil {
			h.c.drop(DropPortGone)
			return
		}
		ip.DecrementTTL()
		f.toPodCoalesced(h, eg, buf, off, len(ip))
	case router.KindRemote:
		ip.DecrementTTL()
		if r.Encap == router.EncapVXLAN {
			f.toVXLAN(h, buf, off, len(ip), packet.VirtioNetHdr{}, r)
		} else {
			f.toRemote(h, buf, off, len(ip), packet.VirtioNetHdr{}, r.NextHop)
		}
	case router.KindBlackhole:
		h.c.drop(DropBlackhole)
	case router.KindHost:
		// The kernel routed it to us but it is for the node itself: a
		// route loop, not something to bounce back.
		h.c.drop(DropNoRoute)
	default:
		h.c.drop(DropRemoteUnsupported)
	}
}

// icmpToHost sends an ICMP error about ip back into the node's stack.
func (f *forwarder) icmpToHost(h *port, ip packet.IPv4, typ, code uint8) {
	n := packet.BuildICMPError(f.icmp[tunOffset:], ip, typ, code, 0, GatewayIP.As4(), 64)
	if n == 0 {
		return
	}
	f.icmpVec[0] = f.icmp[:tunOffset+n]
	if _, err := h.tun.Write(f.icmpVec, tunOffset); err == nil {
		h.c.icmpErrors.Add(1)
	}
	f.icmpVec[0] = nil
}
