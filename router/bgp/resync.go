package bgp

import (
	"context"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// Why a session that comes up is sent our table twice.
//
// GoBGP (v4.8.0) brings a session up in two steps on the peer's FSM
// goroutine: under its server lock it sends the peer every best path it has
// (and already reports the session up), and only after releasing the lock
// does it set the FSM state that decides propagation to Established. A path
// added in between (our Advertise, or an UPDATE from another peer that a
// route reflector passes on) is propagated to Established peers only, so
// this peer never gets it: the route is missing on that peer until the
// prefix changes again. A route test in CI timed out on it once; with a
// sleep put between the two steps, every Advertise made in the gap was lost.
//
// So every time a session comes up, routineResync waits until GoBGP reports
// it Established and then asks for a soft reset out, which sends the peer
// every best path again. A path already there is replaced by an identical
// one, which changes nothing on the peer. What this cannot repair is a
// withdrawal made in the same gap: the peer keeps that stale path until the
// prefix is announced again or the session restarts. Section 5.1 of
// docs/calico-conventions.md lists both among GoBGP's known faults.

// resyncRetry is how soon routineResync looks again at a session whose up
// event has arrived but which GoBGP does not report Established yet. The gap
// is one function return on GoBGP's side, so a few milliseconds is ample;
// the delay doubles up to resyncRetryMax while the answer stays the same (a
// session that went down again, until its down event arrives). After
// resyncGiveUp such tries it waits for the next up event: GoBGP sends no
// event when a peer is deleted, so an up event of a session SetPeers has
// just replaced can stay in the observer without a down event after it.
const (
	resyncRetry    = 5 * time.Millisecond
	resyncRetryMax = time.Second
	resyncGiveUp   = 20 // about 15 s in all
)

// routineResync sends every session that comes up our table once more,
// after GoBGP marks it Established. New starts it and Close stops it and
// waits for it.
func (s *Speaker) routineResync() {
	defer s.wg.Done()
	var (
		// done is the up event (the observer's since) each session was
		// resynced for; an entry goes when its session is no longer up.
		done  = make(map[netip.Addr]time.Time)
		delay = resyncRetry
		tries = 0
		retry = time.NewTimer(time.Hour)
	)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-s.peerUp:
			delay, tries = resyncRetry, 0
		case <-retry.C:
			delay, tries = min(2*delay, resyncRetryMax), tries+1
		}
		retry.Stop()
		if s.resyncNewSessions(done) && tries < resyncGiveUp {
			retry.Reset(delay)
		}
	}
}

// resyncNewSessions soft-resets out every session the observer saw come up
// since its last resync (recorded in done). It reports whether one of them
// is not Established in GoBGP yet and must be looked at again.
func (s *Speaker) resyncNewSessions(done map[netip.Addr]time.Time) (again bool) {
	up := s.obs.upSince()
	for addr := range done {
		if _, ok := up[addr]; !ok {
			delete(done, addr)
		}
	}
	var want []netip.Addr
	for addr, since := range up {
		if done[addr] != since {
			want = append(want, addr)
		}
	}
	if len(want) == 0 {
		return false
	}
	established, err := s.establishedInGoBGP()
	if err != nil {
		s.log.Warn("resync: list peers", "err", err)
		return true
	}
	for _, addr := range want {
		if !established[addr] {
			again = true // the gap described above, or already down again
			continue
		}
		err := s.srv.ResetPeer(context.Background(), &api.ResetPeerRequest{
			Address:   addr.String(),
			Soft:      true,
			Direction: api.ResetPeerRequest_DIRECTION_OUT,
		})
		if err != nil {
			s.log.Warn("resync: soft reset out", "peer", addr, "err", err)
			again = true
			continue
		}
		done[addr] = up[addr]
		s.log.Debug("resynced session", "peer", addr)
	}
	return again
}

// establishedInGoBGP lists the peers GoBGP itself reports Established (its
// FSM's state, the one that decides whether updates are sent).
func (s *Speaker) establishedInGoBGP() (map[netip.Addr]bool, error) {
	out := make(map[netip.Addr]bool)
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err == nil && p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED {
			out[addr.Unmap()] = true
		}
	})
	return out, err
}
