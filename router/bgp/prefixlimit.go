package bgp

import (
	"context"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// DefaultPrefixLimitRetry is how long a session cut for sending more than
// MaxPathsPerPeer paths stays down before it is tried again.
const DefaultPrefixLimitRetry = 30 * time.Second

// routinePrefixLimits gives sessions GoBGP shut for exceeding their prefix
// limit another chance. GoBGP leaves such a peer administratively down
// (its prefix-count state) and never connects to it again by itself, so a
// ToR that leaked a full table for a moment would be cut off for good.
// Every PrefixLimitRetry this enables those peers again; one that still
// sends too much is cut again. New starts it; it exits when Close closes
// s.done.
func (s *Speaker) routinePrefixLimits() {
	defer s.wg.Done()
	every := s.cfg.PrefixLimitRetry
	if every <= 0 {
		every = DefaultPrefixLimitRetry
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		var cut []string
		err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.State != nil && p.Conf != nil && p.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT {
				cut = append(cut, p.Conf.NeighborAddress)
			}
		})
		if err != nil {
			continue
		}
		for _, addr := range cut {
			s.opMu.Lock()
			if !s.closed {
				if err := s.srv.EnablePeer(context.Background(), &api.EnablePeerRequest{Address: addr}); err != nil {
					s.log.Debug("enable peer after its prefix limit", "peer", addr, "err", err)
				} else {
					s.log.Info("peer cut for exceeding its prefix limit: trying the session again", "peer", addr)
				}
			}
			s.opMu.Unlock()
		}
	}
}
