package node

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"podnet/nodeapi"
	"podnet/router/bgp"
)

// Route event log messages. `podnet lab events` looks for these in the
// daemons' logs, so they are part of the log's contract.
const (
	msgRouteAdded     = "route added"
	msgRouteWithdrawn = "route withdrawn"
	msgRouteEventsCut = "route events not logged"
)

// Route event rate limit: a burst of routeEventBurst lines, then
// routeEventBurst per routeEventRefill. A flapping peer with thousands of
// prefixes must not fill the disk; the counts of what was left out are
// logged instead.
const (
	routeEventBurst  = 100
	routeEventRefill = time.Minute
)

// routeEvents turns successive learned path sets into one Info line per
// added or withdrawn prefix. Its state belongs to the speaker goroutine
// that calls OnRoutes (calls are never concurrent), so it has no lock.
type routeEvents struct {
	log    *slog.Logger
	last   map[netip.Prefix]bgp.Path
	tokens float64
	at     time.Time
}

// logRouteEvents wraps an OnRoutes callback so that each call first logs
// the difference from the previous one. One wrapper per speaker: a new
// speaker starts with nothing learned, so its first set logs as added.
func (n *Node) logRouteEvents(next func([]bgp.Path)) func([]bgp.Path) {
	ev := &routeEvents{log: n.log, last: map[netip.Prefix]bgp.Path{}, tokens: routeEventBurst}
	return func(paths []bgp.Path) {
		ev.update(paths, time.Now())
		next(paths)
	}
}

// update logs the changes from the last set to paths. A prefix whose next
// hop or peer changed logs as withdrawn (old) and added (new).
func (ev *routeEvents) update(paths []bgp.Path, now time.Time) {
	cur := make(map[netip.Prefix]bgp.Path, len(paths))
	for _, p := range paths {
		if p.Best {
			cur[p.Prefix] = p
		}
	}
	var added, withdrawn []bgp.Path
	for pfx, old := range ev.last {
		if p, ok := cur[pfx]; !ok || p.Peer != old.Peer || p.NextHop != old.NextHop {
			withdrawn = append(withdrawn, old)
		}
	}
	for pfx, p := range cur {
		if old, ok := ev.last[pfx]; !ok || p.Peer != old.Peer || p.NextHop != old.NextHop {
			added = append(added, p)
		}
	}
	ev.last = cur

	ev.tokens += now.Sub(ev.at).Seconds() / routeEventRefill.Seconds() * routeEventBurst
	ev.at = now
	if ev.tokens > routeEventBurst {
		ev.tokens = routeEventBurst
	}
	var cutAdded, cutWithdrawn int
	emit := func(msg string, p bgp.Path, cut *int) {
		if ev.tokens < 1 {
			*cut++
			return
		}
		ev.tokens--
		ev.log.LogAttrs(context.Background(), slog.LevelInfo, msg,
			slog.String("prefix", p.Prefix.String()), slog.String("peer", p.Peer.String()),
			slog.String("nextHop", p.NextHop.String()))
	}
	sortPaths(withdrawn)
	sortPaths(added)
	for _, p := range withdrawn {
		emit(msgRouteWithdrawn, p, &cutWithdrawn)
	}
	for _, p := range added {
		emit(msgRouteAdded, p, &cutAdded)
	}
	if cutAdded+cutWithdrawn > 0 {
		ev.log.Info(msgRouteEventsCut, "added", cutAdded, "withdrawn", cutWithdrawn,
			"reason", "rate limit (too many route changes)")
	}
}

func sortPaths(ps []bgp.Path) {
	slices.SortFunc(ps, func(a, b bgp.Path) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
}

// BGPPeerRoutes reports, per BGP peer, the prefixes received from it and
// advertised to it, for `podnet node status --routes`.
func (n *Node) BGPPeerRoutes(ctx context.Context) ([]bgp.PeerRoutes, error) {
	sp := n.speaker.Load()
	if sp == nil {
		return nil, errors.New("the BGP speaker is not running (no underlay address?)")
	}
	return sp.PeerRoutes(ctx)
}

// registerBGPRoutes serves nodeapi.PathBGPRoutes.
func (n *Node) registerBGPRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+nodeapi.PathBGPRoutes, func(w http.ResponseWriter, r *http.Request) {
		routes, err := n.BGPPeerRoutes(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, routes)
	})
}
