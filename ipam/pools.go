package ipam

import (
	"fmt"

	"podnet/api"
	"podnet/selector"
)

// FromIPPool is what IPAM needs to know of an IPPool resource: its range,
// block size, state, node selector (parsed), allowed uses and assignment
// mode. Defaults are applied to a copy first, so a pool as read from the
// datastore or as written by hand both do.
func FromIPPool(r *api.IPPool) (Pool, error) {
	p := *r
	p.Spec.AllowedUses = append([]string(nil), r.Spec.AllowedUses...)
	p.SetDefaults()
	cidr, err := p.Prefix()
	if err != nil || !cidr.Addr().Is4() {
		return Pool{}, fmt.Errorf("IP pool %s: cidr %q is not an IPv4 prefix", p.Name, p.Spec.CIDR)
	}
	sel, err := selector.Parse(p.Spec.NodeSelector)
	if err != nil {
		return Pool{}, fmt.Errorf("IP pool %s: nodeSelector: %w", p.Name, err)
	}
	uses := make([]Use, len(p.Spec.AllowedUses))
	for i, u := range p.Spec.AllowedUses {
		uses[i] = Use(u)
	}
	return Pool{
		Name: p.Name, CIDR: cidr.Masked(), BlockSize: p.Spec.BlockSize, Disabled: p.Spec.Disabled,
		NodeSelector: sel, AllowedUses: uses, Manual: p.Spec.AssignmentMode == api.AssignManual,
	}, nil
}

// PoolsFromResources converts the IPPool resources rs (as a resource
// List returns them), keeping their order. Pools that are not IPv4 are
// left out (IPAM is IPv4 only, and validation refuses IPv6 pools);
// anything else that does not convert is an error.
func PoolsFromResources(rs []api.Resource) ([]Pool, error) {
	var out []Pool
	for _, r := range rs {
		ip, ok := r.(*api.IPPool)
		if !ok {
			return nil, fmt.Errorf("%s is not an IPPool", api.Key(r))
		}
		if pfx, err := ip.Prefix(); err == nil && !pfx.Addr().Is4() {
			continue
		}
		p, err := FromIPPool(ip)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
