package node

import "podnet/metrics"

// startMetrics serves the node's counters on cfg.MetricsListen, if set.
// Run calls it once the control loop runs (the IPAM numbers come from
// it); the returned func stops the server.
func (n *Node) startMetrics() (stop func(), err error) {
	if n.cfg.MetricsListen == "" {
		return func() {}, nil
	}
	src := metrics.Source{
		Ports: n.sw.Stats,
		NAT:   n.nat.Stats,
		BGP:   n.BGPPeers,
		IPAM:  n.ipamUsage,
	}
	srv, err := metrics.Listen(n.cfg.MetricsListen, src, n.log.With("component", "metrics"))
	if err != nil {
		return nil, err
	}
	n.log.Info("serving metrics", "address", srv.Addr().String(), "path", metrics.Path)
	return func() { srv.Close() }, nil
}

// ipamUsage reads the node's blocks from the last datastore view and its
// pods' addresses (borrowed ones too) from the control loop: no datastore
// I/O on a scrape.
func (n *Node) ipamUsage() (metrics.IPAM, bool) {
	var u metrics.IPAM
	var known bool
	err := n.do(func(s *state) error {
		known = s.haveView
		u.Blocks = len(s.view.blocks)
		for _, b := range s.view.blocks {
			u.BlockAddresses += 1 << (b.Addr().BitLen() - b.Bits())
		}
		for _, p := range s.pods {
			if p.rec.IP.IsValid() && p.phase != podDeleting {
				u.InUse++
			}
		}
		return nil
	})
	return u, err == nil && known
}
