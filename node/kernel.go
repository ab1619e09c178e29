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
		if owner, ok := foreignKernelRoute(p); ok {
			// Someone else's route (the node's default route, a pod's
			// route, an operator's): never replaced. The switch still
			// forwards by what was learned.
			if s.kernelSkipped[p] != owner {
				n.log.Warn("kernel route not ours, left alone", "prefix", p, "protocol", owner)
			}
			s.kernelSkipped[p] = owner
			continue
		}
		delete(s.kernelSkipped, p)
		if err := netlink.RouteReplace(kr.route(p, n.hostIndex)); err != nil {
			n.log.Warn("kernel route", "prefix", p, "err", err)
			continue
		}
		s.kernel[p] = kr
	}
	for p := range s.kernelSkipped {
		if _, ok := want[p]; !ok {
			delete(s.kernelSkipped, p)
		}
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

// foreignKernelRoute reports whether the main table has a route to
// exactly p that the daemon did not install (another protocol than
// kernelProto), and that route's protocol. A failed lookup counts as
// foreign: better no kernel route than someone else's replaced.
func foreignKernelRoute(p netip.Prefix) (netlink.RouteProtocol, bool) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Dst: prefixNet(p), Table: syscall.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return -1, true
	}
	for _, r := range routes {
		if r.Protocol != kernelProto {
			return r.Protocol, true
		}
	}
	return 0, false
}

// cleanStaleKernelRoutes deletes the routes of kernelProto a previous
// daemon left in the main table (it was killed before it could): they
// name prefixes nobody may announce any more. Only the daemon's own are
// touched; the loop reinstalls what is still learned.
func (n *Node) cleanStaleKernelRoutes() {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Protocol: kernelProto, Table: syscall.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		n.log.Warn("list stale kernel routes", "err", err)
		return
	}
	for i := range routes {
		r := &routes[i]
		if r.Protocol != kernelProto {
			continue
		}
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, syscall.ESRCH) {
			n.log.Warn("delete stale kernel route", "prefix", r.Dst, "err", err)
			continue
		}
		n.log.Info("deleted stale kernel route", "prefix", r.Dst)
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
