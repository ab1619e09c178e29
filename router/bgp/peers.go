package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// SetPeers makes the speaker's peers exactly peers: new addresses are added,
// missing ones deleted (GoBGP sends them Cease), and peers whose settings
// changed are deleted and added again. The address is the key. Calling it
// again with the same set does nothing. An invalid peer (or the second
// entry of an address listed twice), and a peer that GoBGP refuses, is
// left out and reported in the joined error; the others are still
// applied, so one bad BGPPeer costs its own session, not the node's.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	var errs []error
	want := make(map[netip.Addr]Peer, len(peers))
	for _, p := range peers {
		if err := s.validatePeer(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := want[p.Address]; dup {
			errs = append(errs, fmt.Errorf("bgp: set peers: peer %v listed twice", p.Address))
			continue
		}
		want[p.Address] = p
	}

	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.closed {
		return ErrClosed
	}

	for _, addr := range sortedKeys(s.peers) {
		if p, ok := want[addr]; ok && p == s.peers[addr] {
			continue
		}
		err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()})
		if err != nil {
			// GoBGP has no such peer any more; ours is gone either way.
			errs = append(errs, fmt.Errorf("bgp: delete peer %v: %w", addr, err))
		}
		s.obs.remove(addr)
		delete(s.peers, addr)
	}
	for _, addr := range sortedKeys(want) {
		if _, ok := s.peers[addr]; ok {
			continue
		}
		p := want[addr]
		s.obs.add(addr, s.reasonInput(p), p.Type, p.Passive, time.Now())
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			s.obs.remove(addr)
			errs = append(errs, fmt.Errorf("bgp: add peer %v AS %d: %w", addr, p.ASN, err))
			continue
		}
		s.peers[addr] = p
	}
	return errors.Join(errs...)
}

func (s *Speaker) validatePeer(p Peer) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("bgp: peer %v: %s", p.Address, fmt.Sprintf(format, a...))
	}
	switch {
	case !p.Address.Is4() || p.Address.IsUnspecified():
		return bad("Address: need an IPv4 address")
	case p.ASN == 0:
		return bad("ASN is required")
	case p.Port < 0 || p.Port > 65535:
		return bad("Port %d out of range", p.Port)
	case p.HoldTime%time.Second != 0 || p.KeepaliveTime%time.Second != 0:
		return bad("HoldTime %v and KeepaliveTime %v must be whole seconds", p.HoldTime, p.KeepaliveTime)
	case p.HoldTime != 0 && p.HoldTime < 3*time.Second:
		return bad("HoldTime %v: must be 0 or at least 3s (RFC 4271 §4.2)", p.HoldTime)
	case p.KeepaliveTime < 0:
		return bad("KeepaliveTime %v is negative", p.KeepaliveTime)
	case p.RRClient && !s.isRouteReflector():
		return bad("RRClient needs Config.RouteReflectorClusterID")
	case p.RRClient && p.ASN != s.localASN(p):
		return bad("RRClient needs an iBGP peer (AS %d, local AS %d)", p.ASN, s.localASN(p))
	case p.Address == s.cfg.RouterID:
		return bad("that is our own router ID")
	}
	return nil
}

func (s *Speaker) isRouteReflector() bool {
	c := s.cfg.RouteReflectorClusterID
	return c.IsValid() && !c.IsUnspecified()
}

func (s *Speaker) localASN(p Peer) uint32 {
	if p.LocalASN != 0 {
		return p.LocalASN
	}
	return s.cfg.ASN
}

func (s *Speaker) reasonInput(p Peer) reasonInput {
	return reasonInput{HasPassword: p.Password != "", PeerASN: p.ASN, LocalASN: s.localASN(p)}
}

// maxPaths is Config.MaxPathsPerPeer or its default.
func (s *Speaker) maxPaths() int {
	if s.cfg.MaxPathsPerPeer > 0 {
		return s.cfg.MaxPathsPerPeer
	}
	return DefaultMaxPathsPerPeer
}

// apiPeer translates a Peer into GoBGP's request.
func (s *Speaker) apiPeer(p Peer) *api.Peer {
	port := uint32(p.Port)
	if port == 0 {
		port = 179
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN, // 0: GoBGP uses the global AS
			AuthPassword:    p.Password,
			Description:     p.Type,
		},
		Transport: &api.Transport{
			RemotePort: port,
			// Dial from the node address (Calico's sourceAddress UseNodeIP):
			// peers match incoming sessions by source address.
			LocalAddress: s.cfg.RouterID.String(),
			PassiveMode:  p.Passive,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(connectRetry / time.Second),
			HoldTime:          uint64(p.HoldTime / time.Second),
			KeepaliveInterval: uint64(p.KeepaliveTime / time.Second),
		}},
		AfiSafis: []*api.AfiSafi{{
			Config: &api.AfiSafiConfig{Family: v4Unicast, Enabled: true},
			PrefixLimits: &api.PrefixLimit{Family: v4Unicast, MaxPrefixes: uint32(s.maxPaths()),
				ShutdownThresholdPct: 80}, // a warning in the log first
		}},
	}
	if p.RRClient {
		ap.RouteReflector = &api.RouteReflector{
			RouteReflectorClient:    true,
			RouteReflectorClusterId: s.cfg.RouteReflectorClusterID.String(),
		}
	}
	return ap
}

// Peers reports every configured peer's session state, sorted by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	select {
	case <-s.done:
		return nil, ErrClosed
	default:
	}
	var list []*api.Peer
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) { list = append(list, p) })
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	out := make([]PeerStatus, 0, len(list))
	for _, p := range list {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		addr = addr.Unmap()
		o, ok := s.obs.get(addr)
		if !ok {
			continue // being added or deleted right now
		}
		st := sessionStateName(p.GetState().GetSessionState())
		ps := PeerStatus{Address: addr, Type: o.typ, State: st}
		switch {
		case st == "Established":
			ps.Info = "Established"
			ps.Since = o.since
			if up := p.GetTimers().GetState().GetUptime(); up != nil && up.GetSeconds() > 0 {
				ps.Since = up.AsTime()
			}
		default:
			ps.Since = o.since
			ps.Info = o.reason
			if ps.Info == "" {
				ps.Info = idleInfo(st, o.passive)
			}
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// idleInfo is the Info of a peer that is not up when no failure has been
// seen yet.
func idleInfo(state string, passive bool) string {
	switch state {
	case "Connect", "Active":
		if passive {
			return "Passive (waiting for the peer to connect)"
		}
		return "Connecting"
	case "OpenSent":
		return "OPEN sent, waiting for the peer's OPEN"
	case "OpenConfirm":
		return "OPEN received, waiting for the peer's KEEPALIVE"
	}
	return state
}

func sortedKeys[V any](m map[netip.Addr]V) []netip.Addr {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, netip.Addr.Compare)
	return keys
}
