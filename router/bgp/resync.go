package bgp

import (
	"context"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
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
// one, which changes nothing on the peer.
//
// A withdrawal of ours made in the same gap is lost the same way, and a soft
// reset cannot send it: the path is no longer in the RIB. So Advertise
// notes when it withdrew each prefix, and the resync announces and withdraws
// again every prefix withdrawn after the session's up event that is still
// not advertised. The up event's time is taken inside GoBGP's session-up
// step, after the table was sent, and Advertise and the resync hold opMu,
// so a withdrawal before that time was not in the table and one after the
// resync reached the peer: only those in between can be missing. For the
// moment between the two, the other peers see the prefix come and go once
// more. A withdrawal a route reflector passes on from another peer in the
// gap is not repaired; docs/calico-conventions.md says so.

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
// since its last resync (recorded in done), and repairs the withdrawals
// such a session may have missed. It reports whether one of them is not
// Established in GoBGP yet and must be looked at again.
func (s *Speaker) resyncNewSessions(done map[netip.Addr]time.Time) (again bool) {
	s.opMu.Lock() // no Advertise between the check and the repair
	defer s.opMu.Unlock()
	if s.closed {
		return false
	}
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
	// Peers reports GoBGP's own FSM state, the one that decides whether
	// updates are sent.
	peers, err := s.Peers(context.Background())
	if err != nil {
		s.log.Warn("resync: list peers", "err", err)
		return true
	}
	established := make(map[netip.Addr]bool, len(peers))
	for _, p := range peers {
		established[p.Address] = p.State == "Established"
	}
	var earliest time.Time // the earliest up event resynced in this pass
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
		s.resyncs.Add(1)
		if earliest.IsZero() || up[addr].Before(earliest) {
			earliest = up[addr]
		}
		s.log.Debug("resynced session", "peer", addr)
	}
	if !earliest.IsZero() {
		s.rewithdraw(earliest)
	}
	return again
}

// withdrawal is when Advertise withdrew a prefix, and the next hop it had.
type withdrawal struct {
	nextHop netip.Addr
	at      time.Time
}

// withdrawnKeep is how long a withdrawal is remembered for rewithdraw: far
// longer than a session takes from its up event to its resync, which is
// milliseconds unless the resync gives up (resyncGiveUp).
const withdrawnKeep = 5 * time.Minute

// noteWithdrawn records that Advertise withdrew p (which had next hop nh)
// at now, and forgets withdrawals older than withdrawnKeep. opMu is held.
func (s *Speaker) noteWithdrawn(p netip.Prefix, nh netip.Addr, now time.Time) {
	for q, w := range s.withdrawn {
		if now.Sub(w.at) > withdrawnKeep {
			delete(s.withdrawn, q)
		}
	}
	s.withdrawn[p] = withdrawal{nextHop: nh, at: now}
}

// rewithdraw announces and withdraws again every prefix withdrawn after
// since and not advertised now, so that a session that came up at since
// gets the withdrawals it may have missed. opMu is held.
func (s *Speaker) rewithdraw(since time.Time) {
	var again []netip.Prefix
	nextHop := make(map[netip.Prefix]netip.Addr)
	for p, w := range s.withdrawn {
		if _, ok := s.adverts[p]; !ok && !w.at.Before(since) {
			again = append(again, p)
			nextHop[p] = w.nextHop
		}
	}
	slices.SortFunc(again, comparePrefix)
	for _, p := range again {
		nh := nextHop[p]
		path, err := originPath(p, nh)
		if err == nil {
			err = addPath(s.srv, path)
		}
		if err != nil {
			s.log.Warn("resync: announce again to withdraw", "prefix", p, "err", err)
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
			// It is announced now: count it as advertised, so that the
			// next Advertise withdraws it.
			s.adverts[p] = nh
			s.log.Warn("resync: withdraw again", "prefix", p, "err", err)
			continue
		}
		// This withdrawal can fall into another session's gap as well.
		s.noteWithdrawn(p, nh, time.Now())
	}
	if len(again) > 0 {
		s.log.Info("withdrew again what a session that came up may have missed", "prefixes", again)
	}
}
