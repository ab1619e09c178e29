package node

import (
	"time"

	"podnet/router"
	"podnet/routing"
)

// defaultTunnelGrace is how long a tunnel no pool uses stays open
// (Config.TunnelGrace): other nodes learn of a pool's new mode a moment
// after this one and go on sending the old encapsulation meanwhile.
const defaultTunnelGrace = 30 * time.Second

// tunnelState is which tunnels the node has open; the loop owns it.
type tunnelState struct {
	open [router.EncapVXLAN + 1]bool
	// closing: a close is scheduled. closeGen counts the closes scheduled
	// per encapsulation; a scheduled close runs only if it is still the
	// latest and no pool took the tunnel up again meanwhile.
	closing  [router.EncapVXLAN + 1]bool
	closeGen [router.EncapVXLAN + 1]int
}

// wanted records that a pool uses e: a close scheduled for it no longer
// applies.
func (t *tunnelState) wanted(e router.Encap) {
	if t.closing[e] {
		t.closing[e] = false
		t.closeGen[e]++
	}
}

// unused records that no pool uses e's open tunnel, and reports whether a
// close is to be scheduled now, with its generation. A close already
// scheduled keeps its time: the reconciles that keep finding the tunnel
// unused must not put it off.
func (t *tunnelState) unused(e router.Encap) (schedule bool, gen int) {
	if t.closing[e] {
		return false, 0
	}
	t.closing[e] = true
	t.closeGen[e]++
	return true, t.closeGen[e]
}

// due says whether the close of generation gen scheduled for e still
// applies.
func (t *tunnelState) due(e router.Encap, gen int) bool {
	return t.open[e] && t.closing[e] && t.closeGen[e] == gen
}

// syncTunnels opens the tunnel of each encapsulation a pool uses
// (disabled pools too: their pods still route) and closes, after
// Config.TunnelGrace, one that no pool uses any more. A socket nobody needs is
// one more way into the node — a VXLAN socket takes datagrams from any
// local user — and holds its buffers. It runs on the loop.
func (n *Node) syncTunnels(s *state) {
	ipip, vxlan := routing.EncapsInUse(s.view.pools)
	for _, t := range []struct {
		e    router.Encap
		want bool
		open func() error
	}{
		{router.EncapIPIP, ipip, n.openIPIP},
		{router.EncapVXLAN, vxlan, n.openVXLAN},
	} {
		e := t.e
		switch {
		case t.want && !s.tunnels.open[e]:
			if err := t.open(); err != nil {
				n.log.Warn("tunnel not opened; its routes drop until it opens", "encap", e, "err", err)
				continue
			}
			s.tunnels.open[e] = true
			s.tunnels.wanted(e)
			n.log.Info("tunnel opened", "encap", e)
		case t.want:
			s.tunnels.wanted(e)
		case s.tunnels.open[e]:
			schedule, gen := s.tunnels.unused(e)
			if !schedule {
				continue
			}
			grace := n.cfg.TunnelGrace
			if grace <= 0 {
				grace = defaultTunnelGrace
			}
			time.AfterFunc(grace, func() {
				n.do(func(s *state) error {
					if s.tunnels.due(e, gen) {
						n.closeTunnel(s, e)
					}
					return nil
				})
			})
		}
	}
}

// closeTunnel detaches encapsulation e's tunnel and closes its sockets.
func (n *Node) closeTunnel(s *state, e router.Encap) {
	if err := n.sw.DetachTunnel(e); err != nil {
		n.log.Warn("tunnel close", "encap", e, "err", err)
	}
	s.tunnels.open[e], s.tunnels.closing[e] = false, false
	n.log.Info("tunnel closed: no pool uses it", "encap", e)
}
