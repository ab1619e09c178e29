package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
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
func (s *Speaker) Advertise(ctx context.Context, prefixes []netip.Prefix, nextHop netip.Addr) error {
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
		err := s.srv.DeletePath(ctx, &api.DeletePathRequest{
			TableType: api.TableType_GLOBAL,
			Family:    v4Unicast,
			Path:      originPath(p, s.adverts[p]),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %v: %w", p, err))
			continue
		}
		delete(s.adverts, p)
	}
	for _, p := range sortedPrefixes(want) {
		if nh, ok := s.adverts[p]; ok && nh == want[p] {
			continue
		}
		// Announcing a prefix we already originate replaces our old path
		// (implicit withdraw), so a next-hop change needs no DeletePath.
		_, err := s.srv.AddPath(ctx, &api.AddPathRequest{
			TableType: api.TableType_GLOBAL,
			Path:      originPath(p, want[p]),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %v via %v: %w", p, want[p], err))
			continue
		}
		s.adverts[p] = want[p]
	}
	return errors.Join(errs...)
}

// originPath builds a locally originated IPv4 unicast path (ORIGIN IGP, as
// BIRD's static blackhole routes in Calico).
func originPath(p netip.Prefix, nextHop netip.Addr) *api.Path {
	// anypb.New only fails on a message that cannot be marshalled; these
	// are plain generated messages.
	nlri, _ := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0})
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: nextHop.String()})
	return &api.Path{Family: v4Unicast, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}
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
		paths, err := s.learnedPaths(context.Background())
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

// learnedPaths lists the best path of every prefix in the global RIB that
// was learned from a peer, sorted by prefix. Locally originated paths have
// no neighbor address and are skipped.
func (s *Speaker) learnedPaths(ctx context.Context) ([]Path, error) {
	var out []Path
	err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: v4Unicast},
		func(d *api.Destination) {
			for _, p := range d.GetPaths() {
				if !p.GetBest() || p.GetIsWithdraw() {
					continue
				}
				if lp, ok := pathFromAPI(d.GetPrefix(), p); ok {
					out = append(out, lp)
				}
			}
		})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Path) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out, nil
}

// pathFromAPI converts a GoBGP path; ok is false for local or unparsable
// paths.
func pathFromAPI(prefix string, p *api.Path) (Path, bool) {
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil || !pfx.Addr().Is4() {
		return Path{}, false
	}
	peer, err := netip.ParseAddr(p.GetNeighborIp())
	if err != nil || peer.IsUnspecified() {
		return Path{}, false // originated by us: GoBGP prints its nil source address as "<nil>"
	}
	out := Path{Prefix: pfx, Peer: peer.Unmap(), Origin: "Incomplete"}
	for _, a := range p.GetPattrs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		switch v := m.(type) {
		case *api.NextHopAttribute:
			if nh, err := netip.ParseAddr(v.GetNextHop()); err == nil {
				out.NextHop = nh.Unmap()
			}
		case *api.MpReachNLRIAttribute:
			if nhs := v.GetNextHops(); len(nhs) > 0 && !out.NextHop.IsValid() {
				if nh, err := netip.ParseAddr(nhs[0]); err == nil {
					out.NextHop = nh.Unmap()
				}
			}
		case *api.AsPathAttribute:
			for _, seg := range v.GetSegments() {
				out.ASPath = append(out.ASPath, seg.GetNumbers()...)
			}
		case *api.OriginAttribute:
			out.Origin = originName(v.GetOrigin())
		}
	}
	if !out.NextHop.IsValid() {
		return Path{}, false
	}
	return out, true
}

// originName follows BIRD's spelling of the ORIGIN attribute (RFC 4271 §5.1.1).
func originName(o uint32) string {
	switch o {
	case 0:
		return "IGP"
	case 1:
		return "EGP"
	}
	return "Incomplete"
}

func pathEqual(a, b Path) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && a.Peer == b.Peer &&
		a.Origin == b.Origin && slices.Equal(a.ASPath, b.ASPath)
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
