package routing

import (
	"net/netip"

	"podnet/api"
)

// NATPools says which addresses are inside the cluster (every pool's
// CIDR, disabled pools too: the switch never NATs toward them) and which
// pods may use NAT outgoing (the pools with natOutgoing).
func NATPools(pools []*api.IPPool) (cluster, allowed []netip.Prefix) {
	for _, p := range pools {
		cidr, err := p.Prefix()
		if err != nil {
			continue
		}
		cluster = append(cluster, cidr)
		if p.Spec.NATOutgoing {
			allowed = append(allowed, cidr)
		}
	}
	return cluster, allowed
}
