package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Advertise makes the set of prefixes this node originates exactly
// prefixes, all with next hop nextHop (the zero Addr means Config.RouterID):
// new prefixes are announced, missing ones withdrawn, and a prefix whose next
// hop changed is re-announced. Prefixes are masked to their length.
//
// The next hop is explicit on purpose: GoBGP keeps the explicit next hop of a
// locally originated path even towards eBGP peers (it rewrites only learned
// paths to the session's local address), so a top-of-rack router sees the
// node address.
//
// ctx is accepted for symmetry with SetPeers; GoBGP v4's path calls take
// none, and they only wait for GoBGP's own loop.
func (s *Speaker) Advertise(_ context.Context, prefixes []netip.Prefix, nextHop netip.Addr) error {
	if !nextHop.IsValid() {
		nextHop = s.cfg.RouterID
	}
	if !nextHop.Is4() || nextHop.IsUnspecified() {
		return fmt.Errorf("bgp: advertise: next hop %v is not an IPv4 unicast address", nextHop)
	}
	want := make(map[netip.Prefix]netip.Addr, len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("bgp: advertise: %v is not an IPv4 prefix", p)
		}
		want[p.Masked()] = nextHop
	}

	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.closed {
		return ErrClosed
	}

	var errs []error
	for _, p := range sortedPrefixes(s.adverts) {
		if _, ok := want[p]; ok {
			continue
		}
		path, err := originPath(p, s.adverts[p])
		if err == nil {
			err = s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %v: %w", p, err))
			continue
		}
		s.noteWithdrawn(p, s.adverts[p], time.Now())
		delete(s.adverts, p)
	}
	for _, p := range sortedPrefixes(want) {
		if nh, ok := s.adverts[p]; ok && nh == want[p] {
			continue
		}
		// Announcing a prefix we already originate replaces our old path
		// (implicit withdraw), so a next-hop change needs no DeletePath.
		path, err := originPath(p, want[p])
		if err == nil {
			err = addPath(s.srv, path)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %v via %v: %w", p, want[p], err))
			continue
		}
		s.adverts[p] = want[p]
		delete(s.withdrawn, p)
	}
	return errors.Join(errs...)
}

// originPath builds a locally originated IPv4 unicast path (ORIGIN IGP, as
// BIRD's static blackhole routes in Calico). PeerASN stays 0: GoBGP takes
// such a path as our own.
func originPath(p netip.Prefix, nextHop netip.Addr) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	nh, err := bgppkt.NewPathAttributeNextHop(nextHop)
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{
		Family: bgppkt.RF_IPv4_UC,
		Nlri:   nlri,
		// GoBGP takes the path's timestamp from Age; left 0, the path
		// would date from 1970.
		Age:   time.Now().Unix(),
		Attrs: []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP), nh},
	}, nil
}

// addPath adds one path. GoBGP reports a per-path failure both in the
// returned error and in the response list; either is enough.
func addPath(srv *server.BgpServer, p *apiutil.Path) error {
	resps, err := srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}})
	if err != nil {
		return err
	}
	for _, r := range resps {
		if r.Error != nil {
			return r.Error
		}
	}
	return nil
}

// routineRoutes rebuilds the learned route set whenever GoBGP reports a
// best-path change and calls Config.OnRoutes when it differs from the last
// one. New starts it; it exits when Close closes s.done, and Close waits for
// it, so OnRoutes is never called after Close returns.
func (s *Speaker) routineRoutes() {
	defer s.wg.Done()
	s.log.Debug("routine routes started")
	defer s.log.Debug("routine routes stopped")

	var (
		last  []Path
		first = true
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	s.markRoutesDirty() // report the initial (usually empty) set once
	for {
		select {
		case <-s.done:
			return
		case <-s.routesDirty:
		}
		// Let the burst finish; signals arriving meanwhile stay in the
		// one-slot channel and cost one more (cheap) rebuild at most.
		timer.Reset(coalesceDelay)
		select {
		case <-s.done:
			return
		case <-timer.C:
		}
		paths, err := s.learnedPaths()
		if err != nil {
			s.log.Warn("list learned paths", "err", err)
			continue
		}
		if !first && slices.EqualFunc(paths, last, pathEqual) {
			continue
		}
		first = false
		last = paths
		s.cfg.OnRoutes(slices.Clone(paths))
	}
}

// learnedPaths lists every path in the global RIB that was learned from
// a peer, sorted by prefix, each prefix's best path first and the others
// in GoBGP's order. Locally originated paths have no peer address and are
// skipped.
func (s *Speaker) learnedPaths() ([]Path, error) {
	var out []Path
	err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgppkt.RF_IPv4_UC},
		func(_ bgppkt.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.Withdrawal {
					continue
				}
				if lp, ok := pathFromAPI(p); ok {
					lp.Best = p.Best
					out = append(out, lp)
				}
			}
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Path) int {
		if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
			return c
		}
		switch {
		case a.Best == b.Best:
			return 0
		case a.Best:
			return -1
		}
		return 1
	})
	return out, nil
}

// pathFromAPI converts a GoBGP path; ok is false for local or unusable
// paths.
func pathFromAPI(p *apiutil.Path) (Path, bool) {
	nlri, ok := p.Nlri.(*bgppkt.IPAddrPrefix)
	if !ok || !nlri.Prefix.Addr().Is4() {
		return Path{}, false
	}
	peer := p.PeerAddress
	if !peer.IsValid() || peer.IsUnspecified() {
		return Path{}, false // originated by us
	}
	out := Path{Prefix: nlri.Prefix, Peer: peer.Unmap(), Origin: "Incomplete"}
	for _, a := range p.Attrs {
		switch v := a.(type) {
		case *bgppkt.PathAttributeNextHop:
			out.NextHop = v.Value.Unmap()
		case *bgppkt.PathAttributeMpReachNLRI:
			if !out.NextHop.IsValid() && v.Nexthop.IsValid() {
				out.NextHop = v.Nexthop.Unmap()
			}
		case *bgppkt.PathAttributeAsPath:
			for _, seg := range v.Value {
				out.ASPath = append(out.ASPath, seg.GetAS()...)
			}
		case *bgppkt.PathAttributeOrigin:
			out.Origin = originName(v.Value)
		case *bgppkt.PathAttributeOriginatorId:
			out.Originator = v.Value.Unmap()
		}
	}
	if !out.NextHop.IsValid() {
		return Path{}, false
	}
	return out, true
}

// originName follows BIRD's spelling of the ORIGIN attribute (RFC 4271 §5.1.1).
func originName(o uint8) string {
	switch o {
	case 0:
		return "IGP"
	case 1:
		return "EGP"
	}
	return "Incomplete"
}

func pathEqual(a, b Path) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && a.Peer == b.Peer && a.Originator == b.Originator &&
		a.Origin == b.Origin && slices.Equal(a.ASPath, b.ASPath) && a.Best == b.Best
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	keys := make([]netip.Prefix, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, comparePrefix)
	return keys
}
