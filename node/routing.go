package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"podnet/api"
	"podnet/datastore"
	"podnet/encap"
	"podnet/internal/packet"
	"podnet/nat"
	"podnet/resources"
	"podnet/router"
	"podnet/router/bgp"
	vswitch "podnet/switch"
)

// The routing control loop: one goroutine owns the BGP speaker, reads
// the resources that shape routing (pools, nodes, BGP peers and
// configuration, this node's IPAM blocks), tells the speaker what to
// advertise and whom to talk to, and turns what it learns into routes
// for the switch and the node's kernel.

// kernelProto marks the kernel routes the daemon installs, so that it
// finds (and only touches) its own.
const kernelProto = netlink.RouteProtocol(80)

// routingState is what the control loop computed last; n.mu guards it.
type routingState struct {
	learned   []bgp.Path     // best paths from peers
	ownBlocks []netip.Prefix // this node's affine blocks: blackholed
	nodeAddrs []netip.Prefix // other nodes' addresses, reached via the kernel
	remote    []router.Route // learned routes, with encapsulation chosen
	kernel    map[netip.Prefix]kernelRoute
}

type kernelRoute struct {
	via netip.Addr // zero: dev podnet0
}

// routineRouting runs the control loop until ctx is done. Run starts it.
func (n *Node) routineRouting(ctx context.Context) {
	dirty := make(chan struct{}, 1)
	mark := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	// The watchers stop with ctx; the loop waits for them before it
	// returns.
	var watchers sync.WaitGroup
	defer watchers.Wait()
	for _, kind := range []string{api.KindIPPool, api.KindNode, api.KindBGPPeer, api.KindBGPConfiguration} {
		watchers.Add(1)
		go func() { defer watchers.Done(); n.watchKind(ctx, kind, mark) }()
	}
	watchers.Add(1)
	go func() {
		defer watchers.Done()
		for range n.ipam.Changes(ctx) {
			mark()
		}
	}()
	n.onRoutes = func(paths []bgp.Path) {
		n.mu.Lock()
		n.routing.learned = paths
		n.mu.Unlock()
		mark()
	}
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	mark()
	for {
		select {
		case <-ctx.Done():
			if n.speaker != nil {
				n.speaker.Close()
			}
			n.syncKernelRoutes(nil)
			return
		case <-dirty:
		case <-resync.C:
		}
		// Let a burst of changes settle into one reconcile.
		time.Sleep(20 * time.Millisecond)
		select {
		case <-dirty:
		default:
		}
		if err := n.reconcile(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("routing reconcile", "err", err)
		}
	}
}

// watchKind calls mark on every change of one resource kind, re-watching
// when a watch ends before ctx does.
func (n *Node) watchKind(ctx context.Context, kind string, mark func()) {
	coll, err := resources.Collection(n.store, kind)
	if err != nil {
		n.log.Warn("watch", "kind", kind, "err", err)
		return
	}
	for ctx.Err() == nil {
		for range coll.Watch(ctx, 0) {
			mark()
		}
		mark()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// reconcile brings speaker, routes and kernel routes in line with the
// datastore and what BGP learned.
func (n *Node) reconcile(ctx context.Context) error {
	pools, _, err := n.res.List(ctx, api.KindIPPool)
	if err != nil {
		return err
	}
	nodes, _, err := n.res.List(ctx, api.KindNode)
	if err != nil {
		return err
	}
	peers, _, err := n.res.List(ctx, api.KindBGPPeer)
	if err != nil {
		return err
	}
	global := api.NewBGPConfiguration(api.BGPConfigurationGlobal)
	if r, err := n.res.Get(ctx, api.KindBGPConfiguration, api.BGPConfigurationGlobal); err == nil {
		global = r.(*api.BGPConfiguration)
	} else if !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	global.SetDefaults()
	blocks, err := n.ipam.NodeBlocks(ctx, n.cfg.Name)
	if err != nil {
		return err
	}
	allocs, err := n.ipam.Allocations(ctx)
	if err != nil {
		return err
	}
	me := n.underlayAddr.Addr()
	adverts := slices.Clone(blocks)
	for _, a := range allocs {
		if a.Borrowed && a.Attrs["node"] == n.cfg.Name {
			adverts = append(adverts, netip.PrefixFrom(a.IP, 32))
		}
	}
	self, others := splitNodes(nodes, n.cfg.Name)
	if err := n.ensureTunnelAddrs(ctx, pools, self); err != nil {
		n.log.Warn("tunnel addresses", "err", err)
	}

	if me.IsValid() {
		asn := uint32(*global.Spec.ASNumber)
		if self != nil && self.Spec.BGP != nil && self.Spec.BGP.ASNumber != nil {
			asn = uint32(*self.Spec.BGP.ASNumber)
		}
		if err := n.ensureSpeaker(ctx, asn, global.Spec.ListenPort, self); err != nil {
			return err
		}
		want := desiredPeers(n.cfg.Name, me, self, others, peers, global, asn)
		if err := n.speaker.SetPeers(ctx, want); err != nil {
			return fmt.Errorf("set BGP peers: %w", err)
		}
		if err := n.speaker.Advertise(ctx, adverts, me); err != nil {
			return fmt.Errorf("advertise blocks: %w", err)
		}
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	st := &n.routing
	n.encapOverhead = encapOverhead(pools)
	st.ownBlocks = blocks
	st.nodeAddrs = st.nodeAddrs[:0]
	set := vswitch.NodeSet{}
	for _, o := range others {
		if p, ok := nodeAddr(o); ok {
			st.nodeAddrs = append(st.nodeAddrs, netip.PrefixFrom(p.Addr(), 32))
			set[p.Addr()] = true
		}
	}
	n.sw.SetNodes(set)
	n.sw.SetNAT(natConfig(n.nat, pools))
	st.remote = remoteRoutes(st.learned, pools, n.underlayAddr, blocks, vtepMACs(others))
	if err := n.rebuildRoutes(); err != nil {
		return err
	}
	n.syncKernelRoutesLocked(st.remote)
	return nil
}

// ensureSpeaker starts the BGP speaker, or restarts it when its AS,
// port or route-reflector role changed.
func (n *Node) ensureSpeaker(ctx context.Context, asn uint32, port int, self *api.Node) error {
	var cluster netip.Addr
	if self != nil && self.Spec.BGP != nil && self.Spec.BGP.RouteReflectorClusterID != "" {
		cluster, _ = netip.ParseAddr(self.Spec.BGP.RouteReflectorClusterID)
	}
	key := fmt.Sprintf("%d/%d/%s", asn, port, cluster)
	if n.speaker != nil && n.speakerKey == key {
		return nil
	}
	if n.speaker != nil {
		n.speaker.Close()
		n.mu.Lock()
		n.speaker = nil
		n.mu.Unlock()
	}
	sp, err := bgp.New(ctx, bgp.Config{
		RouterID: n.underlayAddr.Addr(), ASN: asn, ListenPort: port,
		RouteReflectorClusterID: cluster,
		Logger:                  n.log.With("component", "bgp"),
		OnRoutes:                n.onRoutes,
	})
	if err != nil {
		return fmt.Errorf("start BGP speaker: %w", err)
	}
	n.mu.Lock()
	n.speaker, n.speakerKey = sp, key
	n.mu.Unlock()
	n.log.Info("BGP speaker started", "as", asn, "port", port, "routeReflector", cluster.IsValid())
	return nil
}

func splitNodes(rs []api.Resource, me string) (*api.Node, []*api.Node) {
	var self *api.Node
	var others []*api.Node
	for _, r := range rs {
		nd := r.(*api.Node)
		if nd.Name == me {
			self = nd
		} else {
			others = append(others, nd)
		}
	}
	return self, others
}

func nodeAddr(nd *api.Node) (netip.Prefix, bool) {
	if nd.Spec.BGP == nil || nd.Spec.BGP.IPv4Address == "" {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(nd.Spec.BGP.IPv4Address)
	return p, err == nil && p.Addr().Is4()
}

func isRR(nd *api.Node) bool {
	return nd != nil && nd.Spec.BGP != nil && nd.Spec.BGP.RouteReflectorClusterID != ""
}

func nodeASN(nd *api.Node, global uint32) uint32 {
	if nd.Spec.BGP != nil && nd.Spec.BGP.ASNumber != nil {
		return uint32(*nd.Spec.BGP.ASNumber)
	}
	return global
}

// desiredPeers computes this node's BGP sessions (calico.md §5): the
// node-to-node mesh when enabled, plus every BGPPeer that applies here,
// either to a fixed address or to the nodes its peerSelector matches.
func desiredPeers(me string, myAddr netip.Addr, self *api.Node, others []*api.Node, peers []api.Resource, global *api.BGPConfiguration, asn uint32) []bgp.Peer {
	byAddr := map[netip.Addr]bgp.Peer{}
	globalASN := uint32(*global.Spec.ASNumber)
	if global.Spec.NodeToNodeMeshEnabled == nil || *global.Spec.NodeToNodeMeshEnabled {
		for _, o := range others {
			if p, ok := nodeAddr(o); ok {
				// Only the lower address of each pair dials: two speakers
				// dialling each other after a restart collide and back off
				// (gobgp v3 stays Idle 5 s after a Cease), which can delay
				// a mesh session by tens of seconds.
				byAddr[p.Addr()] = bgp.Peer{Address: p.Addr(), ASN: nodeASN(o, globalASN), Type: "node-to-node mesh",
					Passive: myAddr.Compare(p.Addr()) > 0}
			}
		}
	}
	for _, r := range peers {
		bp := r.(*api.BGPPeer)
		s := bp.Spec
		// The other end of a selector peering: a node the peerSelector
		// matches peers back with the nodes the BGPPeer applies to
		// (Calico's reversePeering: Auto). This is how a route reflector
		// learns its clients.
		if s.PeerSelector != "" && self != nil && selectorMatches(s.PeerSelector, self.Labels) {
			for _, o := range others {
				p, ok := nodeAddr(o)
				if !ok || !appliesTo(s, o) {
					continue
				}
				if _, dup := byAddr[p.Addr()]; dup {
					continue
				}
				byAddr[p.Addr()] = bgp.Peer{Address: p.Addr(), ASN: nodeASN(o, globalASN), Type: "node specific",
					Password: peerPassword(s.Password), RRClient: isRR(self) && !isRR(o)}
			}
		}
		typ := "global"
		switch {
		case s.Node != "":
			if s.Node != me {
				continue
			}
			typ = "node specific"
		case s.NodeSelector != "":
			if self == nil || !selectorMatches(s.NodeSelector, self.Labels) {
				continue
			}
			typ = "node specific"
		}
		base := bgp.Peer{Type: typ, Password: peerPassword(s.Password)}
		if s.KeepaliveTime != nil {
			base.KeepaliveTime = s.KeepaliveTime.Duration
		}
		if s.HoldTime != nil {
			base.HoldTime = s.HoldTime.Duration
		}
		if s.LocalASNumber != nil {
			base.LocalASN = uint32(*s.LocalASNumber)
		}
		if s.PeerSelector != "" {
			for _, o := range others {
				p, ok := nodeAddr(o)
				if !ok || !selectorMatches(s.PeerSelector, o.Labels) {
					continue
				}
				pe := base
				pe.Address, pe.ASN = p.Addr(), nodeASN(o, globalASN)
				// A route reflector serves the non-reflector nodes it peers with.
				pe.RRClient = isRR(self) && !isRR(o)
				byAddr[pe.Address] = pe
			}
			continue
		}
		addr, port, err := api.ParsePeerIP(s.PeerIP)
		if err != nil || !addr.Is4() {
			continue
		}
		pe := base
		pe.Address, pe.Port, pe.ASN = addr, port, uint32(s.ASNumber)
		byAddr[addr] = pe
	}
	// Two route reflectors of one cluster, or a reflector and its
	// clients, found via the mesh too: keep the reflector role.
	if isRR(self) {
		for a, p := range byAddr {
			if p.Type == "node-to-node mesh" {
				for _, o := range others {
					if q, ok := nodeAddr(o); ok && q.Addr() == a && !isRR(o) {
						p.RRClient = true
						byAddr[a] = p
					}
				}
			}
		}
	}
	out := make([]bgp.Peer, 0, len(byAddr))
	for _, p := range byAddr {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b bgp.Peer) int { return a.Address.Compare(b.Address) })
	return out
}

// appliesTo says whether BGPPeer spec s configures sessions on node nd.
func appliesTo(s api.BGPPeerSpec, nd *api.Node) bool {
	switch {
	case s.Node != "":
		return s.Node == nd.Name
	case s.NodeSelector != "":
		return selectorMatches(s.NodeSelector, nd.Labels)
	}
	return true
}

// peerPassword reads a BGPPeer password from its file or environment
// variable; an unreadable source gives no password (the session then
// fails and node status says so).
func peerPassword(p *api.BGPPassword) string {
	if p == nil {
		return ""
	}
	if p.SecretFile != "" {
		b, err := os.ReadFile(p.SecretFile)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if p.Env != "" {
		return os.Getenv(p.Env)
	}
	return ""
}

// selectorMatches evaluates the selector forms podnet supports: all(),
// k == 'v', k != 'v', has(k), joined with &&.
func selectorMatches(sel string, labels map[string]string) bool {
	sel = strings.TrimSpace(sel)
	if sel == "" || sel == "all()" {
		return true
	}
	for _, term := range strings.Split(sel, "&&") {
		term = strings.TrimSpace(term)
		switch {
		case term == "all()":
		case strings.HasPrefix(term, "has(") && strings.HasSuffix(term, ")"):
			if _, ok := labels[strings.TrimSpace(term[4:len(term)-1])]; !ok {
				return false
			}
		case strings.Contains(term, "=="):
			k, v, _ := strings.Cut(term, "==")
			if labels[strings.TrimSpace(k)] != unquote(v) {
				return false
			}
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			if labels[strings.TrimSpace(k)] == unquote(v) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func unquote(s string) string {
	return strings.Trim(strings.TrimSpace(s), `'"`)
}

// remoteRoutes turns learned paths into routes. The destination's pool
// decides the encapsulation: ipipMode Always, or CrossSubnet with the next
// hop outside this node's subnet, means IP-in-IP through the switch;
// otherwise (Never, same subnet, or no pool at all) the packet goes to the
// node's kernel, which routes it to the next hop on the underlay.
func remoteRoutes(paths []bgp.Path, pools []api.Resource, mySubnet netip.Prefix, own []netip.Prefix, macs map[netip.Addr]packet.MAC) []router.Route {
	var out []router.Route
	seen := map[netip.Prefix]bool{}
	for _, p := range own {
		seen[p] = true
	}
	for _, path := range paths {
		pfx := path.Prefix.Masked()
		if seen[pfx] || !pfx.Addr().Is4() || path.NextHop == mySubnet.Addr() {
			continue
		}
		seen[pfx] = true
		encapsulate := func(mode string) bool {
			return mode == "Always" || (mode == "CrossSubnet" && !mySubnet.Contains(path.NextHop))
		}
		r := router.Route{Prefix: pfx, NextHop: path.NextHop, Source: "bgp " + path.Peer.String()}
		pool := poolOf(pools, pfx)
		mac, known := macs[path.NextHop]
		switch {
		case pool != nil && encapsulate(pool.Spec.VXLANMode) && known:
			r.Kind, r.Encap, r.Dev, r.NextHopMAC = router.KindRemote, router.EncapVXLAN, "vxlan", mac
		case pool != nil && encapsulate(pool.Spec.IPIPMode):
			r.Kind, r.Encap, r.Dev = router.KindRemote, router.EncapIPIP, "ipip"
		default:
			// Never, same subnet, a next hop that is no known node, or a
			// prefix outside the pools (e.g. from a ToR): the node's kernel
			// routes it.
			r.Kind, r.Encap, r.Dev = router.KindHost, router.EncapNone, vswitch.HostTUNName
		}
		out = append(out, r)
	}
	return out
}

// natConfig tells the switch which pools may use NAT outgoing and which
// addresses are inside the cluster (every pool, disabled ones too).
func natConfig(h *nat.NAT, pools []api.Resource) vswitch.NATConfig {
	c := vswitch.NATConfig{}
	if h != nil {
		c.Handler = h
	}
	for _, r := range pools {
		p := r.(*api.IPPool)
		cidr, err := p.Prefix()
		if err != nil {
			continue
		}
		c.Pools = append(c.Pools, cidr)
		if p.Spec.NATOutgoing {
			c.Allowed = append(c.Allowed, cidr)
		}
	}
	return c
}

// vtepMACs maps each node's address to its VXLAN MAC: the Node's
// vxlanTunnelMACAddr, else the one derived from its name.
func vtepMACs(nodes []*api.Node) map[netip.Addr]packet.MAC {
	out := map[netip.Addr]packet.MAC{}
	for _, nd := range nodes {
		p, ok := nodeAddr(nd)
		if !ok {
			continue
		}
		mac := encap.VTEPMAC(nd.Name)
		if m, err := packet.ParseMAC(nd.Spec.VXLANTunnelMACAddr); err == nil {
			mac = m
		}
		out[p.Addr()] = mac
	}
	return out
}

// encapOverhead is the most MTU any pool's encapsulation costs.
func encapOverhead(pools []api.Resource) int {
	o := 0
	for _, r := range pools {
		p := r.(*api.IPPool)
		if m := p.Spec.VXLANMode; m == "Always" || m == "CrossSubnet" {
			o = max(o, encap.VXLANOverhead)
		}
		if m := p.Spec.IPIPMode; m == "Always" || m == "CrossSubnet" {
			o = max(o, encap.IPIPOverhead)
		}
	}
	return o
}

// poolOf returns the pool whose CIDR contains pfx (most specific).
func poolOf(pools []api.Resource, pfx netip.Prefix) *api.IPPool {
	var best *api.IPPool
	bestBits := -1
	for _, r := range pools {
		p := r.(*api.IPPool)
		c, err := p.Prefix()
		if err != nil || !c.Contains(pfx.Addr()) || c.Bits() > pfx.Bits() {
			continue
		}
		if c.Bits() > bestBits {
			best, bestBits = p, c.Bits()
		}
	}
	return best
}

// syncKernelRoutesLocked makes the node's kernel reach remote pods: via
// podnet0 for encapsulated routes (the switch tunnels them), via the next
// hop on the underlay otherwise. Callers hold n.mu.
func (n *Node) syncKernelRoutesLocked(remote []router.Route) {
	want := map[netip.Prefix]kernelRoute{}
	for _, r := range remote {
		if r.Kind == router.KindRemote {
			want[r.Prefix] = kernelRoute{}
		} else {
			want[r.Prefix] = kernelRoute{via: r.NextHop}
		}
	}
	if n.routing.kernel == nil {
		n.routing.kernel = map[netip.Prefix]kernelRoute{}
	}
	for p, kr := range want {
		if old, ok := n.routing.kernel[p]; ok && old == kr {
			continue
		}
		rt := &netlink.Route{Dst: prefixNet(p), Protocol: kernelProto}
		if kr.via.IsValid() {
			rt.Gw = kr.via.AsSlice()
		} else {
			rt.LinkIndex, rt.Scope = n.hostIndex, netlink.SCOPE_LINK
		}
		if err := netlink.RouteReplace(rt); err != nil {
			n.log.Warn("kernel route", "prefix", p, "err", err)
			continue
		}
		n.routing.kernel[p] = kr
	}
	for p := range n.routing.kernel {
		if _, ok := want[p]; !ok {
			netlink.RouteDel(&netlink.Route{Dst: prefixNet(p), Protocol: kernelProto})
			delete(n.routing.kernel, p)
		}
	}
}

// syncKernelRoutes removes (remote == nil) or sets the kernel routes.
func (n *Node) syncKernelRoutes(remote []router.Route) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.syncKernelRoutesLocked(remote)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// BGPPeers reports the speaker's sessions for `podnet node status`.
func (n *Node) BGPPeers(ctx context.Context) ([]bgp.PeerStatus, error) {
	n.mu.Lock()
	sp := n.speaker
	n.mu.Unlock()
	if sp == nil {
		return nil, errors.New("the BGP speaker is not running (no underlay address?)")
	}
	return sp.Peers(ctx)
}
