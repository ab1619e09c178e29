// Package capture shows packets for `podnet capture`: a small filter
// language, one line per packet decoded with gopacket, and pcapng files
// that tcpdump and tshark read. The packets come from the switch's
// per-port capture (pod and host ports, tunnels' inner packets) or from
// an AF_PACKET socket on the underlay interface (the wire, outer headers
// and all).
package capture

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Link says what a packet starts with.
type Link uint8

const (
	Ethernet Link = iota // an Ethernet frame
	IPv4                 // an IPv4 packet, no link header
)

func (l Link) layerType() gopacket.LayerType {
	if l == IPv4 {
		return layers.LayerTypeIPv4
	}
	return layers.LayerTypeEthernet
}

func (l Link) pcapType() layers.LinkType {
	if l == IPv4 {
		return layers.LinkTypeIPv4
	}
	return layers.LinkTypeEthernet
}

// SnapLen is the largest packet a capture keeps whole: a TSO superframe.
const SnapLen = 65536 + 128

// Filter selects packets: every term must hold for some IPv4 header in the
// packet (outer or inner, so "host 10.0.0.5" finds a pod's packets inside
// the underlay's VXLAN too). The zero Filter selects everything.
type Filter struct {
	hosts  []netip.Addr
	protos []layers.IPProtocol
	ports  []uint16
}

// ParseFilter parses terms joined by "and": "host ADDR", "tcp", "udp",
// "icmp", "port N", e.g. "host 192.168.1.5 and tcp and port 80".
func ParseFilter(s string) (Filter, error) {
	var f Filter
	words := strings.Fields(s)
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch w {
		case "and", "&&":
			continue
		case "tcp":
			f.protos = append(f.protos, layers.IPProtocolTCP)
		case "udp":
			f.protos = append(f.protos, layers.IPProtocolUDP)
		case "icmp":
			f.protos = append(f.protos, layers.IPProtocolICMPv4)
		case "host", "port":
			if i+1 >= len(words) {
				return Filter{}, fmt.Errorf("filter: %q needs a value", w)
			}
			v := words[i+1]
			i++
			if w == "host" {
				a, err := netip.ParseAddr(v)
				if err != nil || !a.Is4() {
					return Filter{}, fmt.Errorf("filter: host %q is not an IPv4 address", v)
				}
				f.hosts = append(f.hosts, a)
			} else {
				p, err := strconv.ParseUint(v, 10, 16)
				if err != nil {
					return Filter{}, fmt.Errorf("filter: port %q is not a port number", v)
				}
				f.ports = append(f.ports, uint16(p))
			}
		default:
			return Filter{}, fmt.Errorf("filter: %q not understood (terms: host ADDR, port N, tcp, udp, icmp, joined by and)", w)
		}
	}
	return f, nil
}

// Match reports whether the decoded packet satisfies every term.
func (f Filter) Match(p gopacket.Packet) bool {
	var ips []*layers.IPv4
	var ports [][2]uint16
	for _, l := range p.Layers() {
		switch v := l.(type) {
		case *layers.IPv4:
			ips = append(ips, v)
		case *layers.TCP:
			ports = append(ports, [2]uint16{uint16(v.SrcPort), uint16(v.DstPort)})
		case *layers.UDP:
			ports = append(ports, [2]uint16{uint16(v.SrcPort), uint16(v.DstPort)})
		}
	}
	for _, h := range f.hosts {
		if !anyIP(ips, func(ip *layers.IPv4) bool { return addr(ip.SrcIP) == h || addr(ip.DstIP) == h }) {
			return false
		}
	}
	for _, pr := range f.protos {
		if !anyIP(ips, func(ip *layers.IPv4) bool { return ip.Protocol == pr }) {
			return false
		}
	}
	for _, want := range f.ports {
		found := false
		for _, pp := range ports {
			found = found || pp[0] == want || pp[1] == want
		}
		if !found {
			return false
		}
	}
	return true
}

func anyIP(ips []*layers.IPv4, f func(*layers.IPv4) bool) bool {
	for _, ip := range ips {
		if f(ip) {
			return true
		}
	}
	return false
}

func addr(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

// Decode parses data as link.
func Decode(data []byte, link Link) gopacket.Packet {
	return gopacket.NewPacket(data, link.layerType(), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
}

// Line describes one packet in one line, tcpdump-like: time, direction
// ("in" toward the switch, "out" from it, nothing for the wire), and each
// IPv4 header with what it carries, outer first.
func Line(t time.Time, dir Dir, p gopacket.Packet) string {
	var b strings.Builder
	b.WriteString(t.Format("15:04:05.000000"))
	if dir != Wire {
		fmt.Fprintf(&b, " %-3s", dir)
	}
	sep := " "
	for _, l := range p.Layers() {
		switch v := l.(type) {
		case *layers.Ethernet:
			if v.EthernetType != layers.EthernetTypeIPv4 {
				fmt.Fprintf(&b, "%s%s > %s %s", sep, v.SrcMAC, v.DstMAC, v.EthernetType)
				sep = " | "
			}
		case *layers.ARP:
			fmt.Fprintf(&b, "%sARP %s who-has %s tell %s", sep, arpOp(v.Operation), addr(v.DstProtAddress), addr(v.SourceProtAddress))
			sep = " | "
		case *layers.IPv4:
			fmt.Fprintf(&b, "%s%s > %s", sep, v.SrcIP, v.DstIP)
			if v.Protocol == layers.IPProtocolIPv4 {
				b.WriteString(" IP-in-IP")
			}
			fmt.Fprintf(&b, " ttl %d len %d", v.TTL, v.Length)
			sep = " | "
		case *layers.UDP:
			fmt.Fprintf(&b, " UDP %d > %d", v.SrcPort, v.DstPort)
		case *layers.VXLAN:
			fmt.Fprintf(&b, " VXLAN vni %d", v.VNI)
		case *layers.TCP:
			fmt.Fprintf(&b, " TCP %d > %d [%s] seq %d ack %d win %d, %d bytes", v.SrcPort, v.DstPort, tcpFlags(v), v.Seq, v.Ack, v.Window, len(v.Payload))
		case *layers.ICMPv4:
			fmt.Fprintf(&b, " ICMP %s", v.TypeCode)
			if t := v.TypeCode.Type(); t == layers.ICMPv4TypeEchoRequest || t == layers.ICMPv4TypeEchoReply {
				fmt.Fprintf(&b, " id %d seq %d", v.Id, v.Seq)
			}
		}
	}
	if e := p.ErrorLayer(); e != nil {
		fmt.Fprintf(&b, " [undecoded: %v]", e.Error())
	}
	return b.String()
}

func arpOp(op uint16) string {
	if op == layers.ARPReply {
		return "reply"
	}
	return "request"
}

func tcpFlags(t *layers.TCP) string {
	var s []byte
	for _, f := range []struct {
		on bool
		c  byte
	}{{t.SYN, 'S'}, {t.FIN, 'F'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.ACK, '.'}} {
		if f.on {
			s = append(s, f.c)
		}
	}
	return string(s)
}

// Dir says which way a packet crossed a switch port.
type Dir uint8

const (
	Wire Dir = iota // no direction: a packet on the underlay interface
	In              // the port sent it to the switch
	Out             // the switch sent it to the port
)

// String is "in", "out", or "" for the wire.
func (d Dir) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	}
	return ""
}

// Writer writes a pcapng stream. Classic pcap has no field for a
// packet's direction, so a switch port is two pcapng interfaces, PORT:in
// and PORT:out, and each packet's interface says which way it went
// (Wireshark and tshark show it as frame.interface_name).
type Writer struct {
	w *pcapgo.NgWriter
	// iface is the pcapng interface of each Dir; -1: not in this stream.
	iface [3]int
}

// NewWireWriter writes the pcapng header for the packets of link on the
// network interface ifname, which have no direction.
func NewWireWriter(w io.Writer, ifname string, link Link) (*Writer, error) {
	return newWriter(w, link, map[Dir]string{Wire: ifname})
}

// NewPortWriter writes the pcapng header for the packets of link that
// cross the switch port port, both ways.
func NewPortWriter(w io.Writer, port string, link Link) (*Writer, error) {
	return newWriter(w, link, map[Dir]string{In: port + ":" + In.String(), Out: port + ":" + Out.String()})
}

func newWriter(w io.Writer, link Link, names map[Dir]string) (*Writer, error) {
	pw := &Writer{iface: [3]int{-1, -1, -1}}
	for _, d := range []Dir{Wire, In, Out} {
		name, ok := names[d]
		if !ok {
			continue
		}
		intf := pcapgo.NgInterface{Name: name, LinkType: link.pcapType(), SnapLength: SnapLen}
		var err error
		if pw.w == nil {
			pw.w, err = pcapgo.NewNgWriterInterface(w, intf, pcapgo.NgWriterOptions{
				SectionInfo: pcapgo.NgSectionInfo{Application: "podnet capture"}})
			pw.iface[d] = 0
		} else {
			pw.iface[d], err = pw.w.AddInterface(intf)
		}
		if err != nil {
			return nil, fmt.Errorf("write pcapng header: %w", err)
		}
	}
	if err := pw.w.Flush(); err != nil {
		return nil, fmt.Errorf("write pcapng header: %w", err)
	}
	return pw, nil
}

// Write adds one packet that went dir.
func (w *Writer) Write(t time.Time, dir Dir, data []byte) error {
	if int(dir) >= len(w.iface) || w.iface[dir] < 0 {
		return fmt.Errorf("capture: no direction %q in this stream", dir)
	}
	n := min(len(data), SnapLen)
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: n, Length: len(data), InterfaceIndex: w.iface[dir]}
	if err := w.w.WritePacket(ci, data[:n]); err != nil {
		return err
	}
	return w.w.Flush()
}

// Reader reads a stream that Writer wrote, or a classic pcap stream,
// whose packets have no direction.
type Reader struct {
	r    packetReader
	ng   *pcapgo.NgReader // nil for classic pcap
	link Link
}

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// pcapngMagic starts a pcapng stream (its section header block's type).
var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

// NewReader reads the stream's header from r.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(len(pcapngMagic))
	if err != nil {
		return nil, fmt.Errorf("read pcap header: %w", err)
	}
	var lt layers.LinkType
	rd := &Reader{}
	if bytes.Equal(magic, pcapngMagic) {
		if rd.ng, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions); err != nil {
			return nil, fmt.Errorf("read pcapng header: %w", err)
		}
		rd.r, lt = rd.ng, rd.ng.LinkType()
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read pcap header: %w", err)
		}
		rd.r, lt = pr, pr.LinkType()
	}
	rd.link = Ethernet
	if lt == layers.LinkTypeIPv4 || lt == layers.LinkTypeRaw {
		rd.link = IPv4
	}
	return rd, nil
}

// Link is the stream's link type.
func (r *Reader) Link() Link { return r.link }

// Next returns the next packet and which way it went, or io.EOF.
func (r *Reader) Next() (time.Time, Dir, []byte, error) {
	data, ci, err := r.r.ReadPacketData()
	if err != nil {
		return time.Time{}, Wire, nil, err
	}
	dir := Wire
	if r.ng != nil {
		if intf, err := r.ng.Interface(ci.InterfaceIndex); err == nil {
			switch {
			case strings.HasSuffix(intf.Name, ":"+In.String()):
				dir = In
			case strings.HasSuffix(intf.Name, ":"+Out.String()):
				dir = Out
			}
		}
	}
	return ci.Timestamp, dir, data, nil
}
