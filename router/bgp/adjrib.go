package bgp

import (
	"context"
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// PeerRoutes is what one peer sent us and what we send it, for
// `podnet node status --routes`.
type PeerRoutes struct {
	Peer netip.Addr
	// Received is the peer's adj-RIB-in: every IPv4 prefix it announced to
	// us and has not withdrawn, whether or not it won best path. Sorted.
	Received []netip.Prefix
	// Advertised is the adj-RIB-out: the prefixes we announce to the peer
	// now (our own blocks, and for a route reflector what it reflects).
	// Sorted.
	Advertised []netip.Prefix
}

// PeerRoutes reports the received and advertised prefixes of every
// configured peer, sorted by peer address. A peer that is not Established
// has empty lists.
//
// It is read-only: GoBGP builds both tables on its own loop and hands back
// copies, so this may be called at any time from any goroutine.
func (s *Speaker) PeerRoutes(_ context.Context) ([]PeerRoutes, error) {
	s.opMu.Lock()
	if s.closed {
		s.opMu.Unlock()
		return nil, ErrClosed
	}
	addrs := sortedKeys(s.peers)
	s.opMu.Unlock()

	out := make([]PeerRoutes, 0, len(addrs))
	for _, a := range addrs {
		in, err := s.adjRIB(api.TableType_TABLE_TYPE_ADJ_IN, a)
		if err != nil {
			if !s.hasPeer(a) {
				continue // removed by SetPeers meanwhile
			}
			return nil, fmt.Errorf("bgp: list routes received from %v: %w", a, err)
		}
		adv, err := s.adjRIB(api.TableType_TABLE_TYPE_ADJ_OUT, a)
		if err != nil {
			if !s.hasPeer(a) {
				continue
			}
			return nil, fmt.Errorf("bgp: list routes advertised to %v: %w", a, err)
		}
		out = append(out, PeerRoutes{Peer: a, Received: in, Advertised: adv})
	}
	return out, nil
}

func (s *Speaker) hasPeer(a netip.Addr) bool {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	_, ok := s.peers[a]
	return ok && !s.closed
}

// adjRIB lists the IPv4 unicast prefixes of one peer's adj-RIB-in or -out.
func (s *Speaker) adjRIB(tt api.TableType, peer netip.Addr) ([]netip.Prefix, error) {
	seen := make(map[netip.Prefix]struct{})
	err := s.srv.ListPath(apiutil.ListPathRequest{TableType: tt, Name: peer.String(), Family: bgppkt.RF_IPv4_UC},
		func(_ bgppkt.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.Withdrawal {
					continue
				}
				if nlri, ok := p.Nlri.(*bgppkt.IPAddrPrefix); ok && nlri.Prefix.Addr().Is4() {
					seen[nlri.Prefix.Masked()] = struct{}{}
				}
			}
		})
	if err != nil {
		return nil, err
	}
	return sortedPrefixes(seen), nil
}
