package packet

// ParseIPv4Frame validates an Ethernet frame (without virtio-net header)
// carrying IPv4 and returns the IPv4 packet resliced to its total length,
// so Ethernet padding of short frames is gone. On failure it returns nil
// and the drop reason. The header checksum is not verified (see
// IPv4.Validate), nor is the transport header (see ValidateTransport).
func ParseIPv4Frame(frame []byte) (IPv4, ParseError) {
	if len(frame) < EthernetHeaderLen {
		return nil, ErrTooShort
	}
	if Ethernet(frame).EtherType() != EtherTypeIPv4 {
		return nil, ErrUnsupportedEtherType
	}
	ip := IPv4(frame[EthernetHeaderLen:])
	if r := ip.Validate(); r != ParseOK {
		return nil, r
	}
	return ip[:ip.TotalLen()], ParseOK
}

// ParseARPFrame validates an Ethernet frame carrying an Ethernet/IPv4 ARP
// packet and returns the ARP view, ARPLen bytes long (trailing padding
// removed). On failure it returns nil and the drop reason.
func ParseARPFrame(frame []byte) (ARP, ParseError) {
	if len(frame) < EthernetHeaderLen {
		return nil, ErrTooShort
	}
	if Ethernet(frame).EtherType() != EtherTypeARP {
		return nil, ErrUnsupportedEtherType
	}
	a := ARP(frame[EthernetHeaderLen:])
	if len(a) < ARPLen {
		return nil, ErrTooShort
	}
	if !a.IsValid() {
		return nil, ErrBadARP
	}
	return a[:ARPLen], ParseOK
}
