package vswitch

import (
	"net/netip"

	"github.com/gaissmai/bart"

	"podnet/router"
)

// fib is the forwarding table the data path reads: the control plane's
// route table with every route resolved to its egress, so one lookup
// yields where a packet goes. It is immutable once published; the switch
// compiles a new one whenever routes, ports or tunnels change (compile).
type fib struct {
	lpm    bart.Table[*hop]
	hops   []hop
	routes *router.Table
	// hostHop sends to the host port (answers to inbound connections that
	// NAT must not take); nil without a host port.
	hostHop *hop
	// pools are the cluster's pools: sources outside them are outside the
	// cluster.
	pools []netip.Prefix
}

// lookup returns the hop for the most specific route containing addr. It
// does not allocate.
func (t *fib) lookup(addr netip.Addr) (*hop, bool) { return t.lpm.Lookup(addr) }

// attachments is what routes resolve against; the switch keeps it under
// its mutex.
type attachments struct {
	pods    []*podPort // indexed by port index; nil entries are free
	host    *hostPort
	tunnels [router.EncapVXLAN + 1]*tunnelPort // by encapsulation
	nat     *natEgress
}

// compile resolves every route of t against a.
func compile(t *router.Table, a *attachments) *fib {
	f := &fib{routes: t}
	if a.host != nil {
		f.hostHop = &hop{eg: a.host, r: &router.Route{Prefix: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Kind: router.KindHost, Dev: HostTUNName, Source: "answer to an inbound connection"}}
	}
	if a.nat != nil {
		f.pools = a.nat.cfg.Pools
	}
	if t == nil {
		return f
	}
	routes := t.Routes()
	f.hops = make([]hop, len(routes))
	for i := range routes {
		r := &routes[i]
		f.hops[i] = hop{eg: a.resolve(r), r: r}
		f.lpm.Insert(r.Prefix, &f.hops[i])
	}
	return f
}

// resolve says which egress route r sends to.
func (a *attachments) resolve(r *router.Route) egress {
	switch r.Kind {
	case router.KindLocalPod:
		if r.Port >= 0 && r.Port < len(a.pods) && a.pods[r.Port] != nil {
			return a.pods[r.Port]
		}
		return dropPortGone
	case router.KindHost:
		if a.host != nil {
			return a.host
		}
		return dropPortGone
	case router.KindRemote:
		if int(r.Encap) < len(a.tunnels) && a.tunnels[r.Encap] != nil {
			return a.tunnels[r.Encap]
		}
		return dropUnsupported
	case router.KindNAT:
		return a.nat
	case router.KindBlackhole:
		return dropBlackhole
	default:
		return dropUnsupported
	}
}
