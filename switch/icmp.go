package vswitch

import "podnet/internal/packet"

// icmpError answers ip, which arrived on in, with an ICMP error: the one
// place the switch builds them. The error goes back the way the sender
// is reached: the ingress's own egress (a pod's port, the host port), or
// the FIB (a sender behind a tunnel). BuildICMPError applies RFC 1812's
// rules (no errors about ICMP errors, fragments after the first,
// broadcast or multicast), so it may produce nothing.
func (f *forwarder) icmpError(in ingress, ip packet.IPv4, typ, code uint8, mtu uint16) {
	const l3 = packet.Headroom
	n := packet.BuildICMPError(f.icmp[l3:], ip, typ, code, mtu, in.icmpSource(), 64)
	if n == 0 {
		return
	}
	eg := in.reply()
	var h *hop
	if eg == nil {
		var ok bool
		if h, ok = f.fib.lookup(ip.Src()); !ok {
			return
		}
		if k := h.eg.kind(); k != egressTunnel && k != egressPod && k != egressHost {
			return
		}
		eg = h.eg
	}
	if f.dry != nil {
		f.dry.icmp(typ, code, mtu, eg)
		return
	}
	eg.send(f, in, packetRef{buf: f.icmp, ip: l3, n: n}, h)
	in.stats().icmpErrors.Add(1)
	// The scratch is reused by the next error: a lane must not hold it.
	f.flushLanes()
}
