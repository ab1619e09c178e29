package vswitch

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/packet"
	"podnet/switch/tap"
)

// PodIfName is the pod's side of its port, as Calico names it.
const PodIfName = "eth0"

// PodLinkConfig describes the interface to give a pod.
type PodLinkConfig struct {
	// Pod names the pod; the TAP's temporary name in the node namespace
	// is derived from it. Required.
	Pod string
	// Netns is the pod's network namespace path (/run/netns/NAME). Required.
	Netns string
	// IP is the pod's address; it gets IP/32. Required.
	IP netip.Addr
	// MTU of the pod's eth0; 0 means 1500.
	MTU int
	// Offload opens the TAP with virtio headers and TSO; false = plain.
	Offload bool
	// QueueLen is the TAP's txqueuelen: frames the pod sends that wait
	// for the switch's reader; 0 leaves the kernel's default (1000).
	QueueLen int
}

// MaxPodQueueLen bounds PodLinkConfig.QueueLen. A frame waiting in a
// pod's TAP may be a 64 KiB superframe, in kernel memory no cgroup of the
// pod's is charged for: 1000 frames are up to 64 MiB, this many 4 GiB.
const MaxPodQueueLen = 1 << 16

// TempTAPName is the name a pod's TAP has in the node namespace before it
// moves: "pn" + 11 hex digits of SHA-1(pod), like Calico's cali+11.
func TempTAPName(pod string) string {
	sum := sha1.Sum([]byte(pod))
	return "pn" + hex.EncodeToString(sum[:])[:11]
}

// CreatePodLink creates a persistent TAP for the pod in the caller's (the
// node's) namespace, moves it into the pod's namespace as eth0 and
// configures it the way Calico configures a pod: IP/32, the MTU, a link
// route to 169.254.1.1 and the default route through it. It returns the
// open device and the pod's MAC. On any failure nothing is left behind.
func CreatePodLink(cfg PodLinkConfig) (*tap.Device, packet.MAC, error) {
	var mac packet.MAC
	if cfg.Pod == "" || cfg.Netns == "" || !cfg.IP.Is4() {
		return nil, mac, errors.New("create pod link: Pod, Netns and an IPv4 IP are required")
	}
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	podNS, err := netns.GetFromPath(cfg.Netns)
	if err != nil {
		return nil, mac, fmt.Errorf("pod %s: open netns %s: %w", cfg.Pod, cfg.Netns, err)
	}
	defer podNS.Close()
	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return nil, mac, fmt.Errorf("pod %s: netlink in %s: %w", cfg.Pod, cfg.Netns, err)
	}
	defer ph.Close()
	if _, err := ph.LinkByName(PodIfName); err == nil {
		return nil, mac, fmt.Errorf("pod %s: netns %s already has an %s", cfg.Pod, cfg.Netns, PodIfName)
	}

	name := TempTAPName(cfg.Pod)
	if _, err := netlink.LinkByName(name); err == nil {
		return nil, mac, fmt.Errorf("pod %s: device %s already exists in the node namespace", cfg.Pod, name)
	}
	// A pod's UDP_SEGMENT sends reach the reader whole (one read for a
	// burst of datagrams) where the kernel has USO.
	dev, err := tap.Open(tap.Config{Name: name, Offload: cfg.Offload, Persist: true, ReadUDPSuperframes: true})
	if err != nil {
		return nil, mac, fmt.Errorf("pod %s: %w", cfg.Pod, err)
	}
	moved := false
	fail := func(err error) (*tap.Device, packet.MAC, error) {
		// Without persist the kernel deletes the device when the fd closes,
		// wherever it is now.
		dev.SetPersist(false)
		dev.Close()
		if moved {
			if l, lerr := ph.LinkByName(PodIfName); lerr == nil {
				ph.LinkDel(l)
			}
		}
		return nil, packet.MAC{}, fmt.Errorf("pod %s: %w", cfg.Pod, err)
	}

	l, err := netlink.LinkByName(name)
	if err != nil {
		return fail(fmt.Errorf("find %s: %w", name, err))
	}
	if err := netlink.LinkSetNsFd(l, int(podNS)); err != nil {
		return fail(fmt.Errorf("move %s into %s: %w", name, cfg.Netns, err))
	}
	moved = true
	pl, err := ph.LinkByName(name)
	if err != nil {
		return fail(fmt.Errorf("find %s in %s: %w", name, cfg.Netns, err))
	}
	if err := ph.LinkSetName(pl, PodIfName); err != nil {
		return fail(fmt.Errorf("rename %s to %s: %w", name, PodIfName, err))
	}
	if err := configurePodIf(ph, cfg); err != nil {
		return fail(err)
	}
	mac, err = podMAC(ph)
	if err != nil {
		return fail(err)
	}
	return dev, mac, nil
}

func configurePodIf(h *netlink.Handle, cfg PodLinkConfig) error {
	l, err := h.LinkByName(PodIfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", PodIfName, err)
	}
	if err := h.LinkSetMTU(l, cfg.MTU); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", cfg.MTU, PodIfName, err)
	}
	if err := setQueueLen(h, l, cfg.QueueLen); err != nil {
		return err
	}
	// The pod routes IPv4 only; IPv6 would just send router solicitations
	// and MLD reports for the switch to drop. Best effort: the sysctl is
	// absent when the kernel has no IPv6.
	netnsutil.Do(cfg.Netns, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+PodIfName+"/disable_ipv6", []byte("1"), 0)
	})
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := h.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("add address %s/32 to %s: %w", cfg.IP, PodIfName, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", PodIfName, err)
	}
	gw := GatewayIP.AsSlice()
	if err := h.RouteAdd(&netlink.Route{
		LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)},
	}); err != nil {
		return fmt.Errorf("add route %s dev %s: %w", GatewayIP, PodIfName, err)
	}
	if err := h.RouteAdd(&netlink.Route{
		LinkIndex: l.Attrs().Index, Gw: gw,
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
	}); err != nil {
		return fmt.Errorf("add default route via %s: %w", GatewayIP, err)
	}
	return nil
}

func podMAC(h *netlink.Handle) (packet.MAC, error) {
	var mac packet.MAC
	l, err := h.LinkByName(PodIfName)
	if err != nil {
		return mac, fmt.Errorf("find %s: %w", PodIfName, err)
	}
	hw := l.Attrs().HardwareAddr
	if len(hw) != 6 {
		return mac, fmt.Errorf("%s has no Ethernet address", PodIfName)
	}
	copy(mac[:], hw)
	return mac, nil
}

// setQueueLen sets l's txqueuelen to n, unless n is 0.
func setQueueLen(h *netlink.Handle, l netlink.Link, n int) error {
	if n == 0 {
		return nil
	}
	if n < 0 || n > MaxPodQueueLen {
		return fmt.Errorf("txqueuelen %d out of range (1..%d)", n, MaxPodQueueLen)
	}
	if err := h.LinkSetTxQLen(l, n); err != nil {
		return fmt.Errorf("set txqueuelen %d on %s: %w", n, l.Attrs().Name, err)
	}
	return nil
}

// SetPodQueueLen makes n (not 0) the txqueuelen of the pod's eth0
// (PodLinkConfig.QueueLen), as the daemon does for the pods it
// re-attaches.
func SetPodQueueLen(netnsPath string, n int) error {
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	h, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	l, err := h.LinkByName(PodIfName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", PodIfName, netnsPath, err)
	}
	return setQueueLen(h, l, n)
}

// ReattachPodLink opens the persistent TAP that is the pod's eth0 again,
// after a daemon restart, and returns it with the pod's MAC. The TAP must
// be opened from inside the pod's namespace: TUNSETIFF looks the name up in
// the namespace of the thread that opened /dev/net/tun.
func ReattachPodLink(netnsPath string, offload bool) (*tap.Device, packet.MAC, error) {
	var mac packet.MAC
	var dev *tap.Device
	err := netnsutil.Do(netnsPath, func() error {
		l, err := netlink.LinkByName(PodIfName)
		if err != nil {
			return fmt.Errorf("find %s: %w", PodIfName, err)
		}
		if l.Type() != "tuntap" {
			return fmt.Errorf("%s is a %s, not a TAP podnet made", PodIfName, l.Type())
		}
		dev, err = tap.Open(tap.Config{Name: PodIfName, Offload: offload, ReadUDPSuperframes: true})
		if err != nil {
			return err
		}
		copy(mac[:], l.Attrs().HardwareAddr)
		return nil
	})
	if err != nil {
		return nil, mac, fmt.Errorf("reattach %s in %s: %w", PodIfName, netnsPath, err)
	}
	return dev, mac, nil
}

// DeletePodLink removes the pod's eth0 (its TAP) from its namespace. A
// namespace or link that is already gone is not an error.
func DeletePodLink(netnsPath string) error {
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	h, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	l, err := h.LinkByName(PodIfName)
	if err != nil {
		return nil
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s in %s: %w", PodIfName, netnsPath, err)
	}
	return nil
}
