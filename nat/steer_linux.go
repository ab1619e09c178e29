package nat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/internal/tcbpf"
)

// A steer is the tc program on the underlay's ingress that hands the
// replies of packet-NAT'd TCP connections to the daemon: an IPv4 packet
// to the NAT's source address whose TCP destination port is in the port
// map goes to the plain TAP (bpf_redirect to its egress, which the
// daemon reads), and so does an ICMP error (destination unreachable,
// time exceeded) quoting a TCP packet from such a port. Everything else
// goes on into the node's stack untouched. Without it the node's kernel,
// which has no socket for those connections, would answer the replies
// with resets.
//
// It is attached with a tcx link (Linux 6.6+), which the kernel removes
// when the daemon's last descriptor of it closes, so a daemon that dies
// leaves nothing on the underlay that would take packets to its ports
// from whatever uses them next. Older kernels get a direct-action
// cls_bpf filter under a clsact qdisc, which outlives the daemon until
// the next one replaces it or the link goes.
type steer struct {
	ports   *ebpf.Map // 65536 entries, by port as steerKey makes it; non-zero: steer
	prog    *ebpf.Program
	ifindex int
	tcx     link.Link // the tcx link; nil with a filter

	// With a filter: a netlink handle in the underlay's namespace, and
	// whether openSteer added the clsact qdisc.
	nl    *netlink.Handle
	qdisc bool
}

// steerName names the program and its tc filter; openSteer removes a
// filter of that name left by a daemon that did not stop cleanly.
const steerName = "podnet_nat"

// Where the filter sits in the underlay's ingress: first, so that it sees
// the replies before any other direct-action filter ends classification.
const (
	steerPriority = 1
	steerHandle   = 0x4e4154
)

// Verdicts a tc direct-action program returns (include/uapi/linux/pkt_cls.h).
const (
	tcActUnspec   = -1 // go on: the next filter, or the stack
	tcActRedirect = 7
)

// steerKey is port's key in the port map: its two bytes in network
// order, as the program's 16-bit load reads them.
func steerKey(port uint16) uint32 {
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], port)
	return uint32(binary.NativeEndian.Uint16(be[:]))
}

// steerProgram is the program for packets to addr, redirected to the
// interface tap, with ports as the port map. The underlay is Ethernet
// (openPacketTCP checks), so the IPv4 header starts at byte 14; it may
// carry options. Fragments are left alone: only the first has the ports,
// and the node's stack reassembles them (and, with no socket for the
// port, resets the connection; TCP sets DF, so this does not happen).
func steerProgram(addr [4]byte, tap int, ports *ebpf.Map) asm.Instructions {
	const (
		eth    = packet.EthernetHeaderLen
		hdr    = -24 // the IPv4 header without options, on the stack
		l4     = -28 // the first 4 bytes after the IPv4 header
		quoted = -56 // an ICMP error's quoted IPv4 header and 4 bytes after it
		key    = -60
	)
	a := int32(binary.NativeEndian.Uint32(addr[:]))
	// load copies n bytes of the packet from offset R2 to the stack at to.
	load := func(to, n int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, to),
			asm.Mov.Imm(asm.R4, n),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "pass"),
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R0, asm.R1, tcbpf.SkbProtocolOffset, asm.Word),
		asm.JNE.Imm(asm.R0, tcbpf.SkbProtocolIPv4, "pass"),
		asm.Mov.Imm(asm.R2, eth),
	}
	insns = append(insns, load(hdr, packet.IPv4MinHeaderLen)...)
	insns = append(insns,
		// R7: the header's length, from IHL (R7 outlives helper calls).
		asm.LoadMem(asm.R7, asm.RFP, hdr, asm.Byte),
		asm.Mov.Reg(asm.R0, asm.R7),
		asm.And.Imm(asm.R0, 0xf0),
		asm.JNE.Imm(asm.R0, 0x40, "pass"), // IPv4
		asm.And.Imm(asm.R7, 0x0f),
		asm.LSh.Imm(asm.R7, 2),
		asm.JLT.Imm(asm.R7, packet.IPv4MinHeaderLen, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, hdr+6, asm.Byte), // MF and the fragment offset: not a fragment
		asm.And.Imm(asm.R0, 0x3f),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, hdr+7, asm.Byte),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, hdr+16, asm.Word), // destination
		asm.JNE.Imm32(asm.R0, a, "pass"),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, eth),
	)
	insns = append(insns, load(l4, 4)...)
	insns = append(insns,
		asm.LoadMem(asm.R0, asm.RFP, hdr+9, asm.Byte), // protocol
		asm.JEq.Imm(asm.R0, packet.ProtoTCP, "tcp"),
		asm.JNE.Imm(asm.R0, packet.ProtoICMP, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, l4, asm.Byte), // ICMP type
		asm.JEq.Imm(asm.R0, packet.ICMPDestUnreachable, "quoted"),
		asm.JNE.Imm(asm.R0, packet.ICMPTimeExceeded, "pass"),
		asm.Mov.Reg(asm.R2, asm.R7).WithSymbol("quoted"),
		asm.Add.Imm(asm.R2, eth+8),
	)
	insns = append(insns, load(quoted, packet.IPv4MinHeaderLen+4)...)
	return append(insns,
		asm.LoadMem(asm.R0, asm.RFP, quoted, asm.Byte),
		asm.JNE.Imm(asm.R0, 0x45, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, quoted+9, asm.Byte),
		asm.JNE.Imm(asm.R0, packet.ProtoTCP, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, quoted+12, asm.Word), // the quoted packet's source: us
		asm.JNE.Imm32(asm.R0, a, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, quoted+packet.IPv4MinHeaderLen, asm.Half), // its source port
		asm.Ja.Label("lookup"),

		asm.LoadMem(asm.R0, asm.RFP, l4+2, asm.Half).WithSymbol("tcp"), // destination port

		asm.StoreMem(asm.RFP, key, asm.R0, asm.Word).WithSymbol("lookup"),
		asm.LoadMapPtr(asm.R1, ports.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Imm(asm.R1, int32(tap)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),

		asm.Mov.Imm(asm.R0, tcActUnspec).WithSymbol("pass"),
		asm.Return(),
	)
}

// openSteer loads the program for packets to addr, redirecting to the
// interface index tap, self-tests it and attaches it to the ingress of
// underlay, in the calling thread's namespace: with a tcx link where the
// kernel has them, else as a tc filter (replacing one of its name left
// there before).
func openSteer(underlay string, addr [4]byte, tap int) (*steer, error) {
	return openSteerWith(underlay, addr, tap, true)
}

// openSteerWith is openSteer; tcx false goes straight to the filter.
func openSteerWith(underlay string, addr [4]byte, tap int, tcx bool) (*steer, error) {
	s, err := loadSteer(addr, tap)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	l, err := netlink.LinkByName(underlay)
	if err != nil {
		return nil, err
	}
	s.ifindex = l.Attrs().Index
	if tcx {
		s.tcx, err = link.AttachTCX(link.TCXOptions{Interface: s.ifindex, Program: s.prog,
			Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		if err == nil {
			ok = true
			return s, nil
		}
	}
	if err := s.attachFilter(underlay); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// attachFilter attaches the program as a cls_bpf filter on underlay's
// clsact ingress, adding the qdisc if there is none.
func (s *steer) attachFilter(underlay string) error {
	var err error
	if s.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return err
	}
	s.qdisc, err = tcbpf.Attach(s.nl, s.ifindex, s.prog, tcbpf.Filter{Name: steerName, Handle: steerHandle, Priority: steerPriority})
	if err != nil {
		return fmt.Errorf("%s: %w", underlay, err)
	}
	return nil
}

// loadSteer makes the port map and loads and self-tests the program for
// packets to addr, redirected to the interface index tap.
func loadSteer(addr [4]byte, tap int) (*steer, error) {
	ports, err := ebpf.NewMap(&ebpf.MapSpec{Name: "podnet_nat_ports", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1 << 16})
	if err != nil {
		return nil, fmt.Errorf("port map: %w", err)
	}
	s := &steer{ports: ports}
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         steerName,
		Type:         ebpf.SchedCLS,
		AttachType:   ebpf.AttachTCXIngress, // tcx checks it; cls_bpf does not
		Instructions: steerProgram(addr, tap, ports),
		License:      "GPL", // gates only GPL-only helpers; these are not
	})
	if err == nil {
		err = s.selfTest(addr)
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("tc program: %w", err)
	}
	return s, nil
}

// CheckPacketPath says whether NAT's TCP packet path can work here: its
// TAP can be made (encap.CheckPlainTap) and its tc program loads and,
// run by the kernel on sample packets, steers what it must and nothing
// else. nil: it can.
func CheckPacketPath() error {
	if err := encap.CheckPlainTap(); err != nil {
		return err
	}
	s, err := loadSteer([4]byte{192, 0, 2, 1}, 1)
	if err != nil {
		return err
	}
	return s.close()
}

// check says whether the program is still attached: without it replies
// reach the node's stack, which resets the connections.
func (s *steer) check() error {
	if s.tcx != nil {
		info, err := s.tcx.Info()
		if err != nil {
			return fmt.Errorf("the NAT's tcx link: %w", err)
		}
		if tcx := info.TCX(); tcx == nil || tcx.Ifindex == 0 {
			return errors.New("the NAT's tc program was detached from the underlay")
		}
		return nil
	}
	info, err := s.prog.Info()
	if err != nil {
		return err
	}
	id, _ := info.ID()
	if err := tcbpf.Attached(s.nl, s.ifindex, id); err != nil {
		return fmt.Errorf("the NAT's tc program on the underlay: %w", err)
	}
	return nil
}

// add steers the replies to port; del stops it.
func (s *steer) add(port uint16) error { return s.ports.Put(steerKey(port), uint32(1)) }
func (s *steer) del(port uint16) error { return s.ports.Put(steerKey(port), uint32(0)) }

// close removes the filter (and the qdisc if openSteer added it and
// nothing else uses it) and lets go of the program and the map.
func (s *steer) close() error {
	var err error
	if s.tcx != nil {
		err = s.tcx.Close()
	}
	if s.nl != nil {
		err = tcbpf.Remove(s.nl, s.ifindex, steerName)
		if s.qdisc {
			err = errors.Join(err, tcbpf.RemoveQdiscIfUnused(s.nl, s.ifindex))
		}
		s.nl.Close()
	}
	if s.prog != nil {
		err = errors.Join(err, s.prog.Close())
	}
	return errors.Join(err, s.ports.Close())
}

// selfTest runs the program (BPF_PROG_TEST_RUN) on the packets it must
// steer and on near misses it must leave alone, with one port in the map
// for the run. That the kernel loads a program says nothing of whether it
// matches this host's packets; a mismatch would otherwise only show as
// connections reset.
func (s *steer) selfTest(addr [4]byte) error {
	const port, other = 40000, 40001
	if err := s.add(port); err != nil {
		return fmt.Errorf("port map: %w", err)
	}
	defer s.del(port)
	elsewhere := addr
	elsewhere[3]++
	cases := []struct {
		name  string
		frame []byte
		want  int32
	}{
		{"TCP reply", steerSample(addr, port, 0), tcActRedirect},
		{"TCP reply with IP options", withIPOptions(steerSample(addr, port, 0)), tcActRedirect},
		{"ICMP error with IP options", withIPOptions(steerSample(addr, port, packet.ICMPDestUnreachable)), tcActRedirect},
		{"ICMP error about it", steerSample(addr, port, packet.ICMPDestUnreachable), tcActRedirect},
		{"TCP to another port", steerSample(addr, other, 0), tcActUnspec},
		{"TCP to another address", steerSample(elsewhere, port, 0), tcActUnspec},
		{"ICMP echo", steerSample(addr, port, packet.ICMPEcho), tcActUnspec},
		{"TCP fragment", asFragment(steerSample(addr, port, 0)), tcActUnspec},
	}
	for _, tc := range cases {
		var ctx [64]uint32 // struct __sk_buff, with room to spare
		ret, err := s.prog.Run(&ebpf.RunOptions{Data: tc.frame, Context: ctx})
		if err != nil {
			return fmt.Errorf("test run of the tc program: %w", err)
		}
		if int32(ret) != tc.want {
			return fmt.Errorf("test run of the tc program on a %s: verdict %d, want %d", tc.name, int32(ret), tc.want)
		}
	}
	return nil
}

// withIPOptions returns frame f with 4 bytes of IPv4 options (no-ops)
// after its IPv4 header.
func withIPOptions(f []byte) []byte {
	const at = packet.EthernetHeaderLen + packet.IPv4MinHeaderLen
	g := append(append(append([]byte(nil), f[:at]...), 1, 1, 1, 1), f[at:]...)
	ip := g[packet.EthernetHeaderLen:]
	ip[0] = 0x46
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip[:24], 0))
	return g
}

// asFragment returns frame f as the first fragment of a larger packet.
func asFragment(f []byte) []byte {
	g := append([]byte(nil), f...)
	ip := g[packet.EthernetHeaderLen:]
	ip[6] |= 0x20 // MF
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip[:packet.IPv4MinHeaderLen], 0))
	return g
}

// steerSample is an Ethernet frame to addr: a TCP segment to port, or
// with icmpType non-zero an ICMP message of that type quoting a TCP
// segment from addr:port.
func steerSample(addr [4]byte, port uint16, icmpType uint8) []byte {
	remote := [4]byte{192, 0, 2, 1}
	f := make([]byte, packet.EthernetHeaderLen+2*packet.IPv4MinHeaderLen+8+packet.TCPMinHeaderLen)
	eth := packet.Ethernet(f)
	eth.SetEtherType(packet.EtherTypeIPv4)
	ipHeader := func(b []byte, proto uint8, src, dst [4]byte) {
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[8] = 64
		b[9] = proto
		copy(b[12:], src[:])
		copy(b[16:], dst[:])
		binary.BigEndian.PutUint16(b[10:], packet.Checksum(b[:packet.IPv4MinHeaderLen], 0))
	}
	ip := f[packet.EthernetHeaderLen:]
	if icmpType == 0 {
		ip = ip[:packet.IPv4MinHeaderLen+packet.TCPMinHeaderLen]
		ipHeader(ip, packet.ProtoTCP, remote, addr)
		binary.BigEndian.PutUint16(ip[packet.IPv4MinHeaderLen:], 443)
		binary.BigEndian.PutUint16(ip[packet.IPv4MinHeaderLen+2:], port)
		return f[:packet.EthernetHeaderLen+len(ip)]
	}
	ipHeader(ip, packet.ProtoICMP, remote, addr)
	ip[packet.IPv4MinHeaderLen] = icmpType
	q := ip[packet.IPv4MinHeaderLen+8:]
	ipHeader(q, packet.ProtoTCP, addr, remote)
	binary.BigEndian.PutUint16(q[packet.IPv4MinHeaderLen:], port)
	binary.BigEndian.PutUint16(q[packet.IPv4MinHeaderLen+2:], 443)
	return f
}
