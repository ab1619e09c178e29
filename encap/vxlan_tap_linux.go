package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/internal/packet"
)

// A VXLANTap sends TCP superframes as VXLAN without cutting them up: it
// writes each one, outer Ethernet, IPv4 and UDP headers included, into a
// TAP of the node's own with a virtio-net header that asks for UDP-tunnel
// segmentation (Linux 6.17+, TUN_F_UDP_TUNNEL_GSO). The node's kernel
// routes the frame out of the underlay like a packet it forwards, and the
// underlay device, or the kernel just before it, cuts it into VXLAN
// datagrams of the inner MSS, each with the inner TCP checksum filled in.
// A veth underlay carries the superframe whole to the next namespace, as it
// does the kernel's own VXLAN device's; a receiver then reads it as one
// datagram (see VXLANConn about superframes).
//
// Without it every superframe is segmented in userspace (a copy and a
// checksum per segment) and sent with UDP GSO.
//
// Because the kernel forwards these frames, the TAP needs IPv4
// forwarding and a source address check that lets the node's own address
// in: OpenVXLANTap turns on forwarding and accept_local and turns off
// rp_filter on the TAP (giving it the node's address where rp_filter on
// "all" is loose), and Probe checks that a frame gets through. A strict
// rp_filter on "all" (it overrides the TAP's own) fails the probe.
// A firewall that drops forwarded traffic (a FORWARD chain with policy
// drop) passes it; the TAP then watches the namespace's count of packets
// transmitted, and Err reports when far fewer left than it wrote. Either
// way the switch goes back to segmenting in userspace.
type VXLANTap struct {
	name    string
	fd      int
	file    *os.File
	mac     [6]byte
	local   [4]byte
	udpCsum bool // the kernel fills in the outer UDP checksum of each segment
	ipID    atomic.Uint32

	sent atomic.Uint64

	// The forwarding watch (routineWatchForwarding): the namespace's
	// /proc/net/snmp, and what it and sent said at the last look.
	snmp              *os.File
	watchMu           sync.Mutex
	lastSent, lastOut uint64
	err               atomic.Pointer[error]
	stop              chan struct{}
	stopOnce          sync.Once
	watching          sync.WaitGroup

	// mu keeps Close from closing the fd under a Send (a raw write to a
	// closed, reused fd number would go elsewhere).
	mu     sync.RWMutex
	closed bool
}

// VXLANTapHeadroom is what Frame writes before the VXLAN header: the
// tunnel virtio-net header, then Ethernet, IPv4 and UDP headers.
const VXLANTapHeadroom = vnetTunnelHdrLen + packet.EthernetHeaderLen + packet.IPv4MinHeaderLen + udpHeaderLen

// MaxVXLANTapInner is the largest inner IPv4 packet a VXLAN superframe can
// carry: the outer IPv4 total length (16 bits) must cover it and the
// outer headers.
const MaxVXLANTapInner = 0xffff - packet.IPv4MinHeaderLen - udpHeaderLen - VXLANHeaderLen - packet.EthernetHeaderLen

const (
	udpHeaderLen = 8
	// vnetTunnelHdrLen is sizeof(struct virtio_net_hdr_v1_hash_tunnel):
	// the 12-byte v1 header, 8 bytes of hash report (unused), then the
	// outer transport and inner network header offsets.
	vnetTunnelHdrLen = 24

	tunFUDPTunnelGSO      = 0x080 // TUN_F_UDP_TUNNEL_GSO (linux/if_tun.h, 6.17), not in x/sys yet
	tunFUDPTunnelGSOCsum  = 0x100 // TUN_F_UDP_TUNNEL_GSO_CSUM: with the outer UDP checksum
	gsoUDPTunnelIPv4      = 0x20  // VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4
	vnetFUDPTunnelCsum    = 0x08  // VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM
	vxlanTapOffloadFlags  = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | tunFUDPTunnelGSO
	vxlanTapOuterTTL      = 64
	vxlanTapProbeDeadline = time.Second
)

// ErrNoUDPTunnelGSO means the kernel's TUN driver cannot take UDP-tunnel
// superframes (Linux before 6.17).
var ErrNoUDPTunnelGSO = errors.New("the kernel's TAP driver has no UDP-tunnel segmentation (TUN_F_UDP_TUNNEL_GSO, Linux 6.17+)")

// CheckUDPTunnelGSO says whether this kernel's TAPs take UDP-tunnel
// superframes: it makes a TAP for a moment (the kernel names it
// "pncheck<N>"; it goes away when the check closes it) and asks. nil:
// they do; ErrNoUDPTunnelGSO: they do not.
func CheckUDPTunnelGSO() error {
	fd, _, err := openTunnelTap("pncheck%d", 0)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// openTunnelTap creates a TAP with the tunnel virtio-net header in the
// calling thread's namespace and asks for UDP-tunnel segmentation, with
// the outer UDP checksum if the kernel has it (udpCsum). extra adds TUN
// flags (IFF_TUN_EXCL).
func openTunnelTap(name string, extra uint16) (fd int, udpCsum bool, err error) {
	fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, false, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return -1, false, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | extra)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return -1, false, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetTunnelHdrLen); err != nil {
		return -1, false, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}
	// With the outer UDP checksum if the kernel can: receivers' GRO
	// merges no datagrams whose checksum is zero.
	udpCsum = true
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, vxlanTapOffloadFlags|tunFUDPTunnelGSOCsum); err != nil {
		udpCsum = false
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, vxlanTapOffloadFlags); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return -1, false, ErrNoUDPTunnelGSO
			}
			return -1, false, fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	}
	ok = true
	return fd, udpCsum, nil
}

// OpenVXLANTap creates the TAP name in the calling thread's network
// namespace, brings it up and sets its sysctls. local is the outer source
// of every frame: the node's underlay address, which the VXLAN socket is
// bound to.
func OpenVXLANTap(name string, local netip.Addr) (*VXLANTap, error) {
	if !local.Is4() || local.IsUnspecified() {
		return nil, fmt.Errorf("vxlan tap %q: local address %s is not a unicast IPv4 address", name, local)
	}
	fd, udpCsum, err := openTunnelTap(name, unix.IFF_TUN_EXCL)
	if err != nil {
		return nil, fmt.Errorf("vxlan tap %q: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	t := &VXLANTap{name: name, fd: fd, local: local.As4(), udpCsum: udpCsum, stop: make(chan struct{})}
	if err := t.configure(); err != nil {
		return nil, err
	}
	// The calling thread's namespace, whatever namespace the process is in.
	if t.snmp, err = os.Open("/proc/thread-self/net/snmp"); err != nil {
		return nil, fmt.Errorf("vxlan tap %q: %w", name, err)
	}
	if t.lastOut, err = t.transmitted(); err != nil {
		t.snmp.Close()
		return nil, fmt.Errorf("vxlan tap %q: %w", name, err)
	}
	t.file = os.NewFile(uintptr(fd), name)
	t.watching.Add(1)
	go t.routineWatchForwarding()
	ok = true
	return t, nil
}

// Err is nil while the kernel forwards what Send writes, and says why not
// once the forwarding watch saw it drop them.
func (t *VXLANTap) Err() error {
	if p := t.err.Load(); p != nil {
		return *p
	}
	return nil
}

// forwardWatchInterval is how often the forwarding watch looks;
// forwardWatchMin is how many superframes written since it last judged it
// needs to judge, or forwardWatchNone if nothing at all left meanwhile.
const (
	forwardWatchInterval = time.Second
	forwardWatchMin      = 16
	forwardWatchNone     = 4
)

// routineWatchForwarding checks the forwarding every interval until Close,
// and stops once it has found it failing. Started by OpenVXLANTap.
func (t *VXLANTap) routineWatchForwarding() {
	defer t.watching.Done()
	tick := time.NewTicker(forwardWatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			if err := t.checkForwarding(); err != nil {
				t.err.Store(&err)
				return
			}
		}
	}
}

// checkForwarding compares the superframes written since it last judged
// with the packets the namespace transmitted (Ip: OutTransmits, Linux
// 6.3+, counts each superframe once, after the FORWARD hook and before it
// is segmented; ForwDatagrams counts before the hook, so it misses a
// firewall's drops). Other traffic only adds to that count, so fewer than
// half means the kernel dropped ours. Until enough superframes were
// written to judge, the counts go on adding up, so a flow that a firewall
// has slowed to a trickle is judged too, later; heavy other traffic
// meanwhile can hide it.
func (t *VXLANTap) checkForwarding() error {
	t.watchMu.Lock()
	defer t.watchMu.Unlock()
	out, err := t.transmitted()
	if err != nil {
		return fmt.Errorf("vxlan tap %s: %w", t.name, err)
	}
	sent := t.sent.Load()
	ds, dout := sent-t.lastSent, out-t.lastOut
	if ds >= forwardWatchNone && dout == 0 || ds >= forwardWatchMin && dout < ds/2 {
		t.lastSent, t.lastOut = sent, out
		return fmt.Errorf("vxlan tap %s: the kernel transmitted %d packets while %d superframes were written into it: a firewall (FORWARD chain) or policy drops them", t.name, dout, ds)
	}
	if ds >= forwardWatchMin {
		t.lastSent, t.lastOut = sent, out
	}
	return nil
}

// transmitted reads Ip: OutTransmits from the namespace's /proc/net/snmp.
func (t *VXLANTap) transmitted() (uint64, error) {
	var b [4096]byte
	n, err := t.snmp.ReadAt(b[:], 0)
	if n == 0 && err != nil {
		return 0, err
	}
	var names []string
	for _, line := range strings.Split(string(b[:n]), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "OutTransmits" && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
	}
	return 0, errors.New("no Ip: OutTransmits in /proc/net/snmp (Linux 6.3+)")
}

// configure learns the TAP's MAC (the Ethernet destination of every
// frame, so the kernel takes them as addressed to it), sets the sysctls
// the forwarding needs and brings the link up. The TAP gets no address
// except where addressForLooseRPFilter needs one; IPv6 is off on it so
// the kernel sends nothing into it.
func (t *VXLANTap) configure() error {
	l, err := netlink.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("vxlan tap %q: %w", t.name, err)
	}
	if copy(t.mac[:], l.Attrs().HardwareAddr) != len(t.mac) {
		return fmt.Errorf("vxlan tap %q: no MAC address", t.name)
	}
	// IPv6 first, while the link is down: no router solicitation leaves.
	writeSysctl("net/ipv6/conf/"+t.name+"/disable_ipv6", "1") // absent without IPv6
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + t.name + "/forwarding", "1"},
		{"net/ipv4/conf/" + t.name + "/accept_local", "1"},
		{"net/ipv4/conf/" + t.name + "/rp_filter", "0"},
	} {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return fmt.Errorf("vxlan tap %q: %w", t.name, err)
		}
	}
	if err := t.addressForLooseRPFilter(l); err != nil {
		return fmt.Errorf("vxlan tap %q: %w", t.name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("vxlan tap %q: set up: %w", t.name, err)
	}
	return nil
}

// addressForLooseRPFilter gives the TAP the node's address (host scope,
// no prefix route) where rp_filter on "all" is loose (2, as on Ubuntu):
// the kernel's source check fails every packet from a device without an
// address once rp_filter is on at all, and "all" overrides the TAP's own
// 0. The node already has that address, so this adds no route and no
// address the node did not answer for. A strict "all" (1) cannot be
// helped: the node's address is not routed via the TAP (Probe fails).
func (t *VXLANTap) addressForLooseRPFilter(l netlink.Link) error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/rp_filter")
	if err != nil || strings.TrimSpace(string(b)) != "2" {
		return nil
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(t.local[:]), Mask: net.CIDRMask(32, 32)},
		Scope: unix.RT_SCOPE_HOST, Flags: unix.IFA_F_NOPREFIXROUTE}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s for rp_filter 2 on all: %w", t.local, err)
	}
	return nil
}

func writeSysctl(name, val string) error {
	return os.WriteFile("/proc/sys/"+name, []byte(val), 0o644)
}

// Name is the TAP's interface name.
func (t *VXLANTap) Name() string { return t.name }

// Sent is how many superframes Send has handed the kernel.
func (t *VXLANTap) Sent() uint64 { return t.sent.Load() }

// Frame writes the outer headers in the VXLANTapHeadroom bytes before
// buf[start:], which holds a VXLAN header, the inner Ethernet header and
// the inner IPv4 packet (a superframe whose offload metadata is gso, its
// offsets counted from the inner IPv4 header), and returns the frame to
// Send. The outer destination is dst, the outer source port srcPort (the
// port the same flow's other datagrams leave from, so the underlay sees
// one flow). ok is false if the packet cannot go this way (send it
// segmented instead): too little headroom, dst not IPv4, too big for one
// outer packet, or not a TCPv4 superframe as a kernel writes one (a
// partial checksum in the TCP header, a segment size); the header length
// the kernel copies into each segment is taken from the packet, not gso.
func (t *VXLANTap) Frame(buf []byte, start int, dst netip.AddrPort, srcPort uint16, gso packet.VirtioNetHdr) (frame []byte, ok bool) {
	const innerIP = VXLANHeaderLen + packet.EthernetHeaderLen
	if start < VXLANTapHeadroom || len(buf)-start < innerIP+packet.IPv4MinHeaderLen+packet.TCPMinHeaderLen || !dst.Addr().Is4() {
		return nil, false
	}
	in := packet.IPv4(buf[start+innerIP:])
	inner, ihl := len(in), in.HeaderLen()
	if inner > MaxVXLANTapInner || !WholeTCPSuperframe(in, gso) {
		return nil, false
	}
	hdrLen := ihl + packet.TCP(in[ihl:]).DataOffset()
	segs := (inner - hdrLen + int(gso.GSOSize) - 1) / int(gso.GSOSize)
	f := buf[start-VXLANTapHeadroom:]
	const (
		outerEth = vnetTunnelHdrLen
		outerIP  = outerEth + packet.EthernetHeaderLen
		outerUDP = outerIP + packet.IPv4MinHeaderLen
		vxlan    = outerUDP + udpHeaderLen
		innerNH  = vxlan + innerIP - outerEth // virtio offsets count from the Ethernet header
	)
	h := f[:vnetTunnelHdrLen]
	clear(h)
	h[0] = packet.VirtioNetHdrFNeedsCsum
	if t.udpCsum {
		h[0] |= vnetFUDPTunnelCsum
	}
	h[1] = gso.GSOType | gsoUDPTunnelIPv4
	binary.LittleEndian.PutUint16(h[2:], uint16(innerNH+hdrLen))
	binary.LittleEndian.PutUint16(h[4:], gso.GSOSize)
	binary.LittleEndian.PutUint16(h[6:], uint16(innerNH+ihl))
	binary.LittleEndian.PutUint16(h[8:], tcpChecksumOffset)
	binary.LittleEndian.PutUint16(h[20:], outerUDP-outerEth)
	binary.LittleEndian.PutUint16(h[22:], innerNH)

	// The kernel numbers the segments from this ID on (DF is clear).
	id := uint16(t.ipID.Add(uint32(segs)) - uint32(segs))
	d := dst.Addr().As4()
	u := t.writeOuter(f, d, srcPort, dst.Port(), id)
	// With udpCsum the field holds the pseudo-header sum over the whole,
	// which the kernel adjusts per segment and completes; without, zero
	// (RFC 7348 allows it): the inner TCP checksum covers the payload.
	if t.udpCsum {
		udpLen := uint16(len(f) - outerUDP)
		binary.BigEndian.PutUint16(u[6:], packet.Fold(packet.PseudoHeaderSum(packet.ProtoUDP, t.local, d, udpLen)))
	}
	return f, true
}

// writeOuter writes, after the virtio-net header at the start of frame f,
// the Ethernet header to the TAP's own MAC and the outer IPv4 (from the
// node, DF clear, TTL 64, IP ID id) and UDP headers (zero checksum), their
// lengths covering the rest of f, and returns the UDP header.
func (t *VXLANTap) writeOuter(f []byte, dst [4]byte, srcPort, dstPort, id uint16) []byte {
	const (
		outerIP  = vnetTunnelHdrLen + packet.EthernetHeaderLen
		outerUDP = outerIP + packet.IPv4MinHeaderLen
	)
	eth := packet.Ethernet(f[vnetTunnelHdrLen:outerIP])
	eth.SetDst(packet.MAC(t.mac))
	eth.SetSrc(packet.MAC(t.mac))
	eth.SetEtherType(packet.EtherTypeIPv4)

	ip := f[outerIP:outerUDP]
	ip[0] = 0x45
	ip[1] = 0
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-outerIP))
	binary.BigEndian.PutUint16(ip[4:], id)
	binary.BigEndian.PutUint16(ip[6:], 0) // DF clear, as the VXLAN socket sends
	ip[8] = vxlanTapOuterTTL
	ip[9] = packet.ProtoUDP
	binary.BigEndian.PutUint16(ip[10:], 0)
	copy(ip[12:16], t.local[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip, 0))

	u := f[outerUDP : outerUDP+udpHeaderLen]
	binary.BigEndian.PutUint16(u[0:], srcPort)
	binary.BigEndian.PutUint16(u[2:], dstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(len(f)-outerUDP))
	binary.BigEndian.PutUint16(u[6:], 0)
	return u
}

// tcpChecksumOffset is where the checksum sits in a TCP header.
const tcpChecksumOffset = 16

// WholeTCPSuperframe says whether ip, with offload metadata gso (offsets
// from the IPv4 header), is a TCPv4 superframe as a kernel writes one,
// which the kernel can segment again: TCP, a segment size, and a partial
// checksum at the TCP checksum field. ip must be a valid IPv4 packet.
func WholeTCPSuperframe(ip packet.IPv4, gso packet.VirtioNetHdr) bool {
	ihl := ip.HeaderLen()
	return gso.GSOType&^packet.GSOECN == packet.GSOTCPv4 && gso.GSOSize > 0 &&
		gso.Flags&packet.VirtioNetHdrFNeedsCsum != 0 && ip.Protocol() == packet.ProtoTCP &&
		int(gso.CsumStart) == ihl && gso.CsumOffset == tcpChecksumOffset &&
		len(ip) >= ihl+packet.TCPMinHeaderLen && packet.TCP(ip[ihl:]).DataOffset() >= packet.TCPMinHeaderLen &&
		ihl+packet.TCP(ip[ihl:]).DataOffset() < len(ip)
}

// Send writes a frame Frame built. It never blocks: the kernel takes the
// frame within the call (and usually forwards it there too).
func (t *VXLANTap) Send(frame []byte) error {
	if err := t.write(frame); err != nil {
		return err
	}
	t.sent.Add(1)
	return nil
}

func (t *VXLANTap) write(frame []byte) error {
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return os.ErrClosed
	}
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(t.fd), uintptr(unsafe.Pointer(&frame[0])), uintptr(len(frame)))
	t.mu.RUnlock()
	if e != 0 {
		return fmt.Errorf("vxlan tap %s: write: %w", t.name, e)
	}
	return nil
}

// Probe checks that a frame written into the TAP gets through the node's
// source address checks: it sends a small VXLAN-like datagram from the
// node's address to a socket of its own on that address and waits up to a
// second for it. Run it in the TAP's namespace.
func (t *VXLANTap) Probe() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("vxlan tap %s probe: %w", t.name, err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrInet4{Addr: t.local}); err != nil {
		return fmt.Errorf("vxlan tap %s probe: bind: %w", t.name, err)
	}
	sa, err := unix.Getsockname(s)
	if err != nil {
		return fmt.Errorf("vxlan tap %s probe: %w", t.name, err)
	}
	port := sa.(*unix.SockaddrInet4).Port
	tv := unix.NsecToTimeval(vxlanTapProbeDeadline.Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("vxlan tap %s probe: %w", t.name, err)
	}
	var nonce [8]byte
	binary.BigEndian.PutUint64(nonce[:], uint64(time.Now().UnixNano()))
	f := make([]byte, VXLANTapHeadroom+len(nonce))
	t.writeOuter(f, t.local, uint16(port), uint16(port), 0)
	copy(f[VXLANTapHeadroom:], nonce[:])
	if err := t.write(f); err != nil {
		return err
	}
	var got [16]byte
	for {
		n, _, err := unix.Recvfrom(s, got[:], 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("vxlan tap %s: a frame written into it did not arrive within %v: the kernel's source checks (rp_filter strict on \"all\"?) or its firewall drop it", t.name, vxlanTapProbeDeadline)
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("vxlan tap %s probe: %w", t.name, err)
		}
		if n == len(nonce) && [8]byte(got[:8]) == nonce {
			return nil
		}
	}
}

// Close removes the TAP.
func (t *VXLANTap) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.stopWatch()
	t.snmp.Close()
	return t.file.Close()
}

// stopWatch ends the forwarding watch (Close; tests, to drive
// checkForwarding themselves).
func (t *VXLANTap) stopWatch() {
	t.stopOnce.Do(func() { close(t.stop) })
	t.watching.Wait()
}
