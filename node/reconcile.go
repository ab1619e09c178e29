package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"podnet/api"
	"podnet/datastore"
	"podnet/ipam"
	"podnet/resources"
	"podnet/router/bgp"
	"podnet/routing"
)

// The datastore goroutine: it follows the resources that shape routing,
// drives the BGP speaker and hands what it read to the control loop.

// routineDatastore follows the resources that shape routing (pools,
// nodes, BGP peers and configuration, IPAM blocks) until ctx is done:
// on every change it reconciles. It owns the BGP speaker and closes it
// when it returns. Run starts it, with the view cache when the node
// started while etcd did not answer.
func (n *Node) routineDatastore(ctx context.Context, cached *dsInputs) {
	dirty, mark := n.reread, n.markReread
	// The watchers stop with ctx; this goroutine waits for them before
	// it returns.
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
	watchers.Add(2)
	go func() { defer watchers.Done(); n.routineProbe(ctx) }()
	go func() { defer watchers.Done(); n.routineAlive(ctx) }()
	var sp speakerState
	defer sp.close(n)
	cache := &viewCache{path: n.viewCachePath()}
	if cached != nil && !n.registered.Load() {
		// Started while etcd is down: route by what it said last, so
		// that BGP comes up with the peers the node knew.
		n.log.Info("routing by the cached view until the datastore answers", "saved", cached.Saved, "nodes", len(cached.Nodes), "pools", len(cached.Pools))
		n.addCachedTunnelAddrs(*cached)
		if err := n.route(ctx, &sp, *cached); err != nil && ctx.Err() == nil {
			n.log.Warn("routing by the cached view", "err", err)
		}
	}
	resync := time.NewTicker(30 * time.Second)
	defer resync.Stop()
	// retry wakes the loop again soon while work waits on etcd (the
	// node's registration, pending address releases).
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	// When checkPods last ran, and in which reachableEpoch.
	var checkedEpoch uint64
	var checked time.Time
	mark()
	for {
		select {
		case <-ctx.Done():
			return
		case <-dirty:
		case <-resync.C:
		case <-retry.C:
		}
		// Let a burst of changes settle into one reconcile.
		time.Sleep(20 * time.Millisecond)
		select {
		case <-dirty:
		default:
		}
		if !n.registered.Load() {
			// The node started while etcd did not answer. This waits
			// for etcd (opTimeout, then again after retryInterval):
			// nothing else on this goroutine can go on without it.
			rctx, cancel := context.WithTimeout(ctx, opTimeout)
			err := n.register(rctx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					n.log.Warn("register node", "err", err)
					retry.Reset(retryInterval)
				}
				continue
			}
			n.registered.Store(true)
			n.log.Info("node registered in the datastore")
		}
		if err := n.reconcile(ctx, &sp, cache); err != nil && ctx.Err() == nil {
			n.log.Warn("routing reconcile", "err", err)
		}
		if e := n.reachableEpoch.Load(); (e != checkedEpoch || time.Since(checked) >= checkPodsInterval) && n.datastoreDown() == nil {
			// At start, at each return of etcd, and now and then.
			checkedEpoch, checked = e, time.Now()
			if err := n.checkPods(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("pods against the datastore", "err", err)
			}
		}
		if n.retryReleases(ctx) > 0 && ctx.Err() == nil {
			retry.Reset(retryInterval)
		}
	}
}

// checkPodsInterval is how often the datastore goroutine checks the
// pods against the datastore besides each time etcd comes back.
const checkPodsInterval = 30 * time.Second

// markReread makes the datastore goroutine read the datastore again soon;
// it never blocks.
func (n *Node) markReread() {
	select {
	case n.reread <- struct{}{}:
	default:
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

// reconcile reads the datastore, does the node's own writes (tunnel
// addresses, pod MTU, blocks of no pool), keeps what it read in the view
// cache, and routes by it. It runs on the datastore goroutine, never on
// the loop: the reads may take as long as etcd does, up to opTimeout, so
// that an etcd that stopped answering holds up neither the checks nor
// the pending releases after it.
func (n *Node) reconcile(parent context.Context, sp *speakerState, cache *viewCache) error {
	ctx, cancel := context.WithTimeout(parent, opTimeout)
	defer cancel()
	poolRs, _, err := n.res.List(ctx, api.KindIPPool)
	if err != nil {
		return err
	}
	nodeRs, _, err := n.res.List(ctx, api.KindNode)
	if err != nil {
		return err
	}
	peerRs, _, err := n.res.List(ctx, api.KindBGPPeer)
	if err != nil {
		return err
	}
	cfgRs, _, err := n.res.List(ctx, api.KindBGPConfiguration)
	if err != nil {
		return err
	}
	blocks, err := n.ipam.NodeBlocks(ctx, n.cfg.Name)
	if err != nil {
		return err
	}
	owners, allocs, err := n.ipam.BlockOwners(ctx)
	if err != nil {
		return err
	}
	in := dsInputs{Pools: ippools(poolRs), Nodes: resourcesOf[*api.Node](nodeRs),
		Peers: resourcesOf[*api.BGPPeer](peerRs), Configs: resourcesOf[*api.BGPConfiguration](cfgRs)}
	in.Blocks = n.releaseOrphanBlocks(ctx, blocks, in.Pools)
	// Addresses this node borrowed from other nodes' blocks are
	// advertised one by one, beside its own blocks.
	// Addresses other nodes borrowed come from them as /32s, which the
	// import policy takes from them only; other nodes' blocks it takes
	// from their owners only.
	for _, a := range allocs {
		switch {
		case !a.Borrowed:
		case a.Attrs["node"] == n.cfg.Name:
			in.Borrowed = append(in.Borrowed, a.IP)
		case a.Attrs["node"] != "":
			if in.Lent == nil {
				in.Lent = map[netip.Addr]string{}
			}
			in.Lent[a.IP] = a.Attrs["node"]
		}
	}
	for b, owner := range owners {
		if owner != n.cfg.Name {
			if in.Owners == nil {
				in.Owners = map[netip.Prefix]string{}
			}
			in.Owners[b] = owner
		}
	}
	self, _ := routing.SplitNodes(in.Nodes, n.cfg.Name)
	if err := n.ensureTunnelAddrs(ctx, poolRs, self); err != nil {
		n.log.Warn("tunnel addresses", "err", err)
	}
	if err := n.recordPodMTU(ctx, self, routing.PodMTU(n.cfg.PodMTU, routing.EncapOverhead(in.Pools))); err != nil {
		n.log.Warn("record pod MTU", "err", err)
	}
	cache.save(n, in)
	return n.route(parent, sp, in)
}

// route brings the BGP speaker in line with in and hands the control
// loop the view for routing. No datastore I/O: it also runs on the view
// cache when the node starts while etcd is down.
func (n *Node) route(ctx context.Context, sp *speakerState, in dsInputs) error {
	settings := routing.NewBGPSettings(in.Configs)
	self, others := routing.SplitNodes(in.Nodes, n.cfg.Name)
	overhead := routing.EncapOverhead(in.Pools)
	explicit := map[netip.Addr]bool{}
	// A BGP failure (the port taken, a peer gobgp refuses) must not keep
	// the rest of the view (pools, NAT, tunnels, nodes) from the switch:
	// it is returned after the view is set.
	var bgpErr error
	if me := n.underlayAddr.Addr(); me.IsValid() {
		bgpErr = n.routeBGP(ctx, sp, in, settings, self, others, me, explicit)
	}

	v := view{pools: in.Pools, blocks: in.Blocks, vteps: routing.VTEPMACs(others), overhead: overhead, explicitPeers: explicit}
	byName := map[string]netip.Addr{}
	for _, o := range others {
		if p, ok := routing.NodeAddr(o); ok {
			v.nodeAddrs = append(v.nodeAddrs, p.Addr())
			byName[o.Name] = p.Addr()
		}
	}
	for a, name := range in.Lent {
		if at, ok := byName[name]; ok {
			if v.lent == nil {
				v.lent = map[netip.Addr]netip.Addr{}
			}
			v.lent[a] = at
		}
	}
	// A block whose node has no address (or no Node) maps to none: no
	// next hop matches it. From the view cache (etcd down at start) the
	// owners may be long out of date, and IPAM cannot change while etcd
	// is down anyway: the import policy then does without them.
	for b, name := range in.Owners {
		if !in.Saved.IsZero() {
			break
		}
		if v.owners == nil {
			v.owners = map[netip.Prefix]netip.Addr{}
		}
		v.owners[b] = byName[name]
	}
	return errors.Join(bgpErr, n.do(func(s *state) error { return n.setView(s, v) }))
}

// routeBGP starts or updates the BGP speaker for address me: its
// sessions (recording in explicit the addresses of those not of the
// mesh) and what it advertises. Each step is tried even when one before
// failed; the errors are joined.
func (n *Node) routeBGP(ctx context.Context, sp *speakerState, in dsInputs, settings routing.BGPSettings,
	self *api.Node, others []*api.Node, me netip.Addr, explicit map[netip.Addr]bool) error {
	if names := routing.NodesAt(others, me); len(names) > 0 {
		if key := strings.Join(names, ","); key != sp.sharedWarned {
			n.log.Warn("other Nodes have this node's address; no BGP session with them (delete them if they are gone)", "address", me, "nodes", names)
			sp.sharedWarned = key
		}
	} else {
		sp.sharedWarned = ""
	}
	adverts := slices.Clone(in.Blocks)
	for _, a := range in.Borrowed {
		adverts = append(adverts, netip.PrefixFrom(a, 32))
	}
	adverts = routing.Exported(adverts, in.Pools)
	asn := routing.NodeASN(self, routing.GlobalASN(settings.Global))
	speaker, err := sp.ensure(ctx, n, asn, settings.ListenPort(n.cfg.Name), settings.ListenAddrs(me), routing.RouteReflectorClusterID(self))
	if err != nil {
		return err
	}
	usable, broken := withoutPasswordProblems(in.Peers)
	desired := func(peers []*api.BGPPeer) []bgp.Peer {
		return routing.DesiredPeers(n.cfg.Name, me, self, others, peers, settings)
	}
	want, refused := refusedSessions(desired(usable), usable, broken, desired)
	n.refusedPeers.Store(&refused)
	maps.Copy(explicit, routing.ExplicitPeers(want, others))
	var errs []error
	// The filter before the sessions, so a new one is never sent more;
	// without it (GoBGP refused it) no session changes: a new speaker
	// would otherwise pass on everything it hears.
	if err := speaker.SetExportFilter(ctx, routing.ExportFilter(in.Pools)); err != nil {
		errs = append(errs, fmt.Errorf("%w (BGP sessions left as they are until it is set)", err))
	} else if err := speaker.SetPeers(ctx, want); err != nil {
		errs = append(errs, fmt.Errorf("set BGP peers: %w", err))
	}
	if err := speaker.Advertise(ctx, adverts, me); err != nil {
		errs = append(errs, fmt.Errorf("advertise blocks: %w", err))
	}
	return errors.Join(errs...)
}

// speakerState is the BGP speaker and the settings it was started with;
// the datastore goroutine owns it.
type speakerState struct {
	sp  *bgp.Speaker
	key string
	// sharedWarned names the other Nodes at this node's address that the
	// log has been told about.
	sharedWarned string
}

// ensure starts the BGP speaker, or restarts it when its AS, port,
// listen addresses (nil: all) or route reflector cluster changed.
func (ss *speakerState) ensure(ctx context.Context, n *Node, asn uint32, port int, listen []netip.Addr, cluster netip.Addr) (*bgp.Speaker, error) {
	key := fmt.Sprintf("%d/%d/%v/%s", asn, port, listen, cluster)
	if ss.sp != nil && ss.key == key {
		return ss.sp, nil
	}
	ss.close(n)
	sp, err := bgp.New(ctx, bgp.Config{
		RouterID: n.underlayAddr.Addr(), ASN: asn, ListenPort: port, ListenAddrs: listen,
		RouteReflectorClusterID: cluster,
		Logger:                  n.log.With("component", "bgp"),
		OnRoutes:                n.logRouteEvents(n.onRoutes),
	})
	if err != nil {
		err = fmt.Errorf("start BGP speaker (AS %d, port %d): %w", asn, port, err)
		msg := err.Error()
		n.speakerErr.Store(&msg)
		return nil, err
	}
	n.speakerErr.Store(nil)
	ss.sp, ss.key = sp, key
	n.speaker.Store(sp)
	n.log.Info("BGP speaker started", "as", asn, "port", port, "listen", listen, "routeReflector", cluster.IsValid())
	return sp, nil
}

func (ss *speakerState) close(n *Node) {
	if ss.sp == nil {
		return
	}
	n.speaker.Store(nil)
	ss.sp.Close()
	ss.sp, ss.key = nil, ""
}

// BGPPeers reports the speaker's sessions for `podnet node status`.
func (n *Node) BGPPeers(ctx context.Context) ([]bgp.PeerStatus, error) {
	sp := n.speaker.Load()
	if sp == nil {
		if !n.registered.Load() {
			return nil, &unavailableError{"the BGP speaker starts once the datastore answers (the node is not registered yet; see podnet status)"}
		}
		if msg := n.speakerErr.Load(); msg != nil {
			return nil, fmt.Errorf("the BGP speaker is not running: %s (tried again at each reconcile)", *msg)
		}
		return nil, errors.New("the BGP speaker is not running (no underlay address?)")
	}
	peers, err := sp.Peers(ctx)
	if err != nil {
		return nil, err
	}
	// Sessions refused for an unreadable password show with the reason.
	if r := n.refusedPeers.Load(); r != nil && len(*r) > 0 {
		for _, rp := range *r {
			if !slices.ContainsFunc(peers, func(p bgp.PeerStatus) bool { return p.Address == rp.Address }) {
				peers = append(peers, rp)
			}
		}
		slices.SortFunc(peers, func(a, b bgp.PeerStatus) int { return a.Address.Compare(b.Address) })
	}
	return peers, nil
}

// Tunnel address kinds (Calico's handles and attribute types).
var tunnelKinds = []struct {
	handle, attrType string
	wants            func(p *api.IPPool) bool
	field            func(nd *api.Node) *string
}{
	{"vxlan-tunnel-addr-", "vxlanTunnelAddress",
		func(p *api.IPPool) bool { return p.Spec.VXLANMode.Enabled() },
		func(nd *api.Node) *string { return &nd.Spec.IPv4VXLANTunnelAddr }},
	{"ipip-tunnel-addr-", "ipipTunnelAddress",
		func(p *api.IPPool) bool { return p.Spec.IPIPMode.Enabled() },
		func(nd *api.Node) *string {
			if nd.Spec.BGP == nil {
				nd.Spec.BGP = &api.NodeBGPSpec{}
			}
			return &nd.Spec.BGP.IPv4IPIPTunnelAddr
		}},
}

// ensureTunnelAddrs gives the node a tunnel address from IPAM for each
// encapsulation its pools use (as calico/node does), records it in the
// Node resource and puts it on podnet0, so that the node's own traffic to
// remote pods leaves with an address inside the pools (routed back to
// this node with its blocks). The datastore goroutine calls it.
func (n *Node) ensureTunnelAddrs(ctx context.Context, poolRs []api.Resource, self *api.Node) error {
	if self == nil {
		return nil
	}
	pools, byName, err := ipamPools(poolRs)
	if err != nil {
		return err
	}
	for _, k := range tunnelKinds {
		var cands []ipam.Pool
		for _, p := range pools {
			if k.wants(byName[p.Name]) {
				cands = append(cands, p)
			}
		}
		handle := k.handle + n.cfg.Name
		cur := *k.field(self)
		if cur != "" {
			if ip, err := netip.ParseAddr(cur); err == nil && slices.ContainsFunc(cands, func(p ipam.Pool) bool { return p.CIDR.Contains(ip) }) {
				n.addHostAddr(cur)
				continue
			}
			// No pool of this encapsulation holds the address any more
			// (the pools switched encapsulation, or its pool went): it
			// goes back to IPAM and off podnet0 and the Node.
			if err := n.releaseTunnelAddr(ctx, k.field, handle, cur); err != nil {
				return err
			}
			n.log.Info("tunnel address released", "type", k.attrType, "ip", cur)
			if err := n.restoreKernelRoutes(); err != nil {
				n.log.Warn("kernel routes after the tunnel address went", "err", err)
			}
		}
		if len(cands) == 0 {
			continue
		}
		// The Node names no address, so whatever the handle holds was
		// assigned by a round that died or failed before the Node said
		// so (or someone cleared the Node's field): it goes back first,
		// or the node would hold two, and off podnet0, where it may be.
		held, err := n.ipam.HandleAddrs(ctx, handle)
		if err != nil {
			return fmt.Errorf("tunnel address: %w", err)
		}
		if err := n.ipam.ReleaseByHandle(ctx, handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) {
			return fmt.Errorf("tunnel address: release what %s held: %w", handle, err)
		}
		for _, a := range held {
			n.delHostAddr(a.String())
		}
		if len(held) > 0 {
			// It may have been podnet0's last address: the kernel then
			// flushed the routes through it, as on release above.
			if err := n.restoreKernelRoutes(); err != nil {
				n.log.Warn("kernel routes after stale tunnel addresses went", "err", err)
			}
		}
		ip, err := n.ipam.AutoAssign(ctx, ipam.AssignArgs{Node: n.cfg.Name, HandleID: handle,
			Attrs: map[string]string{"node": n.cfg.Name, "type": k.attrType}, Pools: cands,
			NodeLabels: self.Labels, Use: ipam.UseTunnel})
		if errors.Is(err, ipam.ErrNoPools) {
			continue // no encapsulating pool selects this node, or allows Tunnel
		}
		if err != nil {
			return fmt.Errorf("tunnel address: %w", err)
		}
		if err := n.updateNode(ctx, func(nd *api.Node) { *k.field(nd) = ip.String() }); err != nil {
			// Not released here: the update may have been applied with
			// its answer lost. The next round sees which: the Node names
			// the address and keeps it, or it does not and the handle is
			// released above.
			return fmt.Errorf("record tunnel address: %w", err)
		}
		n.log.Info("tunnel address assigned", "type", k.attrType, "ip", ip)
		n.addHostAddr(ip.String())
	}
	return nil
}

// releaseTunnelAddr takes tunnel address cur off the Node resource
// (field), gives it back to IPAM and removes it from podnet0. The Node
// goes first: a Node naming an address IPAM has given to a pod would
// be worse than an address allocated a little longer.
func (n *Node) releaseTunnelAddr(ctx context.Context, field func(*api.Node) *string, handle, cur string) error {
	err := n.updateNode(ctx, func(nd *api.Node) {
		if *field(nd) == cur {
			*field(nd) = ""
		}
	})
	if err != nil {
		return fmt.Errorf("release tunnel address %s: %w", cur, err)
	}
	if err := n.ipam.ReleaseByHandle(ctx, handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) {
		return fmt.Errorf("release tunnel address %s: %w", cur, err)
	}
	n.delHostAddr(cur)
	return nil
}

// restoreKernelRoutes installs the kernel routes through podnet0 again:
// removing the last IPv4 address of a device makes the kernel flush
// every route through it (fib_disable_ip), and a tunnel address is
// often podnet0's only one.
func (n *Node) restoreKernelRoutes() error {
	return n.do(func(s *state) error {
		var errs []error
		for _, p := range s.listed() {
			if p.attached {
				errs = append(errs, n.podKernelRoute(p.rec.IP, true))
			}
		}
		clear(s.kernel) // publish installs the remote prefixes' routes anew
		errs = append(errs, n.publish(s))
		return errors.Join(errs...)
	})
}

// updateNode applies change to this node's Node resource, read afresh,
// retrying when another writer got there first.
func (n *Node) updateNode(ctx context.Context, change func(*api.Node)) error {
	for try := 0; ; try++ {
		r, err := n.res.Get(ctx, api.KindNode, n.cfg.Name)
		if err != nil {
			return fmt.Errorf("read node %s: %w", n.cfg.Name, err)
		}
		nd := r.(*api.Node)
		change(nd)
		_, err = n.res.Apply(ctx, nd)
		if err == nil || !errors.Is(err, datastore.ErrConflict) || try >= 3 {
			return err
		}
	}
}

// recordPodMTU writes the pods' MTU into the Node's status when it
// differs from what the Node says (self as just read).
func (n *Node) recordPodMTU(ctx context.Context, self *api.Node, mtu int) error {
	if self == nil || self.Status != nil && self.Status.PodMTU == mtu {
		return nil
	}
	return n.updateNode(ctx, func(nd *api.Node) {
		if nd.Status == nil {
			nd.Status = &api.NodeStatus{}
		}
		nd.Status.PodMTU = mtu
	})
}

// releaseOrphanBlocks gives back this node's blocks that no pool holds
// (their pool was deleted with --force while pods had addresses in
// them) as soon as they are empty: they are then neither advertised
// nor blackholed. It returns the blocks the node keeps.
func (n *Node) releaseOrphanBlocks(ctx context.Context, blocks []netip.Prefix, pools []*api.IPPool) []netip.Prefix {
	var keep []netip.Prefix
	for _, b := range blocks {
		held := slices.ContainsFunc(pools, func(p *api.IPPool) bool {
			c, err := p.Prefix()
			return err == nil && c.Bits() <= b.Bits() && c.Contains(b.Addr())
		})
		if !held {
			ok, err := n.ipam.ReleaseEmptyBlock(ctx, n.cfg.Name, b)
			if err != nil {
				n.log.Warn("release block of no pool", "block", b, "err", err)
			}
			if ok {
				n.log.Info("block of no pool released", "block", b)
				continue
			}
		}
		keep = append(keep, b)
	}
	return keep
}

// delHostAddr removes ip/32 from podnet0, if it is there.
func (n *Node) delHostAddr(s string) {
	n.hostAddr(s, netlink.AddrDel, syscall.EADDRNOTAVAIL, "remove tunnel address from podnet0")
}

// addHostAddr puts ip/32 on podnet0 (once); the address watcher then
// routes it to the host.
func (n *Node) addHostAddr(s string) {
	n.hostAddr(s, netlink.AddrAdd, syscall.EEXIST, "tunnel address on podnet0")
}

// hostAddr applies op (add or delete) to ip/32 on podnet0; ok is the
// errno that means it was already done.
func (n *Node) hostAddr(s string, op func(netlink.Link, *netlink.Addr) error, ok syscall.Errno, what string) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return
	}
	l, err := netlink.LinkByIndex(n.hostIndex)
	if err != nil {
		return
	}
	if err := op(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(ip, 32))}); err != nil && !errors.Is(err, ok) {
		n.log.Warn(what, "ip", ip, "err", err)
	}
}

// resourcesOf picks the resources of type T from rs.
func resourcesOf[T api.Resource](rs []api.Resource) []T {
	out := make([]T, 0, len(rs))
	for _, r := range rs {
		if t, ok := r.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// ippools picks the IPPools from rs.
func ippools(rs []api.Resource) []*api.IPPool { return resourcesOf[*api.IPPool](rs) }
