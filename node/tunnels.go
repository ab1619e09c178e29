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
	// closeGen counts the closes scheduled per encapsulation; a scheduled
	// close runs only if no later one (or a reopening) replaced it.
	closeGen [router.EncapVXLAN + 1]int
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
			s.tunnels.closeGen[e]++ // a close scheduled earlier no longer applies
			n.log.Info("tunnel opened", "encap", e)
		case t.want:
			s.tunnels.closeGen[e]++
		case s.tunnels.open[e]:
			s.tunnels.closeGen[e]++
			gen := s.tunnels.closeGen[e]
			grace := n.cfg.TunnelGrace
			if grace <= 0 {
				grace = defaultTunnelGrace
			}
			time.AfterFunc(grace, func() {
				n.do(func(s *state) error {
					if s.tunnels.open[e] && s.tunnels.closeGen[e] == gen {
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
	s.tunnels.open[e] = false
	n.log.Info("tunnel closed: no pool uses it", "encap", e)
}
