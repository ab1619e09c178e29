// Package node assembles one podnet node: the switch with its pod and host
// ports, the control loop that owns the node's state (pods, addresses,
// what the datastore and BGP say) and publishes route tables to the
// switch, the pod records that survive restarts, and the server side of
// the local API (package nodeapi is its client). Routing policy is
// package routing's; this package reads its inputs and applies its
// answers.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"podnet/api"
	"podnet/datastore"
	"podnet/encap"
	"podnet/internal/netnsutil"
	"podnet/internal/packet"
	"podnet/internal/privsock"
	"podnet/ipam"
	"podnet/nat"
	"podnet/nodeapi"
	"podnet/resources"
	"podnet/router/bgp"
	vswitch "podnet/switch"
)

// DefaultStateDir is where pod records (and the embedded etcd) live
// unless configured.
const DefaultStateDir = "/var/lib/podnet"

// Config configures a node daemon.
type Config struct {
	// Name is the node name, a lower-case DNS subdomain as Calico's
	// Node names; "" means the host name, lower-cased.
	Name string
	// Underlay is the interface that carries traffic to other nodes; ""
	// means the interface of the default route, else the first up
	// non-loopback interface with an IPv4 address.
	Underlay string
	// StateDir holds the pod records; "" means DefaultStateDir.
	StateDir string
	// Socket is the local API's unix socket; "" means
	// nodeapi.DefaultSocket.
	Socket string
	// PodNetnsPrefix starts the names of the network namespaces that pod
	// add --new creates; "" means "<node name>-". A lab gives its own
	// prefix so that two labs' pods never share a name.
	PodNetnsPrefix string
	// TapOffload opens pod TAPs with virtio headers and TSO. When false
	// pods get plain TAPs (github.com/songgao/water), one frame per read.
	TapOffload bool
	// NoVXLANSuperframes makes the switch cut TCP superframes for VXLAN
	// in userspace always. By default it sends them whole through a TAP
	// of its own (VXLANTapName) for the kernel to segment, where the
	// kernel can (Linux 6.17+, or a tc program marks them) and a probe
	// frame gets through.
	NoVXLANSuperframes bool
	// NoIPIPSuperframes does the same for IP-in-IP: by default TCP
	// superframes, and UDP ones where the kernel has USO, leave whole
	// through a TAP of its own (IPIPTapName), marked as IP-in-IP by a tc
	// program, where the kernel lets it load the program and a probe
	// frame gets through.
	NoIPIPSuperframes bool
	// NoNATPacketPath sends all NAT outgoing TCP through NAT's netstack.
	// By default TCP to remotes routed out of the underlay takes the
	// packet path (nat.Config.Underlay) where it can be set up.
	NoNATPacketPath bool
	// VXLANReceivers is how many sockets receive on the VXLAN port
	// (SO_REUSEPORT), each read by a reader of its own, so that incoming
	// VXLAN can use that many cores; 0 means DefaultVXLANReceivers.
	VXLANReceivers int
	// TunnelGrace is how long the sockets of an encapsulation no pool
	// uses any more stay open; 0 means 30 s.
	TunnelGrace time.Duration
	// ReplyPoll is how long a port's reader polls a pod it has just
	// written to for the answer (vswitch.Config.ReplyPoll); 0 turns it off.
	ReplyPoll time.Duration
	// PodMTU is the MTU of pods' eth0; 0 means the underlay's MTU (1500
	// when there is no underlay).
	PodMTU int
	// PodQueueLen is the txqueuelen of pods' eth0: how many frames a
	// pod's TAP holds for the switch before the kernel drops what the pod
	// sends (counted as queue-full on its port). Set on new pods and on
	// every pod the daemon re-attaches; 0 leaves it as it is (the
	// kernel's 1000 on a new TAP).
	PodQueueLen int
	// DefaultPoolIPIPMode is the ipipMode of the default pool the daemon
	// creates when no pool exists; "" means Never.
	DefaultPoolIPIPMode api.EncapMode
	// DefaultPoolVXLANMode is the default pool's vxlanMode likewise.
	DefaultPoolVXLANMode api.EncapMode
	// VXLANVNI and VXLANPort are the cluster's VXLAN settings; 0 means
	// 4096 and 4789 (Calico's).
	VXLANVNI  uint32
	VXLANPort uint16
	// VTEPMAC overrides the node's VXLAN MAC; zero derives it from the name.
	VTEPMAC packet.MAC
	// NAT configures NAT outgoing (its Deliver is the switch's; leave it
	// nil). Zero values are package nat's defaults.
	NAT nat.Config
	// Datastore says how to reach etcd. No endpoints: the daemon runs an
	// embedded etcd with its data in <StateDir>/etcd.
	Datastore datastore.Config
	// EtcdSocket is the embedded etcd's client socket; "" means
	// DefaultEtcdSocket.
	EtcdSocket string
	// EtcdListen are extra client URLs for the embedded etcd (for other
	// machines); nil: the socket only.
	EtcdListen []string
	// EtcdServer holds the embedded etcd's other settings (TLS, more
	// listeners); the node fills in its Dir, Socket and Logger.
	EtcdServer datastore.EmbedConfig
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// MetricsListen is the host:port of the Prometheus /metrics server;
	// "" serves none.
	MetricsListen string
	// OnReady, if set, is called once the node forwards and serves its
	// API (the daemon tells systemd).
	OnReady func()
}

// Node is a running daemon. Its fields are set before the control loop
// starts and not changed after; the mutable state is the loop's (state,
// loop.go).
type Node struct {
	cfg   Config
	log   *slog.Logger
	sw    *vswitch.Switch
	local podStore // pod records in the state dir, for re-attaching

	store *datastore.Store
	ipam  *ipam.IPAM
	res   *resources.Client

	// underlay facts, fixed at start
	underlay     string
	underlayAddr netip.Prefix
	underlayMTU  int
	// underlayProblem says, when set, how the underlay's address changed
	// under the running daemon, which reads it once, at start.
	underlayProblem atomic.Pointer[string]

	// stopping is closed when Run begins to stop, so that streams the
	// API serves (captures) end at once, saying why, instead of holding
	// the server's shutdown until they are cut off.
	stopping chan struct{}

	host      vswitch.HostDevice
	hostIndex int // podnet0's ifindex, for kernel routes
	nat       *nat.NAT
	started   time.Time

	// ops carries work to the control loop; loopDone is closed when the
	// loop has returned.
	ops      chan func(*state)
	loopDone chan struct{}
	// reread asks the datastore goroutine to read the datastore again.
	reread chan struct{}
	// routesReread asks for it after BGP route changes, at most once per
	// routesRereadEvery.
	routesReread *rateLimited

	// speaker is the BGP speaker. The datastore goroutine creates and
	// replaces it; the API reads it.
	speaker atomic.Pointer[bgp.Speaker]
	// speakerErr is why the speaker last failed to start, nil once it runs.
	speakerErr atomic.Pointer[string]
	// vxlanSuperframes says whether VXLAN superframes leave whole and
	// why not (openVXLANTap); nil until VXLAN is first opened.
	vxlanSuperframes atomic.Pointer[string]
	// ipipSuperframes is the same for IP-in-IP (openIPIPTap).
	ipipSuperframes atomic.Pointer[string]
	// refusedPeers are the sessions not started because their BGPPeer's
	// password cannot be read, with the reason; the datastore goroutine
	// sets them, node status shows them.
	refusedPeers atomic.Pointer[[]bgp.PeerStatus]
	// health is whether etcd answers (health.go); registered is set
	// once the Node resource is written. The datastore goroutine sets
	// them, the API reads them.
	health     atomic.Pointer[dsHealth]
	registered atomic.Bool
	// reachableEpoch counts the times etcd became reachable (the
	// start's first answer included).
	reachableEpoch atomic.Uint64
}

// New validates cfg and fills defaults; Run starts the node.
func New(cfg Config) (*Node, error) {
	hostname := ""
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		// As calico/node does: Node names are lower case, host names
		// often are not.
		hostname, cfg.Name = h, strings.ToLower(h)
	}
	if err := checkNodeName(cfg.Name, hostname); err != nil {
		return nil, err
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.Socket == "" {
		cfg.Socket = nodeapi.DefaultSocket
	}
	if cfg.VXLANVNI > 1<<24-1 {
		return nil, fmt.Errorf("VXLAN VNI %d out of range (1..16777215)", cfg.VXLANVNI)
	}
	if cfg.PodMTU < 0 || (cfg.PodMTU != 0 && cfg.PodMTU < 576) || cfg.PodMTU > 65535 {
		return nil, fmt.Errorf("pod MTU %d out of range (576..65535)", cfg.PodMTU)
	}
	if cfg.PodQueueLen < 0 || cfg.PodQueueLen > MaxPodQueueLen {
		return nil, fmt.Errorf("pod queue length %d out of range (1..%d, 0: the kernel's)", cfg.PodQueueLen, MaxPodQueueLen)
	}
	if cfg.VXLANReceivers < 0 || cfg.VXLANReceivers > MaxVXLANReceivers {
		return nil, fmt.Errorf("VXLAN receivers %d out of range (1..%d, 0: the default)", cfg.VXLANReceivers, MaxVXLANReceivers)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{
		cfg:      cfg,
		log:      log.With("component", "node", "node", cfg.Name),
		local:    podStore{path: filepath.Join(cfg.StateDir, "pods.json")},
		ops:      make(chan func(*state)),
		loopDone: make(chan struct{}),
		reread:   make(chan struct{}, 1),
		stopping: make(chan struct{}),
	}
	n.routesReread = &rateLimited{every: routesRereadEvery, f: n.markReread}
	if hostname != "" && hostname != cfg.Name {
		n.log.Info("node name is the host name in lower case, as Node names must be", "hostname", hostname)
	}
	return n, nil
}

// checkNodeName refuses a name the Node resource cannot have: the node
// could not register, and every pod add would fail. A name given is never
// rewritten; hostname is the host name it came from, if it did.
func checkNodeName(name, hostname string) error {
	if api.NewNode(name).Validate() == nil {
		return nil
	}
	const rule = "a node name must be a lower-case DNS subdomain, as Calico's: at most 253 characters of a-z, 0-9, '-' and '.', each dot-separated part starting and ending with a letter or digit"
	if hostname != "" {
		return fmt.Errorf("node name %q (from the host name %q) is invalid: %s; give one with --node", name, hostname, rule)
	}
	return fmt.Errorf("node name %q is invalid: %s", name, rule)
}

// Run brings the node up, serves the local API and blocks until ctx is
// done; then it stops forwarding. Pods' TAPs persist, so a node started
// again with the same state dir picks them up.
//
// Goroutines: the control loop (routineLoop) owns the node's state; the
// datastore goroutine (routineDatastore) reads resources and drives the
// BGP speaker, with helpers that probe etcd and keep the liveness lease;
// the address watcher follows the node's addresses; the API server
// serves requests. Only the loop changes the state, and it does no
// datastore or network I/O, so a slow etcd never holds up route
// learning or the API. Run does not need etcd: when it does not answer,
// the node starts by its pod records and view cache (health.go).
func (n *Node) Run(ctx context.Context) error {
	n.started = time.Now()
	if err := os.MkdirAll(n.cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	unlock, err := lockStateDir(n.cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	ln, err := listenSocket(n.cfg.Socket)
	if err != nil {
		return err
	}
	defer ln.Close()

	// Until the loop starts, this goroutine owns the state.
	s := newState()
	if s.hostAddrs, err = n.detectUnderlay(); err != nil {
		return err
	}
	closeStore, err := n.openDatastore()
	if err != nil {
		return err
	}
	defer closeStore()
	// A first, bounded talk with etcd: the default pool, the pools'
	// MTU and the Node resource before the switch starts. When etcd does
	// not answer, the node starts anyway (the pods it recorded need no
	// datastore to forward) and the datastore goroutine registers it
	// once etcd is back; until then it routes by the view cache.
	var cached *dsInputs // the view cache, read when etcd does not answer
	cctx, cancelContact := context.WithTimeout(ctx, firstContactTimeout)
	err = n.firstContact(cctx, s)
	cancelContact()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// etcd answered and refused the node's name: no retry can help,
		// and a node that cannot register can add no pod. (New checks
		// the name; this is the datastore's word on it.) Any other
		// refusal of the Node (a field another tool wrote, say) still
		// lets the node start with its pods, registering once the Node
		// is fixed.
		var invalid *api.ValidationError
		if errors.As(err, &invalid) && invalid.HasField("Metadata.Name") {
			return err
		}
		n.setHealth(err)
		if invalid != nil {
			n.log.Error("the datastore refused this node's Node resource; starting without registering, and trying again until it is fixed", "err", err)
		} else {
			n.log.Warn("starting without the datastore; registering once it answers", "err", err)
		}
		if cached, err = n.loadViewCache(); err != nil || cached == nil {
			n.log.Warn("no view cache: BGP starts once the datastore answers", "err", err)
		} else {
			n.useCachedView(s, cached)
		}
	} else {
		n.setHealth(nil)
		n.registered.Store(true)
	}
	n.sw = vswitch.New(vswitch.Config{Logger: n.log.With("component", "switch"), ReplyPoll: n.cfg.ReplyPoll})
	defer n.sw.Close()
	if err := n.openHost(s.podMTU(n.cfg.PodMTU)); err != nil {
		return err
	}
	s.appliedMTU = s.podMTU(n.cfg.PodMTU)
	n.enableForwarding()
	ncfg := n.cfg.NAT
	ncfg.Deliver = n.sw.InjectInPlace
	if !n.cfg.NoNATPacketPath {
		ncfg.Underlay = n.underlay
	}
	ncfg.Logger = n.log.With("component", "nat")
	if n.nat, err = nat.New(ncfg); err != nil {
		return fmt.Errorf("start NAT outgoing: %w", err)
	}
	defer n.nat.Close()
	if err := n.restorePods(s); err != nil {
		return err
	}

	// From here on the state is the loop's: read what the log wants now.
	startMTU, startPods := s.podMTU(n.cfg.PodMTU), len(s.listed())
	var wg sync.WaitGroup
	loopCtx, stopLoop := context.WithCancel(context.Background())
	dsCtx, stopDatastore := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() {
		// Work handed to a stopped loop fails with errStopped, so the
		// others need not wait for each other.
		close(done)
		stopDatastore()
		stopLoop()
		wg.Wait()
	}()
	wg.Add(3)
	go func() { defer wg.Done(); n.routineLoop(loopCtx, s) }()
	go func() { defer wg.Done(); n.routineWatchAddrs(done) }()
	go func() { defer wg.Done(); n.routineDatastore(dsCtx, cached) }()

	srv := &http.Server{Handler: n.apiHandler(), ReadHeaderTimeout: 5 * time.Second}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	stopMetrics, err := n.startMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()
	n.log.Info("node started", "underlay", n.underlay, "address", n.underlayAddr,
		"socket", n.cfg.Socket, "tapOffload", n.cfg.TapOffload, "podMTU", startMTU, "pods", startPods)
	if n.cfg.OnReady != nil && ctx.Err() == nil {
		// (Not after a stop signal: the service manager was told
		// STOPPING already.)
		n.cfg.OnReady()
	}

	select {
	case <-ctx.Done():
	case err := <-srvErr:
		return fmt.Errorf("api server: %w", err)
	}
	close(n.stopping)
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	n.log.Info("node stopping")
	return nil
}

// listenSocket listens on the API socket, replacing a stale socket file
// but refusing to take over from a daemon that still answers on it.
func listenSocket(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a podnet daemon is already serving %s", path)
	}
	return privsock.Listen(path)
}

// detectUnderlay finds the underlay interface, its address and MTU, and
// returns the node's addresses.
func (n *Node) detectUnderlay() ([]netip.Addr, error) {
	name := n.cfg.Underlay
	if name == "" {
		name = netnsutil.DefaultRouteLink()
	}
	if name == "" {
		links, _ := netlink.LinkList()
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagLoopback != 0 || a.Flags&net.FlagUp == 0 || a.Name == vswitch.HostTUNName {
				continue
			}
			if addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4); len(addrs) > 0 {
				name = a.Name
				break
			}
		}
	}
	if name != "" {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("underlay interface %q: %w", name, err)
		}
		n.underlay = name
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("underlay %s addresses: %w", name, err)
		}
		if len(addrs) > 0 {
			a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
			ones, _ := addrs[0].Mask.Size()
			n.underlayAddr = netip.PrefixFrom(a, ones)
		}
		n.underlayMTU = l.Attrs().MTU
		if n.cfg.PodMTU == 0 {
			n.cfg.PodMTU = l.Attrs().MTU
		}
	}
	if n.cfg.PodMTU == 0 {
		n.cfg.PodMTU = 1500
	}
	return nodeAddrs()
}

// nodeAddrs lists the node's IPv4 addresses but loopback. Each is reached
// through the host port: pods talk to their node on any of them.
func nodeAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list node addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && !ip.IsLoopback() {
			out = append(out, ip)
		}
	}
	return out, nil
}

// checkUnderlayAddr compares the host's addresses now with the
// underlay address the daemon started with, which its tunnels, BGP
// speaker and Node resource use until it restarts: an address that went
// (DHCP gave another), or one that came to an underlay that had none at
// start, is logged once and shown by `podnet status`.
func (n *Node) checkUnderlayAddr(addrs []netip.Addr) {
	msg := ""
	if a := n.underlayAddr.Addr(); a.IsValid() {
		if !slices.Contains(addrs, a) {
			msg = fmt.Sprintf("%s is no longer an address of this host: tunnels, BGP and the Node resource still use it; restart podnet once the new address is in place", a)
		}
	} else if l, err := netlink.LinkByName(n.underlay); err == nil {
		if as, err := netlink.AddrList(l, netlink.FAMILY_V4); err == nil && len(as) > 0 {
			msg = fmt.Sprintf("%s has an IPv4 address now but had none when podnet started: restart podnet to use it (BGP and tunnels need it)", n.underlay)
		}
	}
	var next *string
	if msg != "" {
		next = &msg
	}
	old := n.underlayProblem.Swap(next)
	switch {
	case msg != "" && (old == nil || *old != msg):
		n.log.Error("underlay address changed", "problem", msg)
	case msg == "" && old != nil:
		n.log.Info("underlay address is back as at start", "address", n.underlayAddr)
	}
}

// routineWatchAddrs keeps the host routes in step with the node's
// addresses. Run starts it; it exits when done is closed.
func (n *Node) routineWatchAddrs(done <-chan struct{}) {
	updates := make(chan netlink.AddrUpdate, 16)
	if err := netlink.AddrSubscribe(updates, done); err != nil {
		n.log.Warn("cannot watch node addresses; host routes stay as at start", "err", err)
		return
	}
	for {
		select {
		case <-done:
			return
		case _, ok := <-updates:
			if !ok {
				return
			}
			addrs, err := nodeAddrs()
			if err != nil {
				n.log.Warn("node addresses", "err", err)
				continue
			}
			n.checkUnderlayAddr(addrs)
			err = n.do(func(s *state) error {
				s.hostAddrs = addrs
				return n.publish(s)
			})
			if err != nil {
				n.log.Warn("publish routes", "err", err)
			}
		}
	}
}

// enableForwarding lets the node's kernel forward: pods reach other
// nodes through it when their routes are not encapsulated.
func (n *Node) enableForwarding() {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		n.log.Warn("cannot enable IPv4 forwarding; pods will not reach beyond this node unencapsulated", "err", err)
	}
}

// tunnelMTU is the underlay MTU the tunnels carry.
func (n *Node) tunnelMTU() int {
	if n.underlayMTU == 0 {
		return 1500
	}
	return n.underlayMTU
}

// openIPIP opens the IP-in-IP socket and attaches it to the switch.
func (n *Node) openIPIP() error {
	// Bound to the node's address, as the VXLAN sockets are: the outer
	// source is the address the other nodes know this node by (they
	// accept tunnel packets from node addresses only), even when the
	// route to a peer leaves by another interface of a multi-homed host.
	conn, err := encap.ListenIPIP(encap.IPIPConfig{Local: n.underlayAddr.Addr()})
	if err != nil {
		return fmt.Errorf("open IP-in-IP socket: %w", err)
	}
	cfg := vswitch.UnderlayConfig{Conn: conn, MTU: n.tunnelMTU(), LocalAddr: n.underlayAddr.Addr()}
	sf := n.openIPIPTap()
	if sf != nil { // not a nil *IPIPTap in the interface
		cfg.Superframes = sf
	}
	if err := n.sw.AttachUnderlay(cfg); err != nil {
		conn.Close()
		if sf != nil {
			sf.Close()
		}
		return err
	}
	return nil
}

// IPIPTapName is the TAP through which IP-in-IP superframes leave whole.
const IPIPTapName = "podnetipip0"

// openIPIPTap opens the TAP for whole IP-in-IP superframes (openTunnelTap).
func (n *Node) openIPIPTap() *encap.IPIPTap {
	var t *encap.IPIPTap
	ok := n.openTunnelTap("ipip", IPIPTapName, "--ipip-superframes=false", n.cfg.NoIPIPSuperframes, &n.ipipSuperframes,
		func() (probedTap, error) {
			var err error
			// The outer header as the IP-in-IP socket builds it (DF clear).
			t, err = encap.OpenIPIPTap(IPIPTapName, n.underlayAddr.Addr(), false)
			return t, err
		})
	if !ok {
		return nil
	}
	how := "(sent whole through " + IPIPTapName + "; the kernel segments them)"
	s := "on, TCP and UDP " + how
	if !t.WholeUDP() {
		s = "on for TCP " + how + "; UDP is cut in userspace: this kernel's TAPs have no USO (Linux 6.2+)"
	}
	n.ipipSuperframes.Store(&s)
	return t
}

// probedTap is a tunnel's TAP for whole superframes.
type probedTap interface {
	Probe() error
	Close() error
}

// openTunnelTap opens the TAP name through which a tunnel's TCP
// superframes leave whole, with open, and checks that the kernel lets its
// frames through. false (and the reason in status) when it is off
// (disabled, by flag) or cannot work here: superframes are then cut in
// userspace.
func (n *Node) openTunnelTap(tunnel, name, flag string, disabled bool, status *atomic.Pointer[string], open func() (probedTap, error)) bool {
	set := func(s string) { status.Store(&s) }
	if disabled {
		set("off (" + flag + ")")
		return false
	}
	t, err := open()
	if err == nil {
		if err = t.Probe(); err != nil {
			t.Close()
		}
	}
	if err != nil {
		n.log.Info(tunnel+": superframes are cut in userspace", "reason", err)
		set("off: " + err.Error())
		return false
	}
	set("on (sent whole through " + name + "; the kernel segments them)")
	return true
}

// openVXLAN opens the VXLAN sockets (the one on the VXLAN port that
// receives, and the per-flow senders) and attaches them to the switch.
func (n *Node) openVXLAN() error {
	vni, port := n.cfg.VXLANVNI, n.cfg.VXLANPort
	if vni == 0 {
		vni = encap.DefaultVNI
	}
	if port == 0 {
		port = encap.VXLANPort
	}
	nrx := n.cfg.VXLANReceivers
	if nrx == 0 {
		nrx = DefaultVXLANReceivers()
	}
	group, err := encap.ListenVXLANGroup(encap.VXLANConfig{Local: n.underlayAddr.Addr(), Port: int(port)}, nrx)
	if err != nil {
		return fmt.Errorf("open VXLAN socket on port %d: %w", port, err)
	}
	rx := make([]vswitch.VXLANConn, len(group))
	for i, c := range group {
		rx[i] = c
	}
	senders := make([]vswitch.VXLANUnderlay, vxlanSenders)
	closeAll := func(k int) {
		for _, c := range senders[:k] {
			c.Close()
		}
		for _, c := range rx {
			c.Close()
		}
	}
	// Datagrams leave from several ports, picked per flow, so that an
	// ECMP underlay can spread the flows; replies all come to port.
	for i := range senders {
		s, err := encap.ListenVXLAN(encap.VXLANConfig{Local: n.underlayAddr.Addr(), Port: encap.AnyPort, SendOnly: true})
		if err != nil {
			closeAll(i)
			return fmt.Errorf("open VXLAN sender socket: %w", err)
		}
		senders[i] = s
	}
	cfg := vswitch.VXLANConfig{Conn: rx[0], Receivers: rx[1:], MTU: n.tunnelMTU(), VNI: vni, Port: port, LocalMAC: n.vtepMAC(),
		Senders: senders, LocalAddr: n.underlayAddr.Addr()}
	sf := n.openVXLANTap(port)
	if sf != nil { // not a nil *VXLANTap in the interface
		cfg.Superframes = sf
	}
	err = n.sw.AttachVXLAN(cfg)
	if err != nil {
		closeAll(len(senders))
		if sf != nil {
			sf.Close()
		}
	}
	return err
}

// VXLANTapName is the TAP through which VXLAN superframes leave whole.
const VXLANTapName = "podnetvx0"

// openVXLANTap opens the TAP for whole VXLAN superframes (openTunnelTap):
// with UDP-tunnel virtio headers where the kernel's TAPs take them (Linux
// 6.17+), else marked by a tc program for VXLAN port port.
func (n *Node) openVXLANTap(port uint16) *encap.VXLANTap {
	var t *encap.VXLANTap
	ok := n.openTunnelTap("vxlan", VXLANTapName, "--vxlan-superframes=false", n.cfg.NoVXLANSuperframes, &n.vxlanSuperframes,
		func() (probedTap, error) {
			var err error
			t, err = encap.OpenVXLANTap(VXLANTapName, n.underlayAddr.Addr())
			if errors.Is(err, encap.ErrNoUDPTunnelGSO) {
				var merr error
				if t, merr = encap.OpenVXLANTapMarked(VXLANTapName, n.underlayAddr.Addr(), port); merr != nil {
					return t, fmt.Errorf("%w; marking them with a tc program instead: %w", err, merr)
				}
				err = nil
			}
			return t, err
		})
	if !ok {
		return nil
	}
	if t.Marked() {
		on := "on (sent whole through " + VXLANTapName + ", marked as VXLAN by a tc program; the kernel segments them)"
		n.vxlanSuperframes.Store(&on)
	}
	return t
}

// vxlanSenders is how many source ports VXLAN flows are spread over.
const vxlanSenders = 8

// MaxPodQueueLen bounds Config.PodQueueLen (vswitch.MaxPodQueueLen).
const MaxPodQueueLen = vswitch.MaxPodQueueLen

// MaxVXLANReceivers bounds Config.VXLANReceivers. Each receiver holds
// about 8 MiB (its reader's batch of buffers and the socket's buffer).
const MaxVXLANReceivers = 16

// DefaultVXLANReceivers is how many VXLAN receive sockets a node opens
// unless told: one per two CPUs the daemon may use, at most 8. A reader
// shares its CPU with the pods it delivers to (the TAP write runs their
// stacks), so one per CPU would leave the pods less than they need.
func DefaultVXLANReceivers() int {
	return min(max(runtime.GOMAXPROCS(0)/2, 1), 8)
}

// vtepMAC is this node's VXLAN MAC: 0x66 + SHA-1(node name)[:5], as
// Calico derives it (a Node's vxlanTunnelMACAddr overrides it).
func (n *Node) vtepMAC() packet.MAC {
	if n.cfg.VTEPMAC != (packet.MAC{}) {
		return n.cfg.VTEPMAC
	}
	return encap.VTEPMAC(n.cfg.Name)
}

// openHost creates podnet0 with the pods' MTU, sets it up and attaches it
// as the host port.
func (n *Node) openHost(mtu int) error {
	dev, err := vswitch.OpenHostTUN(vswitch.HostTUNName, mtu)
	if err != nil {
		return err
	}
	l, err := netlink.LinkByName(vswitch.HostTUNName)
	if err != nil {
		dev.Close()
		return fmt.Errorf("find %s: %w", vswitch.HostTUNName, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		dev.Close()
		return fmt.Errorf("set %s up: %w", vswitch.HostTUNName, err)
	}
	// Only IPv4 is routed; keep the node's IPv6 chatter off the port.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+vswitch.HostTUNName+"/disable_ipv6", []byte("1"), 0)
	n.host, n.hostIndex = dev, l.Attrs().Index
	return n.sw.AttachHost(dev)
}
