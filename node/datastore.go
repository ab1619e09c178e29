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
)

// The node's link to the datastore: the daemon's own etcd (or the
// configured cluster), the default pool and the Node resource.

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

// registerNode writes this node's Node resource (address, pod MTU) and
// keeps a liveness key alive while the daemon runs.
func (n *Node) registerNode(ctx context.Context, podMTU int) error {
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
		node.Status = &api.NodeStatus{PodMTU: podMTU, UnderlayInterface: n.underlay, Started: api.NewTime(n.started)}
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
