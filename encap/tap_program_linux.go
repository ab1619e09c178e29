package encap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/internal/packet"
	"podnet/internal/tcbpf"
)

// A marking is what a TAP's tc program (tapProgram) makes the kernel see
// in the tunnel frames the daemon writes into the TAP as plain TCPv4
// superframes. No virtio-net header can say "IP-in-IP" (nor, before
// Linux 6.17, "VXLAN"), but bpf_skb_adjust_room can: a frame whose outer
// IPv4 header (no options) has protocol proto (and, for UDP, destination
// port dport) gets the room bytes after its Ethernet header (the tunnel's
// headers, outer IPv4 first) taken out and put back with flags, which
// marks the packet as the kernel's own tunnel device marks its packets:
// the GSO type (SKB_GSO_IPXIP4, SKB_GSO_UDP_TUNNEL), encapsulation set,
// the inner headers recorded. FIXED_GSO keeps the pod's segment size. The
// kernel, or the NIC, can then segment it.
type marking struct {
	name  string // the program's and the tc filter's name
	proto uint8
	dport uint16 // UDP destination port to match; 0: any
	room  int    // bytes of tunnel headers after the Ethernet header, at most maxMarkRoom
	flags uint64 // bpf_skb_adjust_room flags that put the room back
}

// Flags of bpf_skb_adjust_room (include/uapi/linux/bpf.h) and tc verdicts
// (include/uapi/linux/pkt_cls.h).
const (
	bpfAdjRoomMAC          = 1      // BPF_ADJ_ROOM_MAC: room right after the Ethernet header
	bpfFAdjRoomFixedGSO    = 1 << 0 // BPF_F_ADJ_ROOM_FIXED_GSO: keep gso_size (the inner MSS)
	bpfFAdjRoomEncapL3IP4  = 1 << 1 // BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
	bpfFAdjRoomEncapL4UDP  = 1 << 4 // BPF_F_ADJ_ROOM_ENCAP_L4_UDP
	bpfFAdjRoomEncapL2Eth  = 1 << 6 // BPF_F_ADJ_ROOM_ENCAP_L2_ETH: the inner L2 is Ethernet
	bpfAdjRoomEncapL2Shift = 56     // BPF_F_ADJ_ROOM_ENCAP_L2(len): the inner L2 length, in the top byte
	tcActOK                = 0
	tcActShot              = 2
	skbCB0Offset           = 48 // offsetof(struct __sk_buff, cb[0])
	maxMarkRoom            = 64
)

// program is the tc program for m. It saves the room on the stack, takes
// it out, grows it back with m.flags, writes it again and lets the frame
// on, with cb[0] set to 1 for the self-test; anything else (the probe's
// datagram) passes as it is. A failing helper drops the frame, which the
// forwarding watch sees.
func (m marking) program() asm.Instructions {
	const (
		room   = -maxMarkRoom // the saved headers' place on the stack
		ethLen = packet.EthernetHeaderLen
	)
	n := int32(m.room)
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // R6: the skb, across helper calls
		asm.LoadMem(asm.R0, asm.R1, tcbpf.SkbProtocolOffset, asm.Word),
		asm.JNE.Imm(asm.R0, tcbpf.SkbProtocolIPv4, "pass"),

		// bpf_skb_load_bytes(skb, ethLen, fp+room, n)
		asm.Mov.Imm(asm.R2, ethLen),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, room),
		asm.Mov.Imm(asm.R4, n),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, room, asm.Byte), // version and IHL
		asm.JNE.Imm(asm.R0, 0x45, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, room+9, asm.Byte), // protocol
		asm.JNE.Imm(asm.R0, int32(m.proto), "pass"),
	}
	if m.dport != 0 {
		// The UDP destination port, as a load in the host's order reads it.
		var be [2]byte
		binary.BigEndian.PutUint16(be[:], m.dport)
		insns = append(insns,
			asm.LoadMem(asm.R0, asm.RFP, room+packet.IPv4MinHeaderLen+2, asm.Half),
			asm.JNE.Imm(asm.R0, int32(binary.NativeEndian.Uint16(be[:])), "pass"),
		)
	}
	return append(insns,
		// bpf_skb_adjust_room(skb, -n, MAC, FIXED_GSO)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -n),
		asm.Mov.Imm(asm.R3, bpfAdjRoomMAC),
		asm.Mov.Imm(asm.R4, bpfFAdjRoomFixedGSO),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// bpf_skb_adjust_room(skb, n, MAC, m.flags)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, n),
		asm.Mov.Imm(asm.R3, bpfAdjRoomMAC),
		asm.LoadImm(asm.R4, int64(m.flags), asm.DWord),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// bpf_skb_store_bytes(skb, ethLen, fp+room, n, 0)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ethLen),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, room),
		asm.Mov.Imm(asm.R4, n),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// cb[0] = 1: marked (only the self-test reads it; the IP layer
		// takes cb over after tc).
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.R6, skbCB0Offset, asm.R1, asm.Word),

		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	)
}

// sampleFrame is a small frame m marks: Ethernet, the room (an outer
// IPv4 header of protocol m.proto; for UDP a header to m.dport, then
// zeros, ending in an inner Ethernet header where the room has one), then
// an inner IPv4 and TCP header.
func (m marking) sampleFrame() []byte {
	const inner = packet.IPv4MinHeaderLen + packet.TCPMinHeaderLen
	f := make([]byte, packet.EthernetHeaderLen+m.room+inner)
	eth := packet.Ethernet(f)
	eth.SetDst(packet.MAC{2, 0, 0, 0, 0, 1})
	eth.SetSrc(packet.MAC{2, 0, 0, 0, 0, 1})
	eth.SetEtherType(packet.EtherTypeIPv4)
	innerIP := packet.EthernetHeaderLen + m.room
	if m.flags&bpfFAdjRoomEncapL2Eth != 0 {
		packet.Ethernet(f[innerIP-packet.EthernetHeaderLen:]).SetEtherType(packet.EtherTypeIPv4)
	}
	for _, h := range []struct {
		off   int
		proto uint8
	}{{packet.EthernetHeaderLen, m.proto}, {innerIP, packet.ProtoTCP}} {
		ip := f[h.off : h.off+packet.IPv4MinHeaderLen]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-h.off))
		ip[8] = 64
		ip[9] = h.proto
		copy(ip[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
		binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip, 0))
	}
	if m.proto == packet.ProtoUDP {
		u := f[packet.EthernetHeaderLen+packet.IPv4MinHeaderLen:]
		binary.BigEndian.PutUint16(u[0:], 40000)
		binary.BigEndian.PutUint16(u[2:], m.dport)
		binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	}
	f[len(f)-packet.TCPMinHeaderLen+12] = packet.TCPMinHeaderLen / 4 << 4
	return f
}

// selfTest runs prog (BPF_PROG_TEST_RUN) on m's sample frame, which it
// must mark (cb[0] set: every helper succeeded) and let on with its bytes
// as they were, and on the same frame's inner packet alone and, for a
// UDP tunnel, the frame to another port, which it must leave alone. That the kernel loads a program says nothing of what its
// helpers do when it runs, or whether it matches this host's frames at
// all; either failing would otherwise only show as superframes lost.
func (m marking) selfTest(prog *ebpf.Program) error {
	f := m.sampleFrame()
	plain := append(f[:packet.EthernetHeaderLen:packet.EthernetHeaderLen], f[packet.EthernetHeaderLen+m.room:]...)
	type sample struct {
		name   string
		frame  []byte
		marked uint32
	}
	cases := []sample{{"tunnel frame", f, 1}, {"plain TCP frame", plain, 0}}
	if m.dport != 0 {
		other := m
		other.dport++
		cases = append(cases, sample{"frame to another port", other.sampleFrame(), 0})
	}
	for _, tc := range cases {
		out := make([]byte, len(tc.frame)+maxMarkRoom)
		// struct __sk_buff, with room to spare: the kernel refuses to
		// copy it back into less (it is 192 bytes in Linux 6.18).
		var ctx [64]uint32
		ret, err := prog.Run(&ebpf.RunOptions{Data: tc.frame, DataOut: out, Context: ctx, ContextOut: &ctx})
		if err != nil {
			return fmt.Errorf("test run of the tc program: %w", err)
		}
		if ret != tcActOK || !bytes.Equal(out[:len(tc.frame)], tc.frame) || ctx[skbCB0Offset/4] != tc.marked {
			return fmt.Errorf("test run of the tc program on the %s: verdict %d, marked %d, frame %x; want %d, %d and the frame unchanged",
				tc.name, ret, ctx[skbCB0Offset/4], out[:len(tc.frame)], tcActOK, tc.marked)
		}
	}
	return nil
}

// A tapProgram is a marking's program attached to a TAP's ingress (a
// clsact qdisc and a direct-action cls_bpf filter).
type tapProgram struct {
	prog    *ebpf.Program
	id      ebpf.ProgramID
	nl      *netlink.Handle // in the TAP's namespace, for check
	ifindex int
	tap     string
}

// attachTapProgram loads m's program, self-tests it and attaches it to
// the ingress of the TAP tap in the calling thread's namespace. The
// filter holds the program while the TAP exists.
func attachTapProgram(tap string, m marking) (*tapProgram, error) {
	if m.room > maxMarkRoom {
		return nil, fmt.Errorf("tc program %s: %d bytes of headers, at most %d", m.name, m.room, maxMarkRoom)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         m.name,
		Type:         ebpf.SchedCLS,
		Instructions: m.program(),
		// The license string only gates GPL-only helpers; these are not.
		License: "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load tc program: %w", err)
	}
	p := &tapProgram{prog: prog, tap: tap}
	ok := false
	defer func() {
		if !ok {
			p.close()
		}
	}()
	if err := m.selfTest(prog); err != nil {
		return nil, err
	}
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("tc program: %w", err)
	}
	p.id, _ = info.ID()
	// A handle of the calling thread's namespace: the forwarding watch,
	// which calls check, runs on other threads, which may be in another.
	if p.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, err
	}
	l, err := p.nl.LinkByName(tap)
	if err != nil {
		return nil, err
	}
	p.ifindex = l.Attrs().Index
	if _, err := tcbpf.Attach(p.nl, p.ifindex, prog, tcbpf.Filter{Name: m.name, Handle: 1, Priority: 1}); err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// check says whether the program is still attached to the TAP: without
// it (someone removed the filter or the qdisc) the kernel takes the
// frames for plain TCP and cannot segment them.
func (p *tapProgram) check() error { return tcbpf.Attached(p.nl, p.ifindex, p.id) }

// close lets go of the program and the netlink handle (the filter goes
// with the TAP).
func (p *tapProgram) close() error {
	if p.nl != nil {
		p.nl.Close()
	}
	return p.prog.Close()
}

// openMarked makes t the TAP name in the calling thread's namespace, with
// virtio-net headers of vnetLen bytes and the first of offloads the
// kernel takes, whose frames come from local and are marked by m's
// program (attached before the link is up, so no frame passes unmarked).
// kind names it in errors. It returns the program, which t closes with
// itself, and the index in offloads of the offloads set.
func (t *forwardTap) openMarked(kind, name string, local netip.Addr, vnetLen int, m marking, offloads ...int) (*tapProgram, int, error) {
	if err := checkLocal(kind, name, local); err != nil {
		return nil, 0, err
	}
	fd, _, used, err := openTap(name, unix.IFF_TUN_EXCL, vnetLen, offloads...)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	p, err := attachTapProgram(name, m)
	if err != nil {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	t.check, t.onClose = p.check, p.close
	if err := t.init(kind, name, fd, local, vnetLen); err != nil {
		p.close()
		unix.Close(fd)
		return nil, 0, err
	}
	return p, used, nil
}

// checkMarked says whether a TAP marked by m's program can work here: it
// makes a TAP for a moment (the kernel names it "pncheck<N>"; it goes away
// when the check closes it), loads, self-tests and attaches the program,
// and removes them. The forwarding watch's Ip: OutTransmits is needed too.
// nil: it can.
func checkMarked(vnetLen, offload int, m marking) error {
	if err := checkOutTransmits(); err != nil {
		return err
	}
	fd, name, _, err := openTap("pncheck%d", 0, vnetLen, offload)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	p, err := attachTapProgram(name, m)
	if err != nil {
		return err
	}
	return p.close()
}
