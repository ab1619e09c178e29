package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"

	"podnet/router"
	vswitch "podnet/switch"
)

// Kernel routes make the node's own stack reach pods: local pods and
// encapsulated remote prefixes through podnet0 (the switch delivers or
// tunnels them), unencapsulated remote prefixes via their next hop on the
// underlay.

// kernelProto marks the kernel routes the daemon installs for remote
// prefixes, so that it finds (and only touches) its own.
const kernelProto = netlink.RouteProtocol(80)

type kernelRoute struct {
	via netip.Addr // zero: dev podnet0
}

// podKernelRoute adds (or deletes) the route to a local pod's address.
func (n *Node) podKernelRoute(ip netip.Addr, add bool) error {
	r := &netlink.Route{LinkIndex: n.hostIndex, Scope: netlink.SCOPE_LINK, Dst: prefixNet(netip.PrefixFrom(ip, 32))}
	if add {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("kernel route %s dev %s: %w", ip, vswitch.HostTUNName, err)
		}
		return nil
	}
	if err := netlink.RouteDel(r); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete kernel route %s: %w", ip, err)
	}
	return nil
}

// syncKernelRoutes installs the kernel routes for remote (nil removes
// them all) and remembers them in s.
func (n *Node) syncKernelRoutes(s *state, remote []router.Route) {
	want := map[netip.Prefix]kernelRoute{}
	for _, r := range remote {
		if r.Kind == router.KindRemote {
			want[r.Prefix] = kernelRoute{}
		} else {
			want[r.Prefix] = kernelRoute{via: r.NextHop}
		}
	}
	for p, kr := range want {
		if old, ok := s.kernel[p]; ok && old == kr {
			continue
		}
		if err := netlink.RouteReplace(kr.route(p, n.hostIndex)); err != nil {
			n.log.Warn("kernel route", "prefix", p, "err", err)
			continue
		}
		s.kernel[p] = kr
	}
	for p, kr := range s.kernel {
		if _, ok := want[p]; ok {
			continue
		}
		if err := netlink.RouteDel(kr.route(p, n.hostIndex)); err != nil && !errors.Is(err, syscall.ESRCH) {
			n.log.Warn("delete kernel route", "prefix", p, "err", err)
		}
		delete(s.kernel, p)
	}
}

// route is the kernel route to p. Deleting takes the same route: the
// kernel matches the scope too, and a delete with netlink's default scope
// (universe) misses a scope-link route.
func (kr kernelRoute) route(p netip.Prefix, hostIndex int) *netlink.Route {
	rt := &netlink.Route{Dst: prefixNet(p), Protocol: kernelProto}
	if kr.via.IsValid() {
		rt.Gw = kr.via.AsSlice()
	} else {
		rt.LinkIndex, rt.Scope = hostIndex, netlink.SCOPE_LINK
	}
	return rt
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
