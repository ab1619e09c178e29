package node

import (
	"net/netip"

	"podnet/router/bgp"
	"podnet/routing"
)

// maxRejectLogs is how many newly refused paths one publish logs one by
// one; the rest are summed up in one line, so a peer flooding bad
// prefixes cannot flood the log.
const maxRejectLogs = 10

// importPaths applies the import policy (routing.Import) to what BGP
// learned. It runs on the loop. A refused path is logged once, when it
// first appears, with the reason; s.rejected keeps the current ones.
func (n *Node) importPaths(s *state) []bgp.Path {
	im := routing.Import{
		Pools: s.view.pools, OwnBlocks: s.view.blocks, Subnet: n.underlayAddr,
		NodeAddrs: s.view.nodeAddrs, Explicit: s.view.explicitPeers, Lent: s.view.lent, Owners: s.view.owners,
	}
	for _, p := range s.pods {
		if p.rec.IP.IsValid() {
			im.PodAddrs = append(im.PodAddrs, p.rec.IP)
		}
	}
	accepted, rejected := im.Filter(s.learned)
	now := make(map[rejectKey]string, len(rejected))
	logged, fresh := 0, 0
	byReason := map[string]int{}
	for _, r := range rejected {
		k := rejectKey{r.Path.Prefix, r.Path.Peer}
		now[k] = r.Reason
		byReason[r.Reason]++
		if s.rejected[k] == r.Reason {
			continue
		}
		fresh++
		if logged < maxRejectLogs {
			logged++
			n.log.Warn("refused learned route", "prefix", r.Path.Prefix, "nextHop", r.Path.NextHop, "peer", r.Path.Peer, "reason", r.Reason)
		}
	}
	if fresh > logged {
		n.log.Warn("refused more learned routes", "count", fresh-logged, "refusedByReason", byReason)
	}
	s.rejected = now
	return accepted
}

// rejectKey names a refused path: its prefix and the peer that sent it.
type rejectKey struct {
	prefix netip.Prefix
	peer   netip.Addr
}
