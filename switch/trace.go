package vswitch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// Trace answers "what would this switch do with this packet?" by building
// the packet and running it through the same classify and forward code
// the readers run, with a forwarder that records instead of writing and
// ingress stand-ins whose counters are its own. So a trace cannot say
// "delivered" where the data path drops, or the other way round.

// TraceQuery describes one packet.
type TraceQuery struct {
	// From is where the packet enters: a pod's name, "host", or a tunnel
	// ("ipip", "vxlan"). Empty: the pod whose address is Src, else the host.
	From string `json:"from,omitempty"`
	// Node is the sending node's underlay address when From is a tunnel.
	Node netip.Addr `json:"node,omitzero"`
	Src  netip.Addr `json:"src"`
	Dst  netip.Addr `json:"dst"`
	// Proto is "icmp" (an echo request, the default), "tcp" or "udp".
	Proto string `json:"proto,omitempty"`
	Port  uint16 `json:"port,omitempty"`
	// Size is the IPv4 total length; 0 means 84 (a default ping).
	Size int   `json:"size,omitempty"`
	TTL  uint8 `json:"ttl,omitempty"` // 0 means 64
	DF   bool  `json:"df,omitempty"`
	// ECN is the packet's ECN field: "not-ect" (the default), "ect0",
	// "ect1" or "ce".
	ECN string `json:"ecn,omitempty"`
	// OuterECN is, when From is a tunnel, the ECN field of the outer
	// header on arrival, as a router on the way may have changed it
	// (names as for ECN). Empty: what the sending node wrote
	// (packet.TunnelECN of the packet's own).
	OuterECN string `json:"outerEcn,omitempty"`
}

// ecnNames are the ECN codepoints as TraceQuery names them.
var ecnNames = [4]string{packet.ECNNotECT: "not-ect", packet.ECNECT1: "ect1", packet.ECNECT0: "ect0", packet.ECNCE: "ce"}

// ParseECN reads an ECN codepoint by the name TraceQuery gives it.
func ParseECN(s string) (uint8, bool) {
	for v, name := range ecnNames {
		if s == name {
			return uint8(v), true
		}
	}
	return 0, false
}

// parseECN is ParseECN for query field field, with "" meaning def.
func parseECN(field, s string, def uint8) (uint8, error) {
	if s == "" {
		return def, nil
	}
	if v, ok := ParseECN(s); ok {
		return v, nil
	}
	return 0, fmt.Errorf("trace: %s %q: want not-ect, ect0, ect1 or ce", field, s)
}

// TraceStep is one decision on the way.
type TraceStep struct {
	Check  string `json:"check"`
	Result string `json:"result"`
}

// TraceResult is what the switch would do.
type TraceResult struct {
	Ingress string      `json:"ingress"`
	Steps   []TraceStep `json:"steps"`
	// Route is the FIB entry that matched, if any.
	Route *router.Route `json:"route,omitempty"`
	// Verdict: "deliver" (to a local pod), "host", "encapsulate", "nat"
	// or "drop".
	Verdict string `json:"verdict"`
	// Drop is the reason counted when the verdict is drop.
	Drop string `json:"drop,omitempty"`
	// ICMP is the error sent back to the sender, if any.
	ICMP string `json:"icmp,omitempty"`
	// Egress names where the packet leaves: a pod, podnet0, a tunnel.
	Egress string `json:"egress,omitempty"`
	// Outer describes the encapsulation headers for a tunnel egress.
	Outer string `json:"outer,omitempty"`
	// NextHop is the node the packet is encapsulated to.
	NextHop netip.Addr `json:"nextHop,omitzero"`
	// Packets is how many packets leave (more than 1: segmented).
	Packets int   `json:"packets,omitempty"`
	TTLOut  uint8 `json:"ttlOut,omitempty"`
}

// traceRecorder collects what a tracing forwarder would send.
type traceRecorder struct {
	hop     *hop
	packets int
	ttl     uint8
	icmpOut string
}

func (r *traceRecorder) sent(h *hop, p packetRef) {
	r.hop = h
	r.packets++
	r.ttl = p.ipv4().TTL()
}

func (r *traceRecorder) icmp(typ, code uint8, mtu uint16, _ egress) {
	r.icmpOut = icmpName(typ, code, mtu)
}

func icmpName(typ, code uint8, mtu uint16) string {
	switch {
	case typ == packet.ICMPTimeExceeded:
		return "time exceeded (TTL)"
	case typ == packet.ICMPDestUnreachable && code == packet.ICMPNetUnreachable:
		return "destination net unreachable"
	case typ == packet.ICMPDestUnreachable && code == packet.ICMPFragmentationNeeded:
		return fmt.Sprintf("fragmentation needed, mtu %d", mtu)
	case typ == packet.ICMPDestUnreachable && code == packet.ICMPAdminProhibited:
		return "communication administratively prohibited"
	}
	return fmt.Sprintf("type %d code %d", typ, code)
}

// Trace runs q through the switch's current tables without sending
// anything or moving any counter.
func (s *Switch) Trace(q TraceQuery) (TraceResult, error) {
	if !q.Src.Is4() || !q.Dst.Is4() {
		return TraceResult{}, errors.New("trace: source and destination must be IPv4 addresses")
	}
	buf, n, err := buildTracePacket(q)
	if err != nil {
		return TraceResult{}, err
	}
	f := newForwarder(s)
	rec := &traceRecorder{}
	f.dry = rec
	f.begin()
	defer func() { f.fib, f.nodes = nil, nil }()

	res := TraceResult{}
	var c *counters
	s.mu.Lock()
	pod, host, tun, err := s.traceIngressLocked(q)
	s.mu.Unlock()
	if err != nil {
		return TraceResult{}, err
	}
	ip := packet.IPv4(buf[packet.Headroom : packet.Headroom+n])
	ttlIn := ip.TTL()
	switch {
	case pod != nil:
		shadow := &podPort{index: pod.index, name: pod.name, ip: pod.ip, ip4: pod.ip4, mac: pod.mac, offload: false}
		c = &shadow.c
		res.Ingress = fmt.Sprintf("pod %s (port %d, %s)", pod.name, pod.index, pod.dev.Name())
		// The pod's frame: Ethernet to the gateway in front of the packet.
		l2 := packet.Headroom - ethLen
		eth := packet.Ethernet(buf[l2:])
		eth.SetDst(packet.GatewayMAC)
		eth.SetSrc(pod.mac)
		eth.SetEtherType(packet.EtherTypeIPv4)
		res.Steps = append(res.Steps, TraceStep{"anti-spoofing", fmt.Sprintf("source %s, pod %s's address is %s", q.Src, pod.name, pod.ip)})
		f.fromPod(shadow, buf, l2, n+ethLen)
	case host != nil:
		shadow := &hostPort{dev: host.dev}
		c = &shadow.c
		res.Ingress = "host " + HostTUNName + " (the node's own stack)"
		f.fromHost(shadow, buf, packet.Headroom, n)
	default:
		shadow := &tunnelPort{t: tun.t, mtu: tun.mtu, icmpSrc: tun.icmpSrc, maxInner: tun.maxInner}
		c = &shadow.c
		res.Ingress = fmt.Sprintf("tunnel %s from node %s", tun.t.Device(), q.Node)
		known := "yes"
		if !f.nodes[q.Node] {
			known = "no: not in the node set"
		}
		res.Steps = append(res.Steps, TraceStep{"sender is a known node", known})
		outer, err := parseECN("outer ECN", q.OuterECN, packet.TunnelECN(ip.TOS()))
		if err != nil {
			return TraceResult{}, err
		}
		inner := ip.TOS() & packet.ECNMask
		f.fromNode(shadow, q.Node, outer, packetRef{buf: buf, ip: packet.Headroom, n: n})
		if f.nodes[q.Node] {
			res.Steps = append(res.Steps, TraceStep{"ECN (RFC 6040)", ecnStep(outer, inner, ip.TOS()&packet.ECNMask)})
		}
	}
	res.Steps = append(res.Steps, TraceStep{"TTL", fmt.Sprintf("%d on arrival", ttlIn)})
	if h, ok := f.fib.lookup(q.Dst); ok {
		r := *h.r
		res.Route = &r
		src := r.Source
		if src == "" {
			src = "local"
		}
		res.Steps = append(res.Steps, TraceStep{"route", fmt.Sprintf("%s (from %s)", r, src)})
	} else {
		res.Steps = append(res.Steps, TraceStep{"route", "none"})
	}
	res.ICMP = rec.icmpOut
	for r := DropReason(0); r < numDropReasons; r++ {
		if c.drops[r].Load() > 0 {
			res.Verdict, res.Drop = "drop", r.String()
			res.Steps = append(res.Steps, TraceStep{"dropped", r.String() + ": " + r.Explain()})
			return res, nil
		}
	}
	if rec.hop == nil {
		// Accepted but not forwarded: an ARP answer, or nothing to do.
		res.Verdict = "none"
		return res, nil
	}
	if d, ok := rec.hop.eg.(*dropEgress); ok {
		res.Verdict, res.Drop = "drop", d.reason.String()
		res.Steps = append(res.Steps, TraceStep{"dropped", d.reason.String() + ": " + d.reason.Explain()})
		return res, nil
	}
	res.Packets, res.TTLOut = rec.packets, rec.ttl
	res.Steps = append(res.Steps, TraceStep{"TTL", fmt.Sprintf("%d → %d", ttlIn, rec.ttl)})
	if res.Packets > 1 {
		res.Steps = append(res.Steps, TraceStep{"segmented", fmt.Sprintf("into %d packets for the egress", res.Packets)})
	}
	switch eg := rec.hop.eg.(type) {
	case *podPort:
		res.Verdict, res.Egress = "deliver", fmt.Sprintf("pod %s (port %d, %s)", eg.name, eg.index, eg.dev.Name())
	case *hostPort:
		res.Verdict, res.Egress = "host", HostTUNName
	case *tunnelPort:
		res.Verdict, res.Egress, res.NextHop = "encapsulate", eg.t.Device(), rec.hop.r.NextHop
		res.Outer = outerHeaders(eg, rec.hop.r, ip.TOS())
		res.Steps = append(res.Steps, TraceStep{"tunnel MTU", fmt.Sprintf("%d bytes inner (underlay %d − %d)", eg.maxInner, eg.mtu, eg.t.Overhead())})
		if n > eg.maxInner {
			res.Steps = append(res.Steps, TraceStep{"fragmentation", fmt.Sprintf("%d bytes without DF: the node's kernel fragments the outer packet", n)})
		}
	case *natEgress:
		res.Verdict, res.Egress = "nat", "NAT outgoing (source becomes the node's address)"
	}
	return res, nil
}

// traceIngressLocked finds where q's packet enters.
func (s *Switch) traceIngressLocked(q TraceQuery) (*podPort, *hostPort, *tunnelPort, error) {
	switch q.From {
	case "host":
		if s.att.host == nil {
			return nil, nil, nil, errors.New("trace: no host port attached")
		}
		return nil, s.att.host, nil, nil
	case "ipip", "vxlan":
		for _, t := range s.att.tunnels {
			if t != nil && t.t.Device() == q.From {
				if !q.Node.Is4() {
					return nil, nil, nil, fmt.Errorf("trace: from %s needs the sending node's address", q.From)
				}
				return nil, nil, t, nil
			}
		}
		return nil, nil, nil, fmt.Errorf("trace: no %s tunnel attached", q.From)
	}
	for _, p := range s.att.pods {
		if p != nil && (p.name == q.From || (q.From == "" && p.ip == q.Src)) {
			return p, nil, nil, nil
		}
	}
	if q.From != "" {
		return nil, nil, nil, fmt.Errorf("trace: no pod %q on this node", q.From)
	}
	if s.att.host == nil {
		return nil, nil, nil, fmt.Errorf("trace: %s is no pod here and there is no host port", q.Src)
	}
	return nil, s.att.host, nil, nil
}

// outerHeaders describes what a tunnel puts around a packet whose TOS
// byte is tos.
func outerHeaders(t *tunnelPort, r *router.Route, tos uint8) string {
	ecn := ecnNames[packet.TunnelECN(tos)]
	switch tt := t.t.(type) {
	case *vxlanTunnel:
		return fmt.Sprintf("IPv4 (ECN %s) → %s UDP → %d (source port per flow) VXLAN VNI %d, inner Ethernet %s → %s; %d bytes added",
			ecn, r.NextHop, tt.port, tt.vni, tt.mac, packet.MAC(r.NextHopMAC), encap.VXLANOverhead)
	case *ipipTunnel:
		return fmt.Sprintf("IPv4 (ECN %s) protocol 4 (IP-in-IP) → %s; %d bytes added", ecn, r.NextHop, encap.IPIPOverhead)
	}
	return fmt.Sprintf("%s → %s", t.t.Device(), r.NextHop)
}

// ecnStep says what the outer ECN field did to the packet's: before is
// the packet's field on arrival, after what the data path left.
func ecnStep(outer, before, after uint8) string {
	s := fmt.Sprintf("outer %s over %s", ecnNames[outer], ecnNames[before])
	switch {
	case outer == packet.ECNCE && before == packet.ECNNotECT:
		return s + ": a congestion mark on a packet that does not do ECN, dropped"
	case after != before:
		return s + ": the packet goes on as " + ecnNames[after]
	}
	return s + ": unchanged"
}

// buildTracePacket writes q's packet at packet.Headroom in a new buffer.
func buildTracePacket(q TraceQuery) ([]byte, int, error) {
	size, ttl := q.Size, q.TTL
	if size == 0 {
		size = 84
	}
	if ttl == 0 {
		ttl = 64
	}
	var proto uint8
	l4 := 8
	switch q.Proto {
	case "", "icmp":
		proto = packet.ProtoICMP
	case "udp":
		proto = packet.ProtoUDP
	case "tcp":
		proto, l4 = packet.ProtoTCP, 20
	default:
		return nil, 0, fmt.Errorf("trace: protocol %q: want icmp, tcp or udp", q.Proto)
	}
	if size < 20+l4 || size > 65535 {
		return nil, 0, fmt.Errorf("trace: size %d: want %d to 65535 bytes", size, 20+l4)
	}
	if size > packet.MaxFrameLen-ethLen {
		return nil, 0, fmt.Errorf("trace: size %d is larger than a frame (%d)", size, packet.MaxFrameLen-ethLen)
	}
	buf := make([]byte, packet.BufferSize)
	ip := packet.IPv4(buf[packet.Headroom : packet.Headroom+size])
	ip[0] = 0x45
	ip.SetTotalLen(uint16(size))
	if q.DF {
		ip[6] = 0x40
	}
	ip[8] = ttl
	ip[9] = proto
	ecn, err := parseECN("ECN", q.ECN, packet.ECNNotECT)
	if err != nil {
		return nil, 0, err
	}
	ip[1] = ecn
	ip.SetSrc(q.Src.As4())
	ip.SetDst(q.Dst.As4())
	ip.ComputeChecksum()
	p := ip[20:]
	switch proto {
	case packet.ProtoICMP:
		p[0] = 8 // echo request
		binary.BigEndian.PutUint16(p[2:], 0)
		binary.BigEndian.PutUint16(p[2:], packet.Checksum(p, 0))
	case packet.ProtoUDP:
		binary.BigEndian.PutUint16(p[0:], 40000)
		binary.BigEndian.PutUint16(p[2:], q.Port)
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[6:], packet.TransportChecksum(ip))
	case packet.ProtoTCP:
		binary.BigEndian.PutUint16(p[0:], 40000)
		binary.BigEndian.PutUint16(p[2:], q.Port)
		p[12] = 5 << 4
		p[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(p[14:], 65535)
		binary.BigEndian.PutUint16(p[16:], packet.TransportChecksum(ip))
	}
	return buf, size, nil
}
