package node

import (
	"context"
	"syscall"

	"errors"
	"fmt"
	"github.com/vishvananda/netlink"
	"net/netip"
	"path/filepath"
	"time"

	"podnet/api"
	"podnet/datastore"
	"podnet/internal/packet"
	"podnet/ipam"
	"podnet/resources"
)

// The control plane's link to the datastore: the daemon's own etcd (or
// the configured cluster), the default pool, the Node resource, and
// addresses for pods from IPAM.

// DefaultEtcdSocket is where an embedded etcd listens by default; the
// CLI looks there when nothing else is configured.
const DefaultEtcdSocket = "/run/podnet/etcd.sock"

// openDatastore connects to the configured etcd, or starts an embedded one
// in the state dir when no endpoints are configured. The returned func
// closes both.
func (n *Node) openDatastore(ctx context.Context) (func(), error) {
	cfg := n.cfg.Datastore
	var emb *datastore.Embedded
	if len(cfg.Endpoints) == 0 {
		sock := n.cfg.EtcdSocket
		if sock == "" {
			sock = DefaultEtcdSocket
		}
		var err error
		ec := n.cfg.EtcdServer
		ec.Dir, ec.Socket, ec.Logger = filepath.Join(n.cfg.StateDir, "etcd"), sock, n.log
		ec.ListenClientURLs = append(ec.ListenClientURLs, n.cfg.EtcdListen...)
		emb, err = datastore.StartEmbedded(ec)
		if err != nil {
			return nil, err
		}
		cfg.Endpoints = emb.Endpoints()[:1]
		n.log.Info("embedded etcd started", "endpoints", emb.Endpoints())
	}
	store, err := datastore.Open(ctx, cfg)
	if err != nil {
		if emb != nil {
			emb.Close()
		}
		return nil, err
	}
	n.store = store
	n.ipam = ipam.New(store)
	n.res = resources.New(store, PoolHooks(n.ipam))
	return func() {
		store.Close()
		if emb != nil {
			emb.Close()
		}
	}, nil
}

// PoolInUse is the resources hook that refuses deleting a pool that still
// has allocations: it counts them per node.
func PoolInUse(m *ipam.IPAM) func(ctx context.Context, pool api.IPPool) (int, string, error) {
	return func(ctx context.Context, pool api.IPPool) (int, string, error) {
		cidr, err := pool.Prefix()
		if err != nil {
			return 0, "", err
		}
		count, byNode, err := m.PoolAllocations(ctx, cidr)
		if err != nil || count == 0 {
			return count, "", err
		}
		return count, formatByNode(byNode), nil
	}
}

// PoolHooks are the resources options that tie pools to IPAM: deleting a
// pool with allocations is refused, and deleting one drops its empty
// blocks and their affinities.
func PoolHooks(m *ipam.IPAM) resources.Options {
	return resources.Options{
		PoolInUse: PoolInUse(m),
		PoolDeleted: func(ctx context.Context, pool api.IPPool) error {
			cidr, err := pool.Prefix()
			if err != nil {
				return err
			}
			return m.ReleasePoolAffinities(ctx, cidr)
		},
	}
}

// ensureDefaultPool creates default-ipv4-ippool when no pool exists, as
// calico/node does on first start.
func (n *Node) ensureDefaultPool(ctx context.Context) error {
	pools, _, err := n.res.List(ctx, api.KindIPPool)
	if err != nil {
		return fmt.Errorf("list pools: %w", err)
	}
	if len(pools) > 0 {
		return nil
	}
	pool := api.DefaultIPPool()
	if n.cfg.DefaultPoolIPIPMode != "" {
		pool.Spec.IPIPMode = n.cfg.DefaultPoolIPIPMode
	}
	if n.cfg.DefaultPoolVXLANMode != "" {
		pool.Spec.VXLANMode = n.cfg.DefaultPoolVXLANMode
	}
	_, err = n.res.Create(ctx, pool)
	if err != nil && !errors.Is(err, datastore.ErrExists) {
		return fmt.Errorf("create default pool: %w", err)
	}
	if err == nil {
		n.log.Info("created default pool", "pool", api.DefaultPoolName, "cidr", api.DefaultPoolCIDR)
	}
	return nil
}

// registerNode writes this node's Node resource (address, MTU) and keeps
// a liveness key alive while the daemon runs.
func (n *Node) registerNode(ctx context.Context) error {
	for try := 0; ; try++ {
		var node *api.Node
		r, err := n.res.Get(ctx, api.KindNode, n.cfg.Name)
		switch {
		case err == nil:
			node = r.(*api.Node)
		case errors.Is(err, datastore.ErrNotFound):
			node = api.NewNode(n.cfg.Name)
		default:
			return fmt.Errorf("register node: %w", err)
		}
		if node.Spec.BGP == nil {
			node.Spec.BGP = &api.NodeBGPSpec{}
		}
		if n.underlayAddr.IsValid() {
			node.Spec.BGP.IPv4Address = n.underlayAddr.String()
		}
		if node.Spec.VXLANTunnelMACAddr == "" {
			node.Spec.VXLANTunnelMACAddr = n.vtepMAC().String()
		} else if m, err := packet.ParseMAC(node.Spec.VXLANTunnelMACAddr); err == nil {
			n.cfg.VTEPMAC = m
		}
		node.Status = &api.NodeStatus{PodMTU: n.podMTU(), UnderlayInterface: n.underlay, Started: api.NewTime(n.started)}
		_, err = n.res.Apply(ctx, node)
		if err == nil {
			break
		}
		if !errors.Is(err, datastore.ErrConflict) || try > 5 {
			return fmt.Errorf("register node: %w", err)
		}
	}
	return n.store.KeepAlive(ctx, n.cfg.Name)
}

// ipamPools converts pool resources for IPAM.
func ipamPools(rs []api.Resource) ([]ipam.Pool, map[string]*api.IPPool) {
	var out []ipam.Pool
	byName := map[string]*api.IPPool{}
	for _, r := range rs {
		p := r.(*api.IPPool)
		cidr, err := p.Prefix()
		if err != nil || !cidr.Addr().Is4() {
			continue
		}
		byName[p.Name] = p
		out = append(out, ipam.Pool{Name: p.Name, CIDR: cidr, BlockSize: p.Spec.BlockSize, Disabled: p.Spec.Disabled})
	}
	return out, byName
}

// autoPool says whether IPAM may pick pool p for this node by itself.
func autoPool(p *api.IPPool) bool {
	if p.Spec.Disabled || p.Spec.AssignmentMode == "Manual" {
		return false
	}
	// Node selectors beyond all()/!all() are not evaluated yet; a pool
	// with another selector is not auto-assigned rather than guessed at.
	return p.Spec.NodeSelector == "" || p.Spec.NodeSelector == "all()"
}

// podHandle is the IPAM handle of a pod's address on this node.
func (n *Node) podHandle(pod string) string { return "pod." + n.cfg.Name + "." + pod }

// allocate gets an address for pod: the given one, or one from the named
// pool, or one from the enabled pools.
func (n *Node) allocate(ctx context.Context, pod, ipStr, poolName string) (netip.Addr, error) {
	rs, _, err := n.res.List(ctx, api.KindIPPool)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list pools: %w", err)
	}
	pools, byName := ipamPools(rs)
	attrs := map[string]string{"node": n.cfg.Name, "pod": pod, "type": "pod"}
	if ipStr != "" {
		ip, err := netip.ParseAddr(ipStr)
		if err != nil || !ip.Is4() {
			return netip.Addr{}, badRequest("pod %s: invalid IPv4 address %q", pod, ipStr)
		}
		err = n.ipam.AssignIP(ctx, ipam.AssignIPArgs{IP: ip, Node: n.cfg.Name, HandleID: n.podHandle(pod), Attrs: attrs, Pools: pools})
		if err != nil {
			return netip.Addr{}, ipamError(err)
		}
		return ip, nil
	}
	var cands []ipam.Pool
	if poolName != "" {
		p, ok := byName[poolName]
		if !ok {
			return netip.Addr{}, badRequest("pool %s does not exist", poolName)
		}
		if p.Spec.Disabled {
			return netip.Addr{}, badRequest("pool %s is disabled: it gives no new addresses", poolName)
		}
		for _, c := range pools {
			if c.Name == poolName {
				cands = append(cands, c)
			}
		}
	} else {
		for _, c := range pools {
			if autoPool(byName[c.Name]) {
				cands = append(cands, c)
			}
		}
	}
	ip, err := n.ipam.AutoAssign(ctx, ipam.AssignArgs{Node: n.cfg.Name, HandleID: n.podHandle(pod), Attrs: attrs, Pools: cands})
	if err != nil {
		return netip.Addr{}, ipamError(err)
	}
	return ip, nil
}

// ipamError marks IPAM refusals (exhausted, taken, outside pools) as the
// user's to fix rather than the node's failure.
func ipamError(err error) error {
	for _, e := range []error{ipam.ErrPoolsExhausted, ipam.ErrNotInPool, ipam.ErrAlreadyAssigned, ipam.ErrStrictAffinity, ipam.ErrNoPools, ipam.ErrPoolDisabled} {
		if errors.Is(err, e) {
			return &userError{err.Error()}
		}
	}
	return err
}

// recordEndpoint writes (or removes) the pod's WorkloadEndpoint.
func (n *Node) recordEndpoint(ctx context.Context, rec PodRecord, add bool) error {
	name := api.WorkloadEndpointName(n.cfg.Name, rec.Name)
	if !add {
		_, err := n.res.Delete(ctx, api.KindWorkloadEndpoint, name, resources.DeleteOptions{})
		if err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return err
		}
		return nil
	}
	w := api.NewWorkloadEndpoint(name)
	w.Spec = api.WorkloadEndpointSpec{
		Node: n.cfg.Name, Workload: rec.Name, InterfaceName: "eth0",
		IPNetworks: []string{netip.PrefixFrom(rec.IP, 32).String()}, MAC: rec.MAC, Netns: rec.Netns,
	}
	_, err := n.res.Apply(ctx, w)
	return err
}

func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// Tunnel address kinds (Calico's handles and attribute types).
var tunnelKinds = []struct {
	handle, attrType string
	wants            func(p *api.IPPool) bool
	field            func(nd *api.Node) *string
}{
	{"vxlan-tunnel-addr-", "vxlanTunnelAddress",
		func(p *api.IPPool) bool { return p.Spec.VXLANMode == "Always" || p.Spec.VXLANMode == "CrossSubnet" },
		func(nd *api.Node) *string { return &nd.Spec.IPv4VXLANTunnelAddr }},
	{"ipip-tunnel-addr-", "ipipTunnelAddress",
		func(p *api.IPPool) bool { return p.Spec.IPIPMode == "Always" || p.Spec.IPIPMode == "CrossSubnet" },
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
// this node with its blocks). Called by the routing loop.
func (n *Node) ensureTunnelAddrs(ctx context.Context, pools []api.Resource, self *api.Node) error {
	if self == nil {
		return nil
	}
	ipamPools, byName := ipamPools(pools)
	for _, k := range tunnelKinds {
		var cands []ipam.Pool
		for _, p := range ipamPools {
			if pp := byName[p.Name]; k.wants(pp) && autoPool(pp) {
				cands = append(cands, p)
			}
		}
		cur := *k.field(self)
		if len(cands) == 0 || cur != "" {
			if cur != "" {
				n.addHostAddr(cur)
			}
			continue
		}
		handle := k.handle + n.cfg.Name
		ip, err := n.ipam.AutoAssign(ctx, ipam.AssignArgs{Node: n.cfg.Name, HandleID: handle,
			Attrs: map[string]string{"node": n.cfg.Name, "type": k.attrType}, Pools: cands})
		if err != nil {
			return fmt.Errorf("tunnel address: %w", err)
		}
		r, err := n.res.Get(ctx, api.KindNode, n.cfg.Name)
		if err != nil {
			n.ipam.ReleaseByHandle(ctx, handle)
			return err
		}
		nd := r.(*api.Node)
		*k.field(nd) = ip.String()
		if _, err := n.res.Apply(ctx, nd); err != nil {
			n.ipam.ReleaseByHandle(ctx, handle)
			return fmt.Errorf("record tunnel address: %w", err)
		}
		n.log.Info("tunnel address assigned", "type", k.attrType, "ip", ip)
		n.addHostAddr(ip.String())
	}
	return nil
}

// addHostAddr puts ip/32 on podnet0 (once); the address watcher then
// routes it to the host.
func (n *Node) addHostAddr(s string) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return
	}
	l, err := netlink.LinkByIndex(n.hostIndex)
	if err != nil {
		return
	}
	a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(ip, 32))}
	if err := netlink.AddrAdd(l, a); err != nil && !errors.Is(err, syscall.EEXIST) {
		n.log.Warn("tunnel address on podnet0", "ip", ip, "err", err)
	}
}
