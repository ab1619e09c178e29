package encap

import "podnet/internal/packet"

// DecapError is the reason DecapIPIP or DecapVXLAN rejected a packet. The switch uses
// String() as the name of the drop counter, so the names are stable and
// short. DecapOK is the zero value and means the packet was accepted.
type DecapError uint8

// Decapsulation outcomes, one per drop counter.
const (
	DecapOK             DecapError = iota
	DecapTruncatedOuter            // outer header or outer total length runs past the buffer
	DecapBadOuter                  // outer version is not 4, IHL < 5, or total length < header
	DecapNotIPIP                   // outer protocol is not 4 (IP-in-IP)
	DecapOuterFragment             // outer header has MF set or a fragment offset
	DecapTruncatedInner            // inner header or inner total length runs past the outer payload
	DecapBadInner                  // inner version is not 4, IHL < 5, or total length < header

	// VXLAN (DecapVXLAN).
	DecapTruncatedVXLAN         // UDP payload shorter than the 8-byte VXLAN header
	DecapBadVXLANFlags          // I flag (VNI present) clear
	DecapWrongVNI               // VNI is not the one configured
	DecapTruncatedInnerEthernet // less than an Ethernet header after the VXLAN header
	numDecapErrors
)

var decapErrorNames = [numDecapErrors]string{
	DecapOK:             "ok",
	DecapTruncatedOuter: "truncated-outer",
	DecapBadOuter:       "bad-outer",
	DecapNotIPIP:        "not-ipip",
	DecapOuterFragment:  "outer-fragment",
	DecapTruncatedInner: "truncated-inner",
	DecapBadInner:       "bad-inner",

	DecapTruncatedVXLAN:         "truncated-vxlan",
	DecapBadVXLANFlags:          "bad-vxlan-flags",
	DecapWrongVNI:               "wrong-vni",
	DecapTruncatedInnerEthernet: "truncated-inner-ethernet",
}

// String returns the kebab-case reason used as a drop-counter name.
func (e DecapError) String() string {
	if e < numDecapErrors {
		return decapErrorNames[e]
	}
	return "unknown"
}

// Error makes a DecapError usable as an error. Like packet.ParseError it is
// a single byte, so converting it to an error does not allocate.
func (e DecapError) Error() string { return "encap: decap: " + e.String() }

// DecapIPIP takes apart pkt, an IP-in-IP packet as a raw IPPROTO_IPIP
// socket delivers it: the outer IPv4 header followed by the inner IPv4
// packet (RFC 2003 §3). It returns views into pkt, nothing is copied:
// outer resliced to its total length and inner resliced to the inner total
// length, so bytes after either (padding) are ignored, as the kernel's
// ip_rcv trims them too.
//
// outer is non-nil whenever the outer header itself was valid, also when
// the reason is DecapNotIPIP or later, so callers can attribute the drop to
// a source. inner is nil unless reason is DecapOK.
//
// The outer header checksum is not checked: the kernel verified it before
// delivering to the raw socket. Inner fragments are accepted (the pod sent
// them; the receiving pod reassembles); outer fragments are rejected since
// the kernel reassembles before raw delivery and one here means something
// is off. The inner packet may be larger than the underlay MTU when the
// receiving NIC merged segments with GRO.
//
// Callers must still check that outer.Src() is a known node before using
// inner: see the package comment.
func DecapIPIP(pkt []byte) (outer, inner packet.IPv4, reason DecapError) {
	o := packet.IPv4(pkt)
	if r := classify(o, DecapTruncatedOuter, DecapBadOuter); r != DecapOK {
		return nil, nil, r
	}
	o = o[:o.TotalLen()]
	if o.Protocol() != packet.ProtoIPIP {
		return o, nil, DecapNotIPIP
	}
	if o.IsFragment() {
		return o, nil, DecapOuterFragment
	}
	in := packet.IPv4(o[o.HeaderLen():])
	if r := classify(in, DecapTruncatedInner, DecapBadInner); r != DecapOK {
		return o, nil, r
	}
	return o, in[:in.TotalLen()], DecapOK
}

// classify runs packet's IPv4 validation and splits its result into "the
// buffer is too short for what the header claims" (truncated) and "the
// header is wrong whatever the buffer" (bad), the distinction the drop
// counters make: truncation points at our buffers or the kernel, bad
// headers at the sender.
func classify(b packet.IPv4, truncated, bad DecapError) DecapError {
	switch b.Validate() {
	case packet.ParseOK:
		return DecapOK
	case packet.ErrTooShort:
		return truncated
	case packet.ErrBadIHL:
		// Validate folds IHL < 5 and "header longer than the buffer"
		// together; only the first is the sender's fault.
		if b.HeaderLen() < packet.IPv4MinHeaderLen {
			return bad
		}
		return truncated
	case packet.ErrBadTotalLength:
		if b.TotalLen() < b.HeaderLen() {
			return bad
		}
		return truncated
	default: // ErrBadVersion
		return bad
	}
}

// IPIPOuterECN returns the ECN bits for the outer header of inner, the
// IPv4 packet an IP-in-IP packet carries: packet.TunnelECN of its TOS, or
// 0 if it is not IPv4.
func IPIPOuterECN(inner []byte) uint8 {
	if len(inner) < packet.IPv4MinHeaderLen || inner[0]>>4 != 4 {
		return 0
	}
	return packet.TunnelECN(inner[1])
}
