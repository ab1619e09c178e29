package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"podnet/api"
	"podnet/datastore"
	"podnet/ipam"
	"podnet/resources"
)

// Pods' addresses from IPAM and their WorkloadEndpoints. These talk to
// the datastore: callers must not run them on the control loop.

// opTimeout bounds one pod operation's datastore calls, and the
// datastore goroutine's reads and writes of one round.
const opTimeout = 30 * time.Second

// checkPodsTimeout bounds one checkPods, below opTimeout: a delete waits
// that long for the pods it holds. A var for tests.
var checkPodsTimeout = 20 * time.Second

func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// ipamPools converts pool resources for IPAM (nodeSelector parsed,
// allowedUses and assignmentMode carried), with the resources by name.
func ipamPools(rs []api.Resource) ([]ipam.Pool, map[string]*api.IPPool, error) {
	pools, err := ipam.PoolsFromResources(rs)
	if err != nil {
		return nil, nil, fmt.Errorf("IP pools: %w", err)
	}
	byName := map[string]*api.IPPool{}
	for _, p := range ippools(rs) {
		byName[p.Name] = p
	}
	return pools, byName, nil
}

// nodeLabels are this node's labels, for the pools' node selectors.
func (n *Node) nodeLabels(ctx context.Context) (map[string]string, error) {
	r, err := n.res.Get(ctx, api.KindNode, n.cfg.Name)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node %s: %w", n.cfg.Name, err)
	}
	return r.GetObjectMeta().Labels, nil
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
	pools, byName, err := ipamPools(rs)
	if err != nil {
		return netip.Addr{}, err
	}
	attrs := map[string]string{"node": n.cfg.Name, "pod": pod, "type": "pod"}
	if ipStr != "" {
		ip, err := netip.ParseAddr(ipStr)
		if err != nil || !ip.Is4() {
			return netip.Addr{}, badRequest("pod %s: invalid IPv4 address %q", pod, ipStr)
		}
		err = n.ipam.AssignIP(ctx, ipam.AssignIPArgs{IP: ip, Node: n.cfg.Name, HandleID: n.podHandle(pod), Attrs: attrs, Pools: pools, Use: ipam.UseWorkload})
		if err != nil {
			return netip.Addr{}, ipamError(err)
		}
		return ip, nil
	}
	labels, err := n.nodeLabels(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	args := ipam.AssignArgs{Node: n.cfg.Name, HandleID: n.podHandle(pod), Attrs: attrs, Pools: pools,
		NodeLabels: labels, Use: ipam.UseWorkload}
	if poolName != "" {
		p, ok := byName[poolName]
		if !ok {
			return netip.Addr{}, badPool("pool %s does not exist", poolName)
		}
		if p.Spec.Disabled {
			return netip.Addr{}, badPool("pool %s is disabled: it gives no new addresses", poolName)
		}
		args.Pools = slices.DeleteFunc(pools, func(c ipam.Pool) bool { return c.Name != poolName })
		args.Requested = true
	}
	ip, err := n.ipam.AutoAssign(ctx, args)
	if err != nil {
		return netip.Addr{}, ipamError(err)
	}
	return ip, nil
}

// ipamError marks IPAM refusals (exhausted, taken, outside pools) as the
// user's to fix rather than the node's failure.
func ipamError(err error) error {
	for _, e := range []error{ipam.ErrPoolsExhausted, ipam.ErrNotInPool, ipam.ErrAlreadyAssigned, ipam.ErrStrictAffinity, ipam.ErrNoPools, ipam.ErrPoolDisabled, ipam.ErrPoolUse} {
		if errors.Is(err, e) {
			return &userError{msg: err.Error()}
		}
	}
	return err
}

// recordEndpoint writes (or removes) the pod's WorkloadEndpoint.
//
// The name joins node and pod with a dash, as Calico's does, so pod
// "1-web" of node "worker" and pod "web" of node "worker-1" share
// "worker-1-web": an endpoint another pod owns is neither overwritten nor
// deleted (the add fails and says why).
func (n *Node) recordEndpoint(ctx context.Context, rec PodRecord, add bool) error {
	name := api.WorkloadEndpointName(n.cfg.Name, rec.Name)
	cur, err := n.res.Get(ctx, api.KindWorkloadEndpoint, name)
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	if err == nil {
		w := cur.(*api.WorkloadEndpoint)
		if w.Spec.Node != n.cfg.Name || w.Spec.Workload != rec.Name {
			if !add {
				return nil // not ours
			}
			return fmt.Errorf("workload endpoint %s belongs to pod %s of node %s: its name is this pod's too (node %s, pod %s); give the pod another name",
				name, w.Spec.Workload, w.Spec.Node, n.cfg.Name, rec.Name)
		}
	}
	if !add {
		if cur == nil {
			return nil
		}
		_, err := n.res.Delete(ctx, api.KindWorkloadEndpoint, name, resources.DeleteOptions{ResourceVersion: cur.GetObjectMeta().ResourceVersion})
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
	if cur == nil {
		// Create, not Apply: another node's pod of the same name may be
		// writing it now.
		_, err = n.res.Create(ctx, w)
		return err
	}
	w.ResourceVersion = cur.GetObjectMeta().ResourceVersion
	_, err = n.res.Apply(ctx, w)
	return err
}

// checkPods brings the datastore in line with the pods this node has:
// each pod's address is allocated to its handle in IPAM and its
// WorkloadEndpoint names it. A record can be missing after a crash in
// an older daemon, a datastore restored from backup, or `ipam release
// --leaked` run while an endpoint was missing; IPAM would then give the
// address to another pod. An address IPAM gave to another handle is
// reported, not taken back. The datastore goroutine runs it each time
// etcd answers again (the start included) and every checkPodsInterval;
// the pods it checks are marked busy, so that a delete waits instead of
// racing it; so it gives up after checkPodsTimeout, as a call to an etcd
// that stopped answering waits for its context.
func (n *Node) checkPods(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, checkPodsTimeout)
	defer cancel()
	var recs []PodRecord
	n.do(func(s *state) error {
		for _, p := range s.pods {
			if p.phase == podReady && p.rec.IP.IsValid() && p.rec.Handle != "" {
				p.busy = true
				recs = append(recs, p.rec)
			}
		}
		return nil
	})
	defer n.do(func(s *state) error {
		for _, rec := range recs {
			if p, ok := s.pods[rec.Name]; ok {
				p.busy = false
			}
		}
		return nil
	})
	if len(recs) == 0 {
		return nil
	}
	allocs, err := n.ipam.Allocations(ctx)
	if err != nil {
		return err
	}
	held := make(map[netip.Addr]string, len(allocs))
	for _, a := range allocs {
		held[a.IP] = a.HandleID
	}
	var pools []ipam.Pool
	var errs []error
	for _, rec := range recs {
		switch h, ok := held[rec.IP]; {
		case !ok:
			if pools == nil {
				rs, _, err := n.res.List(ctx, api.KindIPPool)
				if err != nil {
					return fmt.Errorf("list pools: %w", err)
				}
				if pools, _, err = ipamPools(rs); err != nil {
					return err
				}
			}
			// Restore: the pod had it, so its pool being disabled since
			// does not matter (old pods keep working).
			err := n.ipam.AssignIP(ctx, ipam.AssignIPArgs{IP: rec.IP, Node: n.cfg.Name, HandleID: rec.Handle,
				Attrs: map[string]string{"node": n.cfg.Name, "pod": rec.Name, "type": "pod"}, Pools: pools, Restore: true})
			if err != nil {
				errs = append(errs, fmt.Errorf("pod %s: address %s is not allocated in IPAM, and allocating it failed: %w", rec.Name, rec.IP, err))
				continue
			}
			n.log.Warn("pod's address was free in IPAM; allocated to it again", "pod", rec.Name, "ip", rec.IP)
		case h != rec.Handle:
			errs = append(errs, fmt.Errorf("pod %s: its address %s is held in IPAM by handle %s (run podnet ipam check)", rec.Name, rec.IP, h))
			continue
		}
		r, err := n.res.Get(ctx, api.KindWorkloadEndpoint, api.WorkloadEndpointName(n.cfg.Name, rec.Name))
		if err == nil {
			w := r.(*api.WorkloadEndpoint)
			if slices.Equal(w.Spec.IPNetworks, []string{netip.PrefixFrom(rec.IP, 32).String()}) {
				continue
			}
		} else if !errors.Is(err, datastore.ErrNotFound) {
			errs = append(errs, fmt.Errorf("pod %s: read workload endpoint: %w", rec.Name, err))
			continue
		}
		if err := n.recordEndpoint(ctx, rec, true); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: write workload endpoint: %w", rec.Name, err))
			continue
		}
		n.log.Warn("pod's workload endpoint was missing or wrong; written again", "pod", rec.Name, "ip", rec.IP)
	}
	return errors.Join(errs...)
}
