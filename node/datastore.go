package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"podnet/api"
	"podnet/datastore"
	"podnet/internal/packet"
	"podnet/ipam"
	"podnet/resources"
	"podnet/routing"
)

// The node's link to the datastore: the daemon's own etcd (or the
// configured cluster), the default pool and the Node resource.

// DefaultEtcdSocket is where an embedded etcd listens by default; the
// CLI looks there when nothing else is configured.
const DefaultEtcdSocket = "/run/podnet/etcd.sock"

// openDatastore makes the client for the configured etcd, or starts an
// embedded one in the state dir when no endpoints are configured. It
// does not wait for etcd to answer: the node runs without it. The
// returned func closes both.
func (n *Node) openDatastore() (func(), error) {
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
	store, err := datastore.Dial(cfg)
	if err != nil {
		if emb != nil {
			emb.Close()
		}
		return nil, err
	}
	n.store = store
	n.ipam = ipam.New(store)
	n.res = resources.New(store, resources.PoolHooks(n.ipam))
	return func() {
		store.Close()
		if emb != nil {
			emb.Close()
		}
	}, nil
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

// firstContact is the start's datastore work: the default pool, the
// pools' encapsulation overhead (for the MTU podnet0 and the pods get)
// and the Node resource. Run bounds it with a timeout; the datastore
// goroutine calls register when it fails.
func (n *Node) firstContact(ctx context.Context, s *state) error {
	if err := n.store.Ping(ctx); err != nil {
		return err
	}
	if err := n.ensureDefaultPool(ctx); err != nil {
		return err
	}
	pools, _, err := n.res.List(ctx, api.KindIPPool)
	if err != nil {
		return fmt.Errorf("list pools: %w", err)
	}
	s.view.overhead, s.overheadKnown = routing.EncapOverhead(ippools(pools)), true
	return n.registerNode(ctx, s.podMTU(n.cfg.PodMTU), true)
}

// register is firstContact late: the node started while etcd did not
// answer, and the datastore goroutine registers it now. The pods' MTU
// follows with the first view.
func (n *Node) register(ctx context.Context) error {
	if err := n.ensureDefaultPool(ctx); err != nil {
		return err
	}
	return n.registerNode(ctx, routing.PodMTU(n.cfg.PodMTU, 0), false)
}

// registerNode writes this node's Node resource (address, pod MTU).
// atStart is true before the switch exists: a VXLAN MAC the Node
// resource sets then replaces the derived one; later it can only be
// reported (the VXLAN port already has its MAC).
func (n *Node) registerNode(ctx context.Context, podMTU int, atStart bool) error {
	for try := 0; ; try++ {
		var node *api.Node
		r, err := n.res.Get(ctx, api.KindNode, n.cfg.Name)
		switch {
		case err == nil:
			node = r.(*api.Node)
		case errors.Is(err, datastore.ErrNotFound):
			node = api.NewNode(n.cfg.Name)
		default:
			return fmt.Errorf("register node %s: %w", n.cfg.Name, err)
		}
		if node.Spec.BGP == nil {
			node.Spec.BGP = &api.NodeBGPSpec{}
		}
		if n.underlayAddr.IsValid() {
			node.Spec.BGP.IPv4Address = n.underlayAddr.String()
		}
		if node.Spec.VXLANTunnelMACAddr == "" {
			node.Spec.VXLANTunnelMACAddr = n.vtepMAC().String()
		} else if m, err := packet.ParseMAC(node.Spec.VXLANTunnelMACAddr); err == nil && m != n.vtepMAC() {
			if atStart {
				n.cfg.VTEPMAC = m
			} else {
				n.log.Warn("the Node's vxlanTunnelMACAddr differs from the MAC this daemon started with (etcd was unreachable then); restart the daemon to use it",
					"node", m, "inUse", n.vtepMAC())
			}
		}
		node.Status = &api.NodeStatus{PodMTU: podMTU, UnderlayInterface: n.underlay, Started: api.NewTime(n.started)}
		_, err = n.res.Apply(ctx, node)
		if err == nil {
			return nil
		}
		if !errors.Is(err, datastore.ErrConflict) || try > 5 {
			return fmt.Errorf("register node %s: %w", n.cfg.Name, err)
		}
	}
}
