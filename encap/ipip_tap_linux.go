package encap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// An IPIPTap sends TCP superframes as IP-in-IP without cutting them up.
//
// No virtio-net header asks for IP-in-IP segmentation, and a raw socket
// has none either, so without it every superframe leaves as ~45
// datagrams, each through the whole IP output path. An IPIPTap writes
// the superframe with its outer IPv4 header into a TAP of the node's own
// as an ordinary TCPv4 superframe (virtio-net header, Ethernet header to
// the TAP, outer IPv4 header, inner packet), and a small tc program on
// the TAP's ingress (ipipTapProgram) makes the kernel see it as IP-in-IP:
// bpf_skb_adjust_room takes the outer header off and puts it back with
// BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, which marks the packet as the kernel's
// own IP-in-IP tunnel does (SKB_GSO_IPXIP4, the inner header offsets).
// The kernel then forwards it out of the underlay, and the underlay
// device (tx-ipxip4-segmentation) or the kernel just before it cuts it
// into IP-in-IP packets of the inner MSS, each with its inner TCP
// checksum and its outer length, ID and checksum filled in. A veth
// underlay carries it whole to the next namespace, where a raw socket
// reads it as one packet (DecapIPIP takes it; the switch forwards it as
// a superframe).
//
// The TAP, its forwarding checks (Probe, Err) and Send are forwardTap's.
// Opening one needs the bpf(2) system call (CAP_BPF or root), tc's
// clsact qdisc and cls_bpf; where any is missing OpenIPIPTap says so and
// superframes are cut in userspace as before.
type IPIPTap struct {
	forwardTap
	prog           *ebpf.Program
	progID         ebpf.ProgramID
	nl             *netlink.Handle // in the TAP's namespace, for checkProgram
	ifindex        int
	ipID           atomic.Uint32
	outerFromInner bool
	closeOnce      sync.Once
	closeErr       error
}

// IPIPTapHeadroom is what Frame writes before the inner IPv4 header: the
// virtio-net header, then Ethernet and outer IPv4 headers.
const IPIPTapHeadroom = packet.VirtioNetHdrLen + packet.EthernetHeaderLen + packet.IPv4MinHeaderLen

// MaxIPIPTapInner is the largest inner IPv4 packet an IP-in-IP superframe
// can carry: the outer total length (16 bits) must cover it too.
const MaxIPIPTapInner = 0xffff - packet.IPv4MinHeaderLen

// ipipTapOffloadFlags: TCPv4 superframes, ECN bit included.
const ipipTapOffloadFlags = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO_ECN

// CheckIPIPTap says whether the daemon can send IP-in-IP superframes
// whole here: it makes a TAP for a moment (the kernel names it
// "pncheck<N>"; it goes away when the check closes it), loads and
// attaches the tc program, and removes them. nil: it can.
func CheckIPIPTap() error {
	if err := checkOutTransmits(); err != nil {
		return err
	}
	fd, name, _, err := openTap("pncheck%d", 0, packet.VirtioNetHdrLen, ipipTapOffloadFlags)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	t := &IPIPTap{}
	if t.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return err
	}
	defer t.nl.Close()
	if err := t.attachProgram(name); err != nil {
		return err
	}
	return t.prog.Close()
}

// OpenIPIPTap creates the TAP name in the calling thread's network
// namespace, attaches its tc program, brings it up and sets its sysctls.
// local is the outer source of every frame: the node's underlay address,
// which the IP-in-IP socket is bound to. outerFromInner builds the outer
// header as IPIPConfig.OuterFromInner does (DF, and with DF the ID, from
// the inner header); otherwise DF is clear, as the socket sends.
func OpenIPIPTap(name string, local netip.Addr, outerFromInner bool) (*IPIPTap, error) {
	if !local.Is4() || local.IsUnspecified() {
		return nil, fmt.Errorf("ipip tap %q: local address %s is not a unicast IPv4 address", name, local)
	}
	fd, _, _, err := openTap(name, unix.IFF_TUN_EXCL, packet.VirtioNetHdrLen, ipipTapOffloadFlags)
	if err != nil {
		return nil, fmt.Errorf("ipip tap %q: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	t := &IPIPTap{outerFromInner: outerFromInner}
	// A handle of the calling thread's namespace: the forwarding watch
	// runs on other threads, which may be in another.
	if t.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("ipip tap %q: %w", name, err)
	}
	// The program goes on before the link is up: no frame passes unmarked.
	if err := t.attachProgram(name); err != nil {
		t.nl.Close()
		return nil, fmt.Errorf("ipip tap %q: %w", name, err)
	}
	t.check = t.checkProgram
	if err := t.init("ipip tap", name, fd, local, packet.VirtioNetHdrLen); err != nil {
		t.prog.Close()
		t.nl.Close()
		return nil, err
	}
	ok = true
	return t, nil
}

// checkProgram says whether the TAP's tc program is still attached:
// without it (someone removed the filter or the qdisc) the kernel takes
// the frames for plain TCP and cannot segment them.
func (t *IPIPTap) checkProgram() error {
	fs, err := t.nl.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: t.ifindex}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("ipip tap %s: list its tc filters: %w", t.name, err)
	}
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Id == int(t.progID) {
			return nil
		}
	}
	return fmt.Errorf("ipip tap %s: its tc program is no longer attached (tc filter or qdisc removed)", t.name)
}

// Frame writes the headers in the IPIPTapHeadroom bytes before buf[ip:],
// which holds the inner IPv4 packet (a superframe whose offload metadata
// is gso, its offsets counted from the inner IPv4 header), and returns
// the frame to Send; the outer destination is dst. ok is false if the
// packet cannot go this way (send it segmented instead): too little
// headroom, dst not IPv4, too big for one outer packet, or not a TCPv4
// superframe as a kernel writes one (WholeTCPSuperframe); the header
// length the kernel copies into each segment is taken from the packet,
// not gso.
func (t *IPIPTap) Frame(buf []byte, ip int, dst netip.Addr, gso packet.VirtioNetHdr) (frame []byte, ok bool) {
	if ip < IPIPTapHeadroom || len(buf)-ip < packet.IPv4MinHeaderLen+packet.TCPMinHeaderLen || !dst.Is4() {
		return nil, false
	}
	in := packet.IPv4(buf[ip:])
	inner, ihl := len(in), in.HeaderLen()
	if inner > MaxIPIPTapInner || !WholeTCPSuperframe(in, gso) {
		return nil, false
	}
	hdrLen := ihl + packet.TCP(in[ihl:]).DataOffset()
	segs := (inner - hdrLen + int(gso.GSOSize) - 1) / int(gso.GSOSize)
	f := buf[ip-IPIPTapHeadroom:]
	const innerNH = packet.EthernetHeaderLen + packet.IPv4MinHeaderLen // virtio offsets count from the Ethernet header
	packet.VirtioNetHdr{
		Flags:      packet.VirtioNetHdrFNeedsCsum,
		GSOType:    gso.GSOType,
		HdrLen:     uint16(innerNH + hdrLen),
		GSOSize:    gso.GSOSize,
		CsumStart:  uint16(innerNH + ihl),
		CsumOffset: tcpChecksumOffset,
	}.Encode(f)

	// The kernel numbers the segments' outer IDs from this one on, as it
	// numbers the inner ones: with outerFromInner and DF the two run in
	// step (see IPIPConfig.OuterFromInner), otherwise each superframe
	// takes a superframe's worth of IDs.
	df := t.outerFromInner && in.DontFragment()
	id := in.ID()
	if !df {
		id = uint16(t.ipID.Add(uint32(segs)) - uint32(segs))
	}
	t.writeOuterIPv4(f, packet.ProtoIPIP, dst.As4(), id, df)
	return f, true
}

// Close removes the TAP, its tc program with it.
func (t *IPIPTap) Close() error {
	t.closeOnce.Do(func() {
		err := t.forwardTap.Close()
		t.nl.Close()
		t.closeErr = errors.Join(err, t.prog.Close())
	})
	return t.closeErr
}

// Flags of bpf_skb_adjust_room (include/uapi/linux/bpf.h) and tc verdicts
// (include/uapi/linux/pkt_cls.h).
const (
	bpfAdjRoomMAC         = 1      // BPF_ADJ_ROOM_MAC: room right after the Ethernet header
	bpfFAdjRoomFixedGSO   = 1 << 0 // BPF_F_ADJ_ROOM_FIXED_GSO: keep gso_size (the inner MSS)
	bpfFAdjRoomEncapL3IP4 = 1 << 1 // BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
	tcActOK               = 0
	tcActShot             = 2
	skbProtocolOffset     = 16 // offsetof(struct __sk_buff, protocol)
	skbCB0Offset          = 48 // offsetof(struct __sk_buff, cb[0])
)

// skbProtocolIPv4 is ETH_P_IP as a load of __sk_buff.protocol reads it:
// the field holds the network-order value, read in the host's order.
var skbProtocolIPv4 = int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00}))

// ipipTapProgram is the tc program on an IPIPTap's ingress. For a frame
// whose outer header is IPv4 without options, protocol 4, it takes that
// header off (into the stack), grows the room back with
// BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, writes the header again and lets the frame
// on, with cb[0] set to 1 for the self-test; anything else (the probe's
// UDP) passes as it is. A failing helper drops the frame, which the
// forwarding watch sees.
func ipipTapProgram() asm.Instructions {
	const (
		outer  = -24 // the outer header's place on the stack
		ethLen = packet.EthernetHeaderLen
		ipLen  = packet.IPv4MinHeaderLen
	)
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // R6: the skb, across helper calls
		asm.LoadMem(asm.R0, asm.R1, skbProtocolOffset, asm.Word),
		asm.JNE.Imm(asm.R0, skbProtocolIPv4, "pass"),

		// bpf_skb_load_bytes(skb, ethLen, fp+outer, ipLen)
		asm.Mov.Imm(asm.R2, ethLen),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, outer),
		asm.Mov.Imm(asm.R4, ipLen),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, outer, asm.Byte), // version and IHL
		asm.JNE.Imm(asm.R0, 0x45, "pass"),
		asm.LoadMem(asm.R0, asm.RFP, outer+9, asm.Byte), // protocol
		asm.JNE.Imm(asm.R0, packet.ProtoIPIP, "pass"),

		// bpf_skb_adjust_room(skb, -ipLen, MAC, FIXED_GSO)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -ipLen),
		asm.Mov.Imm(asm.R3, bpfAdjRoomMAC),
		asm.Mov.Imm(asm.R4, bpfFAdjRoomFixedGSO),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// bpf_skb_adjust_room(skb, ipLen, MAC, FIXED_GSO|ENCAP_L3_IPV4)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipLen),
		asm.Mov.Imm(asm.R3, bpfAdjRoomMAC),
		asm.Mov.Imm(asm.R4, bpfFAdjRoomFixedGSO|bpfFAdjRoomEncapL3IP4),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// bpf_skb_store_bytes(skb, ethLen, fp+outer, ipLen, 0)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ethLen),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, outer),
		asm.Mov.Imm(asm.R4, ipLen),
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
	}
}

// attachProgram loads ipipTapProgram and attaches it to the ingress of
// link name (a clsact qdisc and a direct-action cls_bpf filter). The
// filter holds the program while the link exists; t.prog is Close's to
// close.
func (t *IPIPTap) attachProgram(name string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "podnet_ipip_tap",
		Type:         ebpf.SchedCLS,
		Instructions: ipipTapProgram(),
		// The license string only gates GPL-only helpers; these four are not.
		License: "GPL",
	})
	if err != nil {
		return fmt.Errorf("load tc program: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			prog.Close()
		}
	}()
	if err := selfTestIPIPTapProgram(prog); err != nil {
		return err
	}
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("tc program: %w", err)
	}
	id, _ := info.ID()
	l, err := t.nl.LinkByName(name)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	qdisc := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := t.nl.QdiscAdd(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: 1, Protocol: unix.ETH_P_ALL, Priority: 1},
		Fd: prog.FD(), Name: "podnet_ipip_tap", DirectAction: true,
	}
	if err := t.nl.FilterAdd(filter); err != nil {
		return fmt.Errorf("add tc filter: %w", err)
	}
	t.prog, t.progID, t.ifindex = prog, id, idx
	ok = true
	return nil
}

// selfTestIPIPTapProgram runs prog (BPF_PROG_TEST_RUN) on a small
// IP-in-IP frame, which it must mark (cb[0] set: every helper succeeded)
// and let on with its bytes as they were, and on the same frame as plain
// TCP, which it must leave alone. That the kernel loads a program says
// nothing of what its helpers do when it runs, or whether it matches
// this host's frames at all; either failing would otherwise only show as
// superframes lost.
func selfTestIPIPTapProgram(prog *ebpf.Program) error {
	const innerLen = packet.IPv4MinHeaderLen + packet.TCPMinHeaderLen
	f := make([]byte, packet.EthernetHeaderLen+packet.IPv4MinHeaderLen+innerLen)
	eth := packet.Ethernet(f)
	eth.SetDst(packet.MAC{2, 0, 0, 0, 0, 1})
	eth.SetSrc(packet.MAC{2, 0, 0, 0, 0, 1})
	eth.SetEtherType(packet.EtherTypeIPv4)
	for i, proto := range []uint8{packet.ProtoIPIP, packet.ProtoTCP} {
		ip := f[packet.EthernetHeaderLen+i*packet.IPv4MinHeaderLen:][:packet.IPv4MinHeaderLen]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-packet.EthernetHeaderLen-i*packet.IPv4MinHeaderLen))
		ip[8] = 64
		ip[9] = proto
		copy(ip[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
		binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip, 0))
	}
	f[len(f)-8] = 5 << 4 // TCP data offset
	// The plain TCP frame: the inner packet alone.
	plain := append(f[:packet.EthernetHeaderLen:packet.EthernetHeaderLen], f[packet.EthernetHeaderLen+packet.IPv4MinHeaderLen:]...)
	for _, tc := range []struct {
		name   string
		frame  []byte
		marked uint32
	}{{"IP-in-IP frame", f, 1}, {"plain TCP frame", plain, 0}} {
		out := make([]byte, len(tc.frame)+64)
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
