package syscheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"podnet/encap"
	"podnet/internal/netnsutil"
	"podnet/nat"
	"podnet/routing"
)

// Encapsulation overheads, as the daemon subtracts them from the
// underlay's MTU for pods: an outer IPv4 header, and for VXLAN also the
// UDP and VXLAN headers and the inner Ethernet header.
const (
	IPIPOverhead  = encap.IPIPOverhead
	VXLANOverhead = encap.VXLANOverhead
	// minPodMTU is IPv4's minimum; the daemon never goes below it.
	minPodMTU = routing.MinPodMTU
)

// The capabilities the daemon uses, and for what.
var neededCaps = []struct {
	bit  uint
	name string
	for_ string
}{
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "TUN/TAP devices, routes, addresses, sysctls"},
	{unix.CAP_NET_RAW, "CAP_NET_RAW", "the raw IP-in-IP socket, and AF_PACKET for capture"},
	{unix.CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE", "BGP's port 179"},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "entering pods' network namespaces, making namespaces for pod add --new"},
}

func checkCapabilities(cfg Config) Result {
	const name = "capabilities"
	eff, err := effectiveCaps()
	if err != nil {
		return problem(name, fmt.Sprintf("cannot read this process's capabilities: %v", err), "run as root")
	}
	var missing []string
	for _, c := range neededCaps {
		if c.bit == unix.CAP_NET_BIND_SERVICE && cfg.BGPPort >= unprivilegedPortStart() {
			continue
		}
		if eff&(1<<c.bit) == 0 {
			missing = append(missing, c.name+" ("+c.for_+")")
		}
	}
	who := fmt.Sprintf("uid %d", os.Geteuid())
	if os.Geteuid() == 0 {
		who = "root"
	}
	if len(missing) > 0 {
		return problem(name, who+", missing "+strings.Join(missing, "; "),
			"run the daemon as root (the systemd unit does), or give it these capabilities (AmbientCapabilities= in the unit)")
	}
	return ok(name, who+" with CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE and CAP_SYS_ADMIN")
}

// effectiveCaps reads CapEff of this process.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "CapEff:"); found {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

func unprivilegedPortStart() int {
	if n, err := sysctlInt("net.ipv4.ip_unprivileged_port_start"); err == nil {
		return n
	}
	return 1024
}

// checkTUN opens /dev/net/tun and asks which kinds of device it makes
// (TUNGETFEATURES creates no device): podnet0 is a TUN and each pod's
// port a TAP, both with virtio headers for TSO.
func checkTUN() Result {
	const name, dev = "tun", "/dev/net/tun"
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		fix := "load the tun module (modprobe tun; add it to /etc/modules-load.d/) or create the device (mknod /dev/net/tun c 10 200)"
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			fix = "run as root; in a container, allow the device (e.g. --device /dev/net/tun)"
		}
		return problem(name, fmt.Sprintf("open %s: %v", dev, err), fix)
	}
	defer unix.Close(fd)
	var features uint32
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNGETFEATURES, uintptr(unsafe.Pointer(&features))); errno != 0 {
		return problem(name, fmt.Sprintf("%s: TUNGETFEATURES: %v", dev, errno), "use a kernel with TUN/TAP support (CONFIG_TUN)")
	}
	need := []struct {
		flag uint32
		name string
	}{{unix.IFF_TUN, "IFF_TUN"}, {unix.IFF_TAP, "IFF_TAP"}, {unix.IFF_NO_PI, "IFF_NO_PI"}, {unix.IFF_VNET_HDR, "IFF_VNET_HDR"}}
	var missing []string
	for _, f := range need {
		if features&f.flag == 0 {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return problem(name, dev+" lacks "+strings.Join(missing, ", "), "use a newer kernel (TUN/TAP with virtio headers)")
	}
	return ok(name, dev+" opens; TUN and TAP with virtio headers")
}

// checkRawIPIP opens what the daemon's IP-in-IP transport opens: a raw
// IPPROTO_IPIP socket with IP_HDRINCL. podnet encapsulates itself; the
// kernel's ipip module is not needed.
func checkRawIPIP() Result {
	const name = "raw-ipip"
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_IPIP)
	if err != nil {
		return problem(name, fmt.Sprintf("raw IP-in-IP socket: %v", err), "run as root or with CAP_NET_RAW")
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
		return problem(name, fmt.Sprintf("IP_HDRINCL: %v", err), "use a kernel with raw IP sockets")
	}
	return ok(name, "raw IPPROTO_IPIP socket with IP_HDRINCL (podnet encapsulates itself: no ipip module needed)")
}

// checkNetns makes a network namespace and leaves it at once: pods live
// in namespaces, and the daemon enters them to set up each pod's eth0.
func checkNetns() Result {
	const name = "netns"
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return problem(name, "no network namespaces: "+err.Error(), "use a kernel with CONFIG_NET_NS")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.New() // unshare: the thread is now in it
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ns.Close()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return to the original namespace: %w", err)
			return // the thread stays locked and Go discards it
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return problem(name, "cannot create a network namespace: "+err.Error(), "run as root or with CAP_SYS_ADMIN")
	}
	if fi, err := os.Stat("/run/netns"); err == nil && !fi.IsDir() {
		return problem(name, "/run/netns is not a directory", "remove it: the daemon keeps the namespaces of pod add --new there")
	}
	return ok(name, "network namespaces can be made (pods' namespaces; pod add --new uses /run/netns)")
}

// checkIPForward: the switch forwards between pods, tunnels and NAT in
// userspace, but traffic that is not encapsulated crosses the node's
// kernel: routes of pools with ipipMode/vxlanMode Never (or CrossSubnet
// within a subnet) and prefixes learned from outside the pools go out
// through podnet0 and the kernel's routing to the next hop, and such
// traffic from other nodes comes in through the kernel to podnet0. The
// daemon turns forwarding on when it starts.
func checkIPForward(cfg Config) Result {
	const name, key = "ip-forward", "net.ipv4.ip_forward"
	const why = "used by unencapsulated routes only: pools with modes Never, CrossSubnet within a subnet, routes from outside the pools"
	v, err := readSysctl(key)
	if err != nil {
		return problem(name, fmt.Sprintf("read %s: %v", key, err), "mount /proc")
	}
	if v == "1" {
		return ok(name, key+" = 1 ("+why+")")
	}
	fix := "sysctl -w " + key + "=1, and keep it in /etc/sysctl.d/ (something turned it off after the daemon started)"
	if cfg.DaemonPID != 0 || cfg.DaemonInfo != "" {
		return problem(name, key+" = "+v+" while the daemon runs: "+why, fix)
	}
	// Not running: the daemon sets it at start if it can write it.
	f, err := os.OpenFile("/proc/sys/net/ipv4/ip_forward", os.O_WRONLY, 0)
	if err != nil {
		return problem(name, key+" = "+v+" and the daemon could not turn it on: "+err.Error()+"; "+why,
			"sysctl -w "+key+"=1 where /proc/sys is writable (outside the container), and keep it in /etc/sysctl.d/")
	}
	f.Close()
	return ok(name, key+" = "+v+"; the daemon turns it on when it starts ("+why+")")
}

func checkBGPPort(cfg Config) Result {
	const name = "bgp-port"
	port := cfg.BGPPort
	holders, err := listeners("tcp", port)
	if err != nil {
		return problem(name, fmt.Sprintf("list TCP listeners: %v", err), "mount /proc")
	}
	if len(holders) == 0 {
		return ok(name, fmt.Sprintf("TCP port %d is free for BGP", port))
	}
	if others := notDaemon(holders, cfg.DaemonPID); len(others) > 0 {
		return problem(name, fmt.Sprintf("TCP port %d is held by %s", port, describe(others)),
			fmt.Sprintf("stop that program (another BGP daemon: bird, frr, gobgpd?), or give podnet another port with a BGPConfiguration's listenPort (its peers must then dial that port)"))
	}
	return ok(name, fmt.Sprintf("TCP port %d is held by the podnet daemon (pid %d)", port, cfg.DaemonPID))
}

func checkVXLANPort(cfg Config) Result {
	const name = "vxlan-port"
	port := cfg.VXLANPort
	holders, err := listeners("udp", port)
	if err != nil {
		return problem(name, fmt.Sprintf("list UDP sockets: %v", err), "mount /proc")
	}
	if len(holders) == 0 {
		return ok(name, fmt.Sprintf("UDP port %d is free for VXLAN", port))
	}
	if others := notDaemon(holders, cfg.DaemonPID); len(others) > 0 {
		return problem(name, fmt.Sprintf("UDP port %d is held by %s", port, describe(others)),
			"delete the kernel VXLAN device using it (ip -d link show type vxlan; flannel and Calico make one), stop that program, or give podnet another --vxlan-port (the same on every node)")
	}
	return ok(name, fmt.Sprintf("UDP port %d is held by the podnet daemon (pid %d)", port, cfg.DaemonPID))
}

// checkMTU finds the underlay as the daemon does and says which pod MTU
// each encapsulation leaves.
func checkMTU(cfg Config) Result {
	const name = "mtu"
	iface := cfg.Underlay
	how := cfg.UnderlayFrom
	if how == "" {
		how = "given"
	}
	if iface == "" {
		iface, how = netnsutil.DefaultRouteLink(), "the default route's"
		if iface == "" {
			return problem(name, "no default route, so no underlay interface to pick",
				"give the daemon --underlay IFACE (underlay: in /etc/podnet/daemon.yaml)")
		}
	}
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return problem(name, fmt.Sprintf("underlay %s (%s): %v", iface, how, err), "give --underlay an existing interface toward the other nodes")
	}
	mtu := l.Attrs().MTU
	detail := fmt.Sprintf("underlay %s (%s) MTU %d: pod MTU %d with IP-in-IP (-%d), %d with VXLAN (-%d), %d without encapsulation",
		iface, how, mtu, routing.PodMTU(mtu, IPIPOverhead), IPIPOverhead, routing.PodMTU(mtu, VXLANOverhead), VXLANOverhead, mtu)
	if cfg.PodMTU > 0 {
		detail += fmt.Sprintf("; --pod-mtu %d is set", cfg.PodMTU)
		if cfg.PodMTU > mtu-IPIPOverhead {
			return warn(name, detail, fmt.Sprintf("lower --pod-mtu to at most %d (IP-in-IP) or %d (VXLAN) when pools encapsulate: larger pod packets are refused with ICMP fragmentation-needed", mtu-IPIPOverhead, mtu-VXLANOverhead))
		}
	}
	if l.Attrs().OperState != netlink.OperUp && l.Attrs().OperState != netlink.OperUnknown {
		return problem(name, detail+fmt.Sprintf("; %s is %s", iface, l.Attrs().OperState), "ip link set "+iface+" up")
	}
	if mtu <= VXLANOverhead+minPodMTU {
		return warn(name, detail, "the underlay's MTU is too small for an encapsulated pod MTU of at least 576: raise it, or use pools without encapsulation")
	}
	return ok(name, detail)
}

// checkUDPOffload asks for what the VXLAN transport and NAT's UDP flows
// use when they can: UDP_SEGMENT (GSO, Linux 4.18) to send many datagrams
// per call and UDP_GRO (Linux 5.0) to receive many per call. Without
// them they send and receive one datagram at a time: slower, still
// correct.
func checkUDPOffload() Result {
	const name = "udp-offload"
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return problem(name, "UDP socket: "+err.Error(), "check that this namespace has IPv4")
	}
	defer unix.Close(fd)
	var missing []string
	if _, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT); err != nil {
		missing = append(missing, "UDP_SEGMENT (GSO): "+err.Error())
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1); err != nil {
		missing = append(missing, "UDP_GRO: "+err.Error())
	}
	if len(missing) > 0 {
		return warn(name, "VXLAN and NAT's UDP without "+strings.Join(missing, "; ")+": one datagram per system call", "use Linux 5.0 or later for faster VXLAN and UDP through NAT")
	}
	return ok(name, "UDP_SEGMENT (GSO) and UDP_GRO for VXLAN and NAT's UDP")
}

// checkVXLANSuperframes: where the kernel's TAPs take UDP-tunnel
// superframes (Linux 6.17+), or else the daemon can mark plain ones with
// a tc program, it sends VXLAN TCP superframes whole through a TAP of its
// own and the kernel forwards them; a strict rp_filter on all stops that.
// Without it they are cut in userspace: slower, still correct.
func checkVXLANSuperframes() Result {
	const name = "vxlan-superframes"
	how := "TAPs take UDP-tunnel superframes"
	if err := encap.CheckUDPTunnelGSO(); err != nil {
		if !errors.Is(err, encap.ErrNoUDPTunnelGSO) {
			return warn(name, "VXLAN TCP superframes are cut in userspace: "+err.Error(), "see the tun check: the daemon needs /dev/net/tun and CAP_NET_ADMIN")
		}
		if merr := encap.CheckVXLANTapMarked(); merr != nil {
			return warn(name, "VXLAN TCP superframes are cut in userspace: "+err.Error()+"; marking them with a tc program instead: "+merr.Error(),
				"use Linux 6.17 or later, or give the daemon bpf(2) (root, or CAP_BPF with CAP_NET_ADMIN), tc's clsact and cls_bpf, and Linux 6.3 or later, for VXLAN at about twice the speed")
		}
		how = "the TAP's tc program marks superframes as VXLAN (this kernel's TAPs take no UDP-tunnel superframes)"
	}
	if n, err := sysctlInt("net.ipv4.conf.all.rp_filter"); err == nil && n == 1 {
		return warn(name, "the daemon can send VXLAN superframes whole, but net.ipv4.conf.all.rp_filter is 1 (strict), which drops them: they are cut in userspace",
			"set net.ipv4.conf.all.rp_filter to 2 (loose) or 0")
	}
	return ok(name, how+": the daemon sends VXLAN TCP superframes whole through podnetvx0 unless --vxlan-superframes=false (the node must forward from it: a FORWARD chain that drops it turns this off)")
}

// checkIPIPSuperframes: where the daemon can load its tc program (bpf(2),
// the clsact qdisc, cls_bpf), it sends IP-in-IP TCP superframes whole
// through a TAP of its own and the kernel forwards them; a strict
// rp_filter on all stops that. Without it they are cut in userspace:
// much slower, still correct.
func checkIPIPSuperframes() Result {
	const name = "ipip-superframes"
	if err := encap.CheckIPIPTap(); err != nil {
		return warn(name, "IP-in-IP TCP superframes are cut in userspace: "+err.Error(),
			"the daemon needs bpf(2) (root, or CAP_BPF with CAP_NET_ADMIN), /dev/net/tun, and tc's clsact qdisc and cls_bpf (CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_BPF) for IP-in-IP at several times the speed")
	}
	if n, err := sysctlInt("net.ipv4.conf.all.rp_filter"); err == nil && n == 1 {
		return warn(name, "the tc program loads, but net.ipv4.conf.all.rp_filter is 1 (strict), which drops what the TAP writes: IP-in-IP superframes are cut in userspace",
			"set net.ipv4.conf.all.rp_filter to 2 (loose) or 0")
	}
	return ok(name, "the tc program loads: the daemon sends IP-in-IP TCP superframes whole through podnetipip0 unless --ipip-superframes=false (the node must forward from it: a FORWARD chain that drops it turns this off)")
}

// checkNATPacketPath: where the daemon can load NAT's tc program, NAT
// outgoing TCP to remotes routed out of the underlay is rewritten and
// forwarded by the kernel through a TAP of its own, replies steered back
// by the program; a strict rp_filter on all stops the TAP's packets.
// Without it every connection ends in NAT's netstack: slower, still
// correct.
func checkNATPacketPath() Result {
	const name = "nat-packet-path"
	if err := nat.CheckPacketPath(); err != nil {
		return warn(name, "NAT outgoing TCP goes through the netstack (about half the new connections per second): "+err.Error(),
			"the daemon needs bpf(2) (root, or CAP_BPF with CAP_NET_ADMIN) and tcx links (Linux 6.6+) or tc's clsact and cls_bpf")
	}
	if n, err := sysctlInt("net.ipv4.conf.all.rp_filter"); err == nil && n == 1 {
		return warn(name, "the tc program loads, but net.ipv4.conf.all.rp_filter is 1 (strict), which drops what the TAP writes: NAT outgoing TCP goes through the netstack",
			"set net.ipv4.conf.all.rp_filter to 2 (loose) or 0")
	}
	return ok(name, "the tc program loads: NAT outgoing TCP to remotes routed out of the underlay is forwarded by the kernel through "+nat.PlainTapName+" unless --nat-packet-path=false (the node must forward from it: a FORWARD chain that drops it turns this off)")
}

// checkForwardFirewall looks for nftables chains on the forward hook
// whose policy is drop (Docker sets one): the node's kernel forwards
// routed pools' packets (from and to podnet0), VXLAN and IP-in-IP
// superframes (from podnetvx0 and podnetipip0) and NAT's packet path
// (from podnetnat0), and such a chain drops them unless a rule accepts
// them. It also looks there for rules that drop what conntrack calls
// invalid (firewalld and many hardened rule sets have one): the node's
// conntrack sees NAT's packet path one way only (the replies go to the
// daemon before it), so after the SYN it calls every packet invalid.
// listRuleset returns `nft -j list ruleset` of the namespace to look at.
func checkForwardFirewall(listRuleset func() ([]byte, error)) Result {
	const name = "forward-firewall"
	out, err := listRuleset()
	if errors.Is(err, exec.ErrNotFound) {
		return ok(name, "nft is not installed: forward-hook chains not looked at")
	}
	if err != nil {
		return warn(name, "nft -j list ruleset: "+err.Error(), "run as root to let checksystem read the ruleset")
	}
	type chainID struct{ Family, Table, Name string }
	var doc struct {
		Nftables []struct {
			Chain *struct {
				Family, Table, Name, Hook, Policy string
			} `json:"chain"`
			Rule *struct {
				Family, Table, Chain string
				Expr                 json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return warn(name, "nft -j list ruleset: "+err.Error(), "")
	}
	forward := map[chainID]bool{}
	var dropping, invalid []string
	for _, e := range doc.Nftables {
		if c := e.Chain; c != nil && c.Hook == "forward" {
			forward[chainID{c.Family, c.Table, c.Name}] = true
			if c.Policy == "drop" {
				dropping = append(dropping, c.Family+" "+c.Table+" "+c.Name)
			}
		}
	}
	for _, e := range doc.Nftables {
		if r := e.Rule; r != nil && forward[chainID{r.Family, r.Table, r.Chain}] {
			expr := string(r.Expr)
			if strings.Contains(expr, `"ct"`) && strings.Contains(expr, `"invalid"`) && strings.Contains(expr, `"drop"`) {
				invalid = append(invalid, r.Family+" "+r.Table+" "+r.Chain)
			}
		}
	}
	var details, fixes []string
	if len(dropping) > 0 {
		details = append(details, "forward chain(s) with policy drop: "+strings.Join(dropping, ", ")+
			"; unless their rules accept them, packets of routed pools (podnet0), VXLAN and IP-in-IP superframes and NAT's packet path (podnetvx0, podnetipip0, podnetnat0, which the daemon then stops using) are dropped")
		fixes = append(fixes, "accept in those chains what comes in on podnet0, podnetvx0, podnetipip0 and podnetnat0 and what goes out to podnet0, e.g. nft insert rule <family> <table> <chain> iifname { podnet0, podnetvx0, podnetipip0, podnetnat0 } accept")
	}
	if len(invalid) > 0 {
		details = append(details, "forward chain(s) that drop conntrack state invalid: "+strings.Join(slices.Compact(invalid), ", ")+
			"; the node's conntrack sees NAT's TCP packet path (podnetnat0) one way only and calls its packets invalid after the SYN, so its connections stall (the daemon notices after a few and takes new ones through its netstack)")
		fixes = append(fixes, "accept what comes in on podnetnat0 before that rule, e.g. nft insert rule <family> <table> <chain> iifname podnetnat0 accept, or run the daemon with --nat-packet-path=false")
	}
	if len(details) > 0 {
		return warn(name, strings.Join(details, ". "), strings.Join(fixes, "; "))
	}
	return ok(name, "no nftables forward chain drops by default or drops invalid packets")
}

// nftListRuleset runs `nft -j list ruleset` in the caller's namespace.
func nftListRuleset() ([]byte, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(path, "-j", "list", "ruleset").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, err
	}
	return out, nil
}

// checkAFPacket opens what `podnet capture underlay` opens.
func checkAFPacket() Result {
	const name = "af-packet"
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return warn(name, "AF_PACKET socket: "+err.Error()+"; only 'podnet capture underlay' needs it",
			"run as root or with CAP_NET_RAW; load af_packet")
	}
	unix.Close(fd)
	return ok(name, "AF_PACKET sockets (podnet capture underlay)")
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// checkKernelTunnels: the kernel's ipip and vxlan modules are not needed,
// but when ipip is loaded its fallback device tunl0, if up, decapsulates
// the same IP-in-IP packets podnet's raw socket receives and delivers them
// a second time.
func checkKernelTunnels() Result {
	const name = "kernel-tunnels"
	links, err := netlink.LinkList()
	if err != nil {
		return problem(name, "list links: "+err.Error(), "run as root")
	}
	var up []string
	for _, l := range links {
		if l.Type() == "ipip" && l.Attrs().Flags&unix.IFF_UP != 0 {
			up = append(up, l.Attrs().Name)
		}
	}
	if len(up) > 0 {
		return problem(name, "kernel IP-in-IP device "+strings.Join(up, ", ")+" is up: the kernel then decapsulates podnet's IP-in-IP too and delivers packets twice",
			"ip link set "+up[0]+" down (or unload the ipip module: podnet does not need it)")
	}
	return ok(name, "no kernel IP-in-IP device up (the ipip and vxlan modules are not needed)")
}

// A holder is a process with a socket on the port (PID 0: none found,
// e.g. a kernel socket such as a VXLAN device's).
type holder struct {
	pid  int
	comm string
}

func describe(hs []holder) string {
	var ss []string
	for _, h := range hs {
		if h.pid == 0 {
			ss = append(ss, "a socket of no process (the kernel's, e.g. a vxlan device)")
			continue
		}
		ss = append(ss, fmt.Sprintf("%s (pid %d)", h.comm, h.pid))
	}
	return strings.Join(ss, ", ")
}

func notDaemon(hs []holder, daemon int) []holder {
	var out []holder
	for _, h := range hs {
		if daemon == 0 || h.pid != daemon {
			out = append(out, h)
		}
	}
	return out
}

// listeners finds the sockets of this network namespace bound to port
// (TCP: listening; UDP: any) and the processes that hold them.
func listeners(proto string, port int) ([]holder, error) {
	state := "0A" // TCP_LISTEN
	if proto == "udp" {
		state = "07" // TCP_CLOSE: how /proc lists an unconnected UDP socket
	}
	inodes := map[string]bool{}
	runtime.LockOSThread() // thread-self: this thread's namespace
	defer runtime.UnlockOSThread()
	for _, file := range []string{proto, proto + "6"} {
		b, err := os.ReadFile("/proc/thread-self/net/" + file)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && file != proto {
				continue // no IPv6
			}
			return nil, err
		}
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != state {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err != nil || int(p) != port {
				continue
			}
			inodes[f[9]] = true
		}
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	owners := socketOwners(inodes)
	var hs []holder
	for ino := range inodes {
		if ino == "0" || owners[ino].pid == 0 {
			hs = append(hs, holder{})
			continue
		}
		hs = append(hs, owners[ino])
	}
	return hs, nil
}

// socketOwners maps socket inodes to a process that has them open.
func socketOwners(inodes map[string]bool) map[string]holder {
	out := map[string]holder{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + p.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(dir + fd.Name())
			if err != nil {
				continue
			}
			ino, found := strings.CutPrefix(target, "socket:[")
			if !found {
				continue
			}
			ino = strings.TrimSuffix(ino, "]")
			if inodes[ino] {
				if _, seen := out[ino]; !seen {
					comm, _ := os.ReadFile("/proc/" + p.Name() + "/comm")
					out[ino] = holder{pid: pid, comm: strings.TrimSpace(string(comm))}
				}
			}
		}
	}
	return out
}

// DaemonPID returns the process serving the unix socket at path: the
// kernel records the listener's credentials (SO_PEERCRED).
func DaemonPID(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return 0, fmt.Errorf("connect %s: %w", path, err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, fmt.Errorf("SO_PEERCRED on %s: %w", path, err)
	}
	return int(cred.Pid), nil
}
