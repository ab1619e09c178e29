package vswitch

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"podnet/internal/packet"
)

// inboundFlows remembers connections that came into a pod from outside
// the cluster through the node (a router that learned the pod's block, a
// host with a route to it). A pod's answer to one of them must go back
// routed, through the node, not into NAT outgoing: NAT would give it the
// node's address and the other end would never match it to its
// connection. NAT is for flows a pod opened.
//
// It is a fixed table of atomic slots, each holding a fingerprint of the
// flow and when it was last seen: the host reader records without locks
// or allocation, pod readers look up the same way. Two flows that share
// a slot evict each other; with inboundSlots slots that is rare, and the
// loser's answers fall back to NAT as before.
type inboundFlows struct {
	slots [inboundSlots]atomic.Uint64
}

const (
	inboundSlots = 1 << 16
	// inboundIdle is how long a flow is remembered without packets in
	// either direction.
	inboundIdle = 5 * time.Minute
)

// flowKey hashes a flow as the pod sees it: (pod address and port,
// remote address and port, protocol). ok is false for packets that carry
// no ports (other than ICMP echo, keyed by its identifier).
func flowKey(ip packet.IPv4, podIsSrc bool) (uint64, bool) {
	proto := ip.Protocol()
	p := ip.Payload()
	var podPort, remotePort uint16
	switch proto {
	case packet.ProtoTCP, packet.ProtoUDP:
		if len(p) < 4 || ip.IsFragment() {
			return 0, false
		}
		src, dst := binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
		podPort, remotePort = dst, src
		if podIsSrc {
			podPort, remotePort = src, dst
		}
	case packet.ProtoICMP:
		// Echo request in, echo reply out: the identifier ties them.
		if len(p) < 8 || (p[0] != 8 && p[0] != 0) {
			return 0, false
		}
		podPort = binary.BigEndian.Uint16(p[4:])
	default:
		return 0, false
	}
	pod, remote := ip.DstBytes(), ip.SrcBytes()
	if podIsSrc {
		pod, remote = remote, pod
	}
	h := uint64(binary.BigEndian.Uint32(pod[:]))<<32 | uint64(binary.BigEndian.Uint32(remote[:]))
	h ^= (uint64(podPort)<<16 | uint64(remotePort) | uint64(proto)<<32) * 0x9e3779b97f4a7c15
	return mix64(h), true
}

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// slot layout: high 32 bits the fingerprint, low 32 bits seconds since
// the epoch when last seen.
func (t *inboundFlows) slot(h uint64) (*atomic.Uint64, uint64) {
	return &t.slots[h%inboundSlots], h >> 32
}

// record notes an inbound packet ip (remote → pod).
func (t *inboundFlows) record(ip packet.IPv4, now time.Time) {
	h, ok := flowKey(ip, false)
	if !ok {
		return
	}
	s, fp := t.slot(h)
	s.Store(fp<<32 | uint64(uint32(now.Unix())))
}

// isReply says whether ip (pod → remote) answers a recorded inbound flow,
// and with refresh keeps the flow alive (a trace only asks).
func (t *inboundFlows) isReply(ip packet.IPv4, now time.Time, refresh bool) bool {
	h, ok := flowKey(ip, true)
	if !ok {
		return false
	}
	s, fp := t.slot(h)
	v := s.Load()
	if v>>32 != fp || v == 0 {
		return false
	}
	if now.Sub(time.Unix(int64(uint32(v)), 0)) > inboundIdle {
		return false
	}
	if refresh {
		s.Store(fp<<32 | uint64(uint32(now.Unix())))
	}
	return true
}
