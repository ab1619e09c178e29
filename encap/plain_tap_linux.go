package encap

import (
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// A PlainTap is a forwarding TAP (forwardTap) for packets that need no
// tunnel: plain IPv4 from the node's own address, which the kernel
// forwards out of the underlay as it forwards the tunnels' frames. NAT
// outgoing sends the pods' translated TCP through one, superframes
// whole, and reads back through the same TAP the replies that a tc
// program on the underlay steers into it (package nat).
type PlainTap struct {
	forwardTap
}

// plainTapOffloadFlags: TCPv4 superframes both ways, ECN bit included.
const plainTapOffloadFlags = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO_ECN

// PlainTapHeadroom is what Frame writes before the IPv4 header: the
// virtio-net header and an Ethernet header.
const PlainTapHeadroom = packet.VirtioNetHdrLen + packet.EthernetHeaderLen

// OpenPlainTap creates the TAP name in the calling thread's network
// namespace, brings it up and sets its sysctls; local is the source of
// the packets written into it. Probe checks that the kernel forwards
// them.
func OpenPlainTap(name string, local netip.Addr) (*PlainTap, error) {
	const kind = "plain tap"
	if err := checkLocal(kind, name, local); err != nil {
		return nil, err
	}
	if err := checkOutTransmits(); err != nil {
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	fd, _, _, err := openTap(name, unix.IFF_TUN_EXCL, packet.VirtioNetHdrLen, plainTapOffloadFlags)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	t := &PlainTap{}
	if err := t.init(kind, name, fd, local, packet.VirtioNetHdrLen); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// Frame writes the virtio-net and Ethernet headers in the
// PlainTapHeadroom bytes before buf[ip:], which holds an IPv4 packet
// whose offload metadata is gso (offsets counted from the IPv4 header),
// and returns the frame to Send. ok is false if ip leaves too little
// headroom, or gso asks for what the TAP cannot do: a superframe that is
// not TCPv4 as a kernel writes one (WholeTCPSuperframe), or a partial
// checksum outside the packet.
func (t *PlainTap) Frame(buf []byte, ip int, gso packet.VirtioNetHdr) (frame []byte, ok bool) {
	if ip < PlainTapHeadroom || len(buf)-ip < packet.IPv4MinHeaderLen {
		return nil, false
	}
	in := packet.IPv4(buf[ip:])
	h := packet.VirtioNetHdr{}
	switch {
	case gso.GSOType != packet.GSONone:
		if !WholeTCPSuperframe(in, gso) {
			return nil, false
		}
		ihl := in.HeaderLen()
		h = packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: gso.GSOType,
			HdrLen:  uint16(packet.EthernetHeaderLen + ihl + packet.TCP(in[ihl:]).DataOffset()),
			GSOSize: gso.GSOSize, CsumStart: uint16(packet.EthernetHeaderLen + ihl), CsumOffset: gso.CsumOffset}
	case gso.Flags&packet.VirtioNetHdrFNeedsCsum != 0:
		if int(gso.CsumStart)+int(gso.CsumOffset)+2 > len(in) {
			return nil, false
		}
		h = packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum,
			CsumStart: packet.EthernetHeaderLen + gso.CsumStart, CsumOffset: gso.CsumOffset}
	}
	f := buf[ip-PlainTapHeadroom:]
	h.Encode(f)
	eth := packet.Ethernet(f[packet.VirtioNetHdrLen:])
	eth.SetDst(packet.MAC(t.mac))
	eth.SetSrc(packet.MAC(t.mac))
	eth.SetEtherType(packet.EtherTypeIPv4)
	return f, true
}

// ReadWait reads what the kernel sends into the TAP (packets a tc program
// redirected to it, each a frame behind its virtio-net header): it calls
// read with the TAP's non-blocking descriptor, and again each time the
// TAP becomes readable, until read returns true. It fails once the TAP
// is closed. read must not keep fd.
func (t *PlainTap) ReadWait(read func(fd int) bool) error {
	rc, err := t.file.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool { return read(int(fd)) })
}

// TryRead reads one frame if one is waiting, and fails with unix.EAGAIN
// if none is: for a caller that has just sent something whose answer
// may already be there.
func (t *PlainTap) TryRead(b []byte) (int, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0, os.ErrClosed
	}
	return unix.Read(t.fd, b)
}

// Index is the TAP's interface index, where a tc program redirects what
// Read is to see.
func (t *PlainTap) Index() int { return t.index }

// CheckPlainTap says whether a PlainTap can work here: the kernel's TUN
// driver takes its offloads, and the namespace counts Ip: OutTransmits
// (Linux 6.3+), which its forwarding watch needs. The TAP it makes for
// that ("pncheck<N>") goes when it closes it. nil: it can.
func CheckPlainTap() error {
	if err := checkOutTransmits(); err != nil {
		return err
	}
	fd, _, _, err := openTap("pncheck%d", 0, packet.VirtioNetHdrLen, plainTapOffloadFlags)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}
