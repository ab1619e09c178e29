package routing

import (
	"net/netip"

	"podnet/api"
)

// node returns a Node at addr (e.g. "10.0.0.2/24"; "" for none) with
// labels k1, v1, k2, v2...
func node(name, addr string, labels ...string) *api.Node {
	nd := api.NewNode(name)
	if addr != "" {
		nd.Spec.BGP = &api.NodeBGPSpec{IPv4Address: addr}
	}
	if len(labels) > 0 {
		nd.Labels = map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			nd.Labels[labels[i]] = labels[i+1]
		}
	}
	return nd
}

func reflector(nd *api.Node, cluster string) *api.Node {
	nd.Spec.BGP.RouteReflectorClusterID = cluster
	return nd
}

func pool(name, cidr string, ipip, vxlan api.EncapMode, nat bool) *api.IPPool {
	p := api.NewIPPool(name)
	p.Spec = api.IPPoolSpec{CIDR: cidr, IPIPMode: ipip, VXLANMode: vxlan, NATOutgoing: nat}
	return p
}

func globalConfig(mesh bool) *api.BGPConfiguration {
	g := api.NewBGPConfiguration(api.BGPConfigurationGlobal)
	g.Spec.NodeToNodeMeshEnabled = &mesh
	g.SetDefaults()
	return g
}

var (
	addr   = netip.MustParseAddr
	prefix = netip.MustParsePrefix
)
