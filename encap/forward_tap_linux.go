package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/internal/packet"
	"podnet/internal/procnet"
	"podnet/internal/queuedrops"
)

// forwardTap is what VXLANTap and IPIPTap share: a TAP of the node's own
// into which the daemon writes finished tunnel frames, outer headers
// included, each behind a virtio-net header, for the node's kernel to
// forward out of the underlay like any packet it routes. The kernel (or
// the underlay NIC) segments superframes on the way.
//
// Because the kernel forwards these frames, the TAP needs IPv4
// forwarding and a source address check that lets the node's own address
// in: configure turns on forwarding and accept_local and turns off
// rp_filter on the TAP (giving it the node's address where rp_filter on
// "all" is loose), and Probe checks that a frame gets through. A strict
// rp_filter on "all" (it overrides the TAP's own) fails the probe.
// A firewall that drops forwarded traffic (a FORWARD chain with policy
// drop) passes it; the TAP then watches the namespace's count of packets
// transmitted, and Err reports when far fewer left than it wrote. Either
// way the switch goes back to segmenting in userspace.
type forwardTap struct {
	kind    string // "vxlan tap", "ipip tap": how errors name it
	name    string
	fd      int
	file    *os.File
	mac     [6]byte
	index   int // the TAP's interface index
	local   [4]byte
	vnetLen int // the virtio-net header before each frame

	sent atomic.Uint64

	// check, if set, is one more thing the forwarding watch checks at
	// each look (a tc program still attached); onClose, if set, runs once
	// when the TAP is closed (letting go of the program).
	check, onClose func() error

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

// errOffloadRefused: the kernel's TUN driver does not know an offload.
var errOffloadRefused = errors.New("offloads refused")

// openTap creates a TAP with virtio-net headers of vnetLen bytes in the
// calling thread's namespace and asks for the first set of offloads in
// offloads the kernel takes, on the same device. extra adds TUN flags
// (IFF_TUN_EXCL). It returns the fd, the TAP's name (which the kernel
// picks for a name with %d) and the index in offloads of the set taken.
// An error wraps errOffloadRefused where the kernel refuses even the last
// set; the TAP is gone then.
func openTap(name string, extra uint16, vnetLen int, offloads ...int) (int, string, int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, "", 0, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	// Not a named result: a return of -1 must not change what is closed.
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return -1, "", 0, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | extra)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return -1, "", 0, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetLen); err != nil {
		return -1, "", 0, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}
	for used, offload := range offloads {
		if err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offload); err == nil {
			ok = true
			return fd, ifr.Name(), used, nil
		}
	}
	if errors.Is(err, unix.EINVAL) {
		return -1, "", 0, fmt.Errorf("TUNSETOFFLOAD: %w: %w", errOffloadRefused, err)
	}
	return -1, "", 0, fmt.Errorf("TUNSETOFFLOAD: %w", err)
}

// checkLocal refuses a local address that cannot be the outer source of
// the frames of the TAP name.
func checkLocal(kind, name string, local netip.Addr) error {
	if !local.Is4() || local.IsUnspecified() {
		return fmt.Errorf("%s %q: local address %s is not a unicast IPv4 address", kind, name, local)
	}
	return nil
}

// init makes t the forwarding TAP fd (name, in the calling thread's
// namespace), whose frames come from local: it sets the sysctls, brings
// the link up and starts the forwarding watch (set check before). On
// error the caller still owns fd.
func (t *forwardTap) init(kind, name string, fd int, local netip.Addr, vnetLen int) error {
	t.kind, t.name, t.fd, t.local, t.vnetLen = kind, name, fd, local.As4(), vnetLen
	t.stop = make(chan struct{})
	if err := t.configure(); err != nil {
		return err
	}
	// The calling thread's namespace, whatever namespace the process is in.
	var err error
	if t.snmp, err = os.Open("/proc/thread-self/net/snmp"); err != nil {
		return fmt.Errorf("%s %q: %w", kind, name, err)
	}
	if t.lastOut, err = t.transmitted(); err != nil {
		t.snmp.Close()
		return fmt.Errorf("%s %q: %w", kind, name, err)
	}
	t.file = os.NewFile(uintptr(fd), name)
	t.watching.Add(1)
	go t.routineWatchForwarding()
	return nil
}

// Err is nil while the kernel forwards what Send writes, and says why not
// once the forwarding watch saw it drop them.
func (t *forwardTap) Err() error {
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
// and stops once it has found it failing. Started by init.
func (t *forwardTap) routineWatchForwarding() {
	defer t.watching.Done()
	tick := time.NewTicker(forwardWatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			err := t.checkForwarding()
			if err == nil && t.check != nil {
				if err = t.check(); err != nil {
					err = fmt.Errorf("%s %s: %w", t.kind, t.name, err)
				}
			}
			if err != nil {
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
func (t *forwardTap) checkForwarding() error {
	t.watchMu.Lock()
	defer t.watchMu.Unlock()
	out, err := t.transmitted()
	if err != nil {
		return fmt.Errorf("%s %s: %w", t.kind, t.name, err)
	}
	sent := t.sent.Load()
	ds, dout := sent-t.lastSent, out-t.lastOut
	if ds >= forwardWatchNone && dout == 0 || ds >= forwardWatchMin && dout < ds/2 {
		t.lastSent, t.lastOut = sent, out
		return fmt.Errorf("%s %s: the kernel transmitted %d packets while %d superframes were written into it: a firewall (FORWARD chain) or policy drops them", t.kind, t.name, dout, ds)
	}
	if ds >= forwardWatchMin {
		t.lastSent, t.lastOut = sent, out
	}
	return nil
}

// transmitted reads Ip: OutTransmits from the namespace's /proc/net/snmp.
func (t *forwardTap) transmitted() (uint64, error) { return outTransmits(t.snmp) }

// outTransmits reads Ip: OutTransmits from snmp, an open /proc/net/snmp.
func outTransmits(snmp *os.File) (uint64, error) {
	var b [4096]byte
	n, err := snmp.ReadAt(b[:], 0)
	if n == 0 && err != nil {
		return 0, err
	}
	v, err := procnet.Counter(string(b[:n]), "Ip", "OutTransmits")
	if errors.Is(err, procnet.ErrNoCounter) {
		return 0, errOutTransmits
	}
	return v, err
}

// errOutTransmits: the forwarding watch needs Ip: OutTransmits.
var errOutTransmits = errors.New("no Ip: OutTransmits in /proc/net/snmp (Linux 6.3+)")

// checkOutTransmits says whether the calling thread's namespace counts
// Ip: OutTransmits, which the forwarding watch needs.
func checkOutTransmits() error {
	f, err := os.Open("/proc/thread-self/net/snmp")
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = outTransmits(f)
	return err
}

// configure learns the TAP's MAC (the Ethernet destination of every
// frame, so the kernel takes them as addressed to it), sets the sysctls
// the forwarding needs and brings the link up. The TAP gets no address
// except where addressForLooseRPFilter needs one; IPv6 is off on it so
// the kernel sends nothing into it.
func (t *forwardTap) configure() error {
	l, err := netlink.LinkByName(t.name)
	if err != nil {
		return fmt.Errorf("%s %q: %w", t.kind, t.name, err)
	}
	t.index = l.Attrs().Index
	if copy(t.mac[:], l.Attrs().HardwareAddr) != len(t.mac) {
		return fmt.Errorf("%s %q: no MAC address", t.kind, t.name)
	}
	// IPv6 first, while the link is down: no router solicitation leaves.
	writeSysctl("net/ipv6/conf/"+t.name+"/disable_ipv6", "1") // absent without IPv6
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + t.name + "/forwarding", "1"},
		{"net/ipv4/conf/" + t.name + "/accept_local", "1"},
		{"net/ipv4/conf/" + t.name + "/rp_filter", "0"},
	} {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return fmt.Errorf("%s %q: %w", t.kind, t.name, err)
		}
	}
	if err := t.addressForLooseRPFilter(l); err != nil {
		return fmt.Errorf("%s %q: %w", t.kind, t.name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s %q: set up: %w", t.kind, t.name, err)
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
func (t *forwardTap) addressForLooseRPFilter(l netlink.Link) error {
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
func (t *forwardTap) Name() string { return t.name }

// Sent is how many superframes Send has handed the kernel.
func (t *forwardTap) Sent() uint64 { return t.sent.Load() }

// writeOuterIPv4 writes, after the virtio-net header at the start of
// frame f (left as it is), the Ethernet header to the TAP's own MAC and
// an outer IPv4 header from the node to dst (protocol proto, TOS tos,
// TTL forwardTapOuterTTL, IP ID id, DF if df), its length covering the
// rest of f. It returns the offset of what follows the IPv4 header.
func (t *forwardTap) writeOuterIPv4(f []byte, proto, tos uint8, dst [4]byte, id uint16, df bool) int {
	outerIP := t.vnetLen + packet.EthernetHeaderLen
	eth := packet.Ethernet(f[t.vnetLen:outerIP])
	eth.SetDst(packet.MAC(t.mac))
	eth.SetSrc(packet.MAC(t.mac))
	eth.SetEtherType(packet.EtherTypeIPv4)

	ip := f[outerIP : outerIP+packet.IPv4MinHeaderLen]
	ip[0] = 0x45
	ip[1] = tos
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-outerIP))
	binary.BigEndian.PutUint16(ip[4:], id)
	var flags uint16
	if df {
		flags = 0x4000
	}
	binary.BigEndian.PutUint16(ip[6:], flags)
	ip[8] = forwardTapOuterTTL
	ip[9] = proto
	binary.BigEndian.PutUint16(ip[10:], 0)
	copy(ip[12:16], t.local[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], packet.Checksum(ip, 0))
	return outerIP + packet.IPv4MinHeaderLen
}

// forwardTapOuterTTL is the outer TTL written into frames; the kernel
// forwards them, so they leave with one less, as every routed packet.
const forwardTapOuterTTL = 64

// Send writes a frame built by Frame. It never blocks: the kernel takes
// the frame within the call (and usually forwards it there too).
func (t *forwardTap) Send(frame []byte) error {
	if err := t.write(frame); err != nil {
		return err
	}
	t.sent.Add(1)
	return nil
}

func (t *forwardTap) write(frame []byte) error {
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return os.ErrClosed
	}
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(t.fd), uintptr(unsafe.Pointer(&frame[0])), uintptr(len(frame)))
	t.mu.RUnlock()
	if e != 0 {
		return fmt.Errorf("%s %s: write: %w", t.kind, t.name, e)
	}
	return nil
}

// forwardTapProbeDeadline is how long Probe waits for its datagram.
const forwardTapProbeDeadline = time.Second

// Probe checks that a frame written into the TAP gets through the node's
// source address checks: it sends a small UDP datagram from the node's
// address to a socket of its own on that address and waits up to a
// second for it. Run it in the TAP's namespace.
func (t *forwardTap) Probe() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s %s probe: %w", t.kind, t.name, err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrInet4{Addr: t.local}); err != nil {
		return fmt.Errorf("%s %s probe: bind: %w", t.kind, t.name, err)
	}
	sa, err := unix.Getsockname(s)
	if err != nil {
		return fmt.Errorf("%s %s probe: %w", t.kind, t.name, err)
	}
	port := uint16(sa.(*unix.SockaddrInet4).Port)
	tv := unix.NsecToTimeval(forwardTapProbeDeadline.Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("%s %s probe: %w", t.kind, t.name, err)
	}
	var nonce [8]byte
	binary.BigEndian.PutUint64(nonce[:], uint64(time.Now().UnixNano()))
	f := make([]byte, t.vnetLen+packet.EthernetHeaderLen+packet.IPv4MinHeaderLen+udpHeaderLen+len(nonce))
	u := f[t.writeOuterIPv4(f, packet.ProtoUDP, 0, t.local, 0, false):]
	binary.BigEndian.PutUint16(u[0:], port)
	binary.BigEndian.PutUint16(u[2:], port)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[udpHeaderLen:], nonce[:])
	if err := t.write(f); err != nil {
		return err
	}
	var got [16]byte
	for {
		n, _, err := unix.Recvfrom(s, got[:], 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("%s %s: a frame written into it did not arrive within %v: the kernel's source checks (rp_filter strict on \"all\"?) or its firewall drop it", t.kind, t.name, forwardTapProbeDeadline)
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("%s %s probe: %w", t.kind, t.name, err)
		}
		if n == len(nonce) && [8]byte(got[:8]) == nonce {
			return nil
		}
	}
}

// QueueDrops is how many frames the kernel dropped on their way to the
// TAP's reader because its queue was full (its tx_dropped): replies NAT's
// tc program steered into a PlainTap faster than NAT read them.
func (t *forwardTap) QueueDrops() (uint64, error) {
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return 0, os.ErrClosed
	}
	nsfd, name, err := queuedrops.TunLocation(t.fd)
	t.mu.RUnlock()
	if err == nil {
		var n uint64
		if n, err = queuedrops.TunTxDropped(nsfd, name); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s %s: queue drops: %w", t.kind, t.name, err)
}

// Close removes the TAP.
func (t *forwardTap) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.stopWatch()
	t.snmp.Close()
	err := t.file.Close()
	if t.onClose != nil {
		err = errors.Join(err, t.onClose())
	}
	return err
}

// stopWatch ends the forwarding watch (Close; tests, to drive
// checkForwarding themselves).
func (t *forwardTap) stopWatch() {
	t.stopOnce.Do(func() { close(t.stop) })
	t.watching.Wait()
}
