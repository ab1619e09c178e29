package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Graph is a picture of a running lab: the fabric and its subnets, the
// nodes with their addresses, tunnel addresses, IPAM blocks, pods and BGP
// sessions, the pools, and how each node reaches the others' pods. It is
// gathered live (Lab.Graph) and drawn as text, DOT, Mermaid or SVG.
type Graph struct {
	Lab     string        `json:"lab"`
	Fabric  string        `json:"fabric"`
	Subnets []GraphSubnet `json:"subnets"`
	// External is the host outside the cluster; nil when the lab has none.
	External *GraphExternal `json:"external,omitempty"`
	Pools    []GraphPool    `json:"pools"`
	Nodes    []GraphNode    `json:"nodes"`
	// Overlay lists, per node and next hop, the pod routes it learned and
	// the encapsulation they use.
	Overlay []GraphHop `json:"overlay"`
}

// GraphSubnet is one underlay subnet: a bridge in the fabric namespace.
type GraphSubnet struct {
	Bridge  string       `json:"bridge"`
	Gateway netip.Prefix `json:"gateway"`
}

// GraphExternal is the host outside the cluster.
type GraphExternal struct {
	Netns   string     `json:"netns"`
	Address netip.Addr `json:"address"`
}

// GraphPool is an IP pool and its modes.
type GraphPool struct {
	Name        string       `json:"name"`
	CIDR        netip.Prefix `json:"cidr"`
	IPIPMode    string       `json:"ipipMode"`
	VXLANMode   string       `json:"vxlanMode"`
	NATOutgoing bool         `json:"natOutgoing"`
	Disabled    bool         `json:"disabled"`
}

// GraphNode is one node of the lab.
type GraphNode struct {
	Name    string       `json:"name"`
	Netns   string       `json:"netns"`
	Address netip.Prefix `json:"address"`
	// Bridge is the fabric bridge the node's eth0 is plugged into.
	Bridge string `json:"bridge"`
	// IPIPTunnel and VXLANTunnel are the node's tunnel addresses (from
	// its Node resource); zero when it has none.
	IPIPTunnel  netip.Addr   `json:"ipipTunnel,omitzero"`
	VXLANTunnel netip.Addr   `json:"vxlanTunnel,omitzero"`
	VXLANMAC    string       `json:"vxlanMAC,omitempty"`
	Blocks      []GraphBlock `json:"blocks"`
	Pods        []GraphPod   `json:"pods"`
	Peers       []GraphPeer  `json:"peers"`
	// Error says what could not be read from the node (its daemon is
	// down, say); the rest of the graph is still drawn.
	Error string `json:"error,omitempty"`
}

// GraphBlock is an IPAM block affine to a node.
type GraphBlock struct {
	CIDR  netip.Prefix `json:"cidr"`
	Pool  string       `json:"pool"`
	InUse int          `json:"inUse"`
	Total int          `json:"total"`
}

// GraphPod is a pod attached to a node. Lab is false for a pod the lab
// did not create (`podnet pod add` run by hand on the node).
type GraphPod struct {
	Name string     `json:"name"`
	IP   netip.Addr `json:"ip"`
	Lab  bool       `json:"lab"`
}

// GraphPeer is one BGP session of a node.
type GraphPeer struct {
	Address netip.Addr `json:"address"`
	// Node is the lab node at Address, "" for a peer outside the lab.
	Node  string `json:"node,omitempty"`
	Type  string `json:"type"`
	State string `json:"state"`
}

// GraphHop is what node From sends to next hop Via (node To): the pod
// prefixes it routes there and the encapsulation ("ipip", "vxlan" or
// "none" for plain routing).
type GraphHop struct {
	From     string         `json:"from"`
	To       string         `json:"to"`
	Via      netip.Addr     `json:"via"`
	Encap    string         `json:"encap"`
	Prefixes []netip.Prefix `json:"prefixes"`
}

// Graph gathers the lab's picture now: the datastore's Node and IPPool
// resources and IPAM blocks, and from each node's daemon its pods, BGP
// sessions and routes (the same data as podnet get, ipam show, pod list,
// node status and route list). What cannot be read is reported in the
// graph (GraphNode.Error), not as an error; the error is for a lab that
// cannot be asked at all.
func (l *Lab) Graph(ctx context.Context) (Graph, error) {
	l.mu.Lock()
	st := l.st
	st.Nodes = append([]nodeState(nil), st.Nodes...)
	st.Pods = append([]podState(nil), st.Pods...)
	l.mu.Unlock()
	g := Graph{Lab: st.Name, Fabric: fabricNetns(st.Name)}
	for s := 0; s < max(st.Subnets, 1); s++ {
		g.Subnets = append(g.Subnets, GraphSubnet{Bridge: subnetBridge(s), Gateway: subnetGateway(s)})
	}
	if e := st.External; e != nil {
		g.External = &GraphExternal{Netns: e.Netns, Address: e.Address.Addr()}
	}
	byAddr := map[netip.Addr]string{}
	for k, n := range st.Nodes {
		byAddr[n.Address.Addr()] = n.Name
		g.Nodes = append(g.Nodes, GraphNode{
			Name: n.Name, Netns: n.Netns, Address: n.Address,
			Bridge: subnetBridge(nodeSubnet(k+1, max(st.Subnets, 1))),
			Blocks: []GraphBlock{}, Pods: []GraphPod{}, Peers: []GraphPeer{},
		})
	}
	if st.NoDaemon {
		return g, nil
	}
	if err := l.graphDatastore(ctx, &g); err != nil {
		return g, err
	}
	for i := range g.Nodes {
		if err := l.graphNode(ctx, &g, i, st, byAddr); err != nil {
			g.Nodes[i].Error = err.Error()
		}
	}
	return g, nil
}

// graphDatastore fills in pools, tunnel addresses and blocks.
func (l *Lab) graphDatastore(ctx context.Context, g *Graph) error {
	var pools struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				CIDR        netip.Prefix `json:"cidr"`
				IPIPMode    string       `json:"ipipMode"`
				VXLANMode   string       `json:"vxlanMode"`
				NATOutgoing bool         `json:"natOutgoing"`
				Disabled    bool         `json:"disabled"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := l.outputJSON(ctx, "fabric", &pools, "podnet", "get", "ippool", "-o", "json"); err != nil {
		return err
	}
	for _, p := range pools.Items {
		g.Pools = append(g.Pools, GraphPool{Name: p.Metadata.Name, CIDR: p.Spec.CIDR,
			IPIPMode: orNever(p.Spec.IPIPMode), VXLANMode: orNever(p.Spec.VXLANMode),
			NATOutgoing: p.Spec.NATOutgoing, Disabled: p.Spec.Disabled})
	}
	var nodes struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				BGP struct {
					IPIP netip.Addr `json:"ipv4IPIPTunnelAddr"`
				} `json:"bgp"`
				VXLAN    netip.Addr `json:"ipv4VXLANTunnelAddr"`
				VXLANMAC string     `json:"vxlanTunnelMACAddr"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := l.outputJSON(ctx, "fabric", &nodes, "podnet", "get", "node", "-o", "json"); err != nil {
		return err
	}
	for _, r := range nodes.Items {
		if n := g.node(r.Metadata.Name); n != nil {
			n.IPIPTunnel, n.VXLANTunnel, n.VXLANMAC = r.Spec.BGP.IPIP, r.Spec.VXLAN, r.Spec.VXLANMAC
		}
	}
	var usage []struct {
		Blocks []struct {
			CIDR         netip.Prefix
			Pool, Node   string
			Total, InUse int
		}
	}
	if err := l.outputJSON(ctx, "fabric", &usage, "podnet", "ipam", "show", "-o", "json"); err != nil {
		return err
	}
	for _, u := range usage {
		for _, b := range u.Blocks {
			if n := g.node(b.Node); n != nil {
				n.Blocks = append(n.Blocks, GraphBlock{CIDR: b.CIDR, Pool: b.Pool, InUse: b.InUse, Total: b.Total})
			}
		}
	}
	return nil
}

// graphNode fills in node i's pods, BGP sessions and overlay routes from
// its daemon.
func (l *Lab) graphNode(ctx context.Context, g *Graph, i int, st state, byAddr map[netip.Addr]string) error {
	n := &g.Nodes[i]
	var pods []struct {
		Name string     `json:"name"`
		IP   netip.Addr `json:"ip"`
	}
	if err := l.outputJSON(ctx, n.Name, &pods, "podnet", "pod", "list", "-o", "json"); err != nil {
		return err
	}
	for _, p := range pods {
		sp := st.pod(p.Name)
		n.Pods = append(n.Pods, GraphPod{Name: p.Name, IP: p.IP, Lab: sp != nil && sp.Node == n.Name})
	}
	sort.Slice(n.Pods, func(a, b int) bool { return n.Pods[a].IP.Less(n.Pods[b].IP) })
	var peers []struct {
		Address     netip.Addr
		Type, State string
	}
	if err := l.outputJSON(ctx, n.Name, &peers, "podnet", "node", "status", "-o", "json"); err != nil {
		return err
	}
	for _, p := range peers {
		n.Peers = append(n.Peers, GraphPeer{Address: p.Address, Node: byAddr[p.Address], Type: p.Type, State: p.State})
	}
	var routes []struct {
		Prefix  netip.Prefix `json:"prefix"`
		Kind    string       `json:"kind"`
		NextHop netip.Addr   `json:"nextHop"`
		Encap   string       `json:"encap"`
	}
	if err := l.outputJSON(ctx, n.Name, &routes, "podnet", "route", "list", "-o", "json"); err != nil {
		return err
	}
	hops := map[[2]string]*GraphHop{}
	var order [][2]string
	for _, r := range routes {
		to, ok := byAddr[r.NextHop]
		if !ok || r.Kind == "blackhole" {
			continue
		}
		key := [2]string{r.NextHop.String(), r.Encap}
		h := hops[key]
		if h == nil {
			h = &GraphHop{From: n.Name, To: to, Via: r.NextHop, Encap: r.Encap}
			hops[key] = h
			order = append(order, key)
		}
		h.Prefixes = append(h.Prefixes, r.Prefix)
	}
	for _, k := range order {
		g.Overlay = append(g.Overlay, *hops[k])
	}
	return nil
}

// outputJSON runs args in target and decodes its stdout into v.
func (l *Lab) outputJSON(ctx context.Context, target string, v any, args ...string) error {
	out, err := l.Output(ctx, target, args...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("decode %s in %s: %w", strings.Join(args, " "), target, err)
	}
	return nil
}

func (g *Graph) node(name string) *GraphNode {
	for i := range g.Nodes {
		if g.Nodes[i].Name == name {
			return &g.Nodes[i]
		}
	}
	return nil
}

func orNever(mode string) string {
	if mode == "" {
		return "Never"
	}
	return mode
}
