package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Ethernet II header (IEEE 802.3, DIX framing):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination MAC (6 bytes)                  |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	|                      Source MAC (6 bytes)                     |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           EtherType           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ethDst  = 0
	ethSrc  = 6
	ethType = 12
)

// EthernetHeaderLen is the size of an untagged Ethernet II header.
const EthernetHeaderLen = 14

// EtherTypes the switch looks at (IEEE registry).
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86DD
)

// MAC is a 48-bit IEEE 802 MAC address.
type MAC [6]byte

var (
	// GatewayMAC is the MAC the switch answers every ARP request on a pod
	// port with (proxy ARP). ee:ee:ee:ee:ee:ee is Calico's convention, so
	// pods moved between the two see the same neighbour entry.
	GatewayMAC = MAC{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	// BroadcastMAC is ff:ff:ff:ff:ff:ff.
	BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

const hexDigits = "0123456789abcdef"

// String formats m as six lowercase colon-separated hex pairs.
func (m MAC) String() string {
	var s [17]byte
	for i, b := range m {
		if i > 0 {
			s[i*3-1] = ':'
		}
		s[i*3] = hexDigits[b>>4]
		s[i*3+1] = hexDigits[b&0x0f]
	}
	return string(s[:])
}

// MarshalText formats m as String does, so that JSON shows aa:bb:cc:dd:ee:ff.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses what MarshalText writes (ParseMAC).
func (m *MAC) UnmarshalText(b []byte) error {
	v, err := ParseMAC(string(b))
	if err != nil {
		return fmt.Errorf("%w: %q", err, b)
	}
	*m = v
	return nil
}

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsMulticast reports whether the group bit (I/G, lowest bit of the first
// octet) is set; broadcast is a multicast address too.
func (m MAC) IsMulticast() bool { return m[0]&0x01 != 0 }

var errBadMAC = errors.New("packet: parse MAC: want six hex pairs separated by ':' or '-'")

// ParseMAC parses "aa:bb:cc:dd:ee:ff" (or with '-' separators, as Windows
// prints them). Unlike net.ParseMAC it accepts only 48-bit addresses: an
// EUI-64 or InfiniBand address is a configuration error here.
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return m, errBadMAC
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return m, errBadMAC
	}
	for i := range m {
		if i > 0 && s[i*3-1] != sep {
			return m, errBadMAC
		}
		hi, ok1 := unhex(s[i*3])
		lo, ok2 := unhex(s[i*3+1])
		if !ok1 || !ok2 {
			return m, errBadMAC
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Ethernet is a view of an Ethernet II header. The slice must be at least
// EthernetHeaderLen bytes long; ParseIPv4Frame and ParseARPFrame check it.
type Ethernet []byte

// Dst returns the destination MAC.
func (e Ethernet) Dst() MAC { return MAC(e[ethDst : ethDst+6]) }

// Src returns the source MAC.
func (e Ethernet) Src() MAC { return MAC(e[ethSrc : ethSrc+6]) }

// SetDst sets the destination MAC.
func (e Ethernet) SetDst(m MAC) { copy(e[ethDst:ethDst+6], m[:]) }

// SetSrc sets the source MAC.
func (e Ethernet) SetSrc(m MAC) { copy(e[ethSrc:ethSrc+6], m[:]) }

// EtherType returns the EtherType. A VLAN tag shows up as EtherTypeVLAN;
// pods never send tagged frames, so the caller counts and drops them.
func (e Ethernet) EtherType() uint16 { return binary.BigEndian.Uint16(e[ethType:]) }

// SetEtherType sets the EtherType.
func (e Ethernet) SetEtherType(t uint16) { binary.BigEndian.PutUint16(e[ethType:], t) }

// Payload returns the bytes after the Ethernet header.
func (e Ethernet) Payload() []byte { return e[EthernetHeaderLen:] }
