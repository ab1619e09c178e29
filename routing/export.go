package routing

import (
	"net/netip"

	"podnet/api"
)

// Exported is adverts without the prefixes that lie in a pool with
// disableBGPExport: those go to no peer, like Calico's export filter
// that rejects a pool's CIDR and everything inside it (its blocks and
// the /32s borrowed from them). The order of adverts is kept.
func Exported(adverts []netip.Prefix, pools []*api.IPPool) []netip.Prefix {
	var quiet []netip.Prefix
	for _, p := range pools {
		if !p.Spec.DisableBGPExport {
			continue
		}
		if c, err := p.Prefix(); err == nil {
			quiet = append(quiet, c.Masked())
		}
	}
	out := make([]netip.Prefix, 0, len(adverts))
next:
	for _, a := range adverts {
		for _, q := range quiet {
			if q.Bits() <= a.Bits() && q.Contains(a.Addr()) {
				continue next
			}
		}
		out = append(out, a)
	}
	return out
}

// ExportFilter is what a node's speaker may pass on to its peers, as
// Calico's export filter to BGP peers: the prefixes of the IP pools and
// everything inside them, but for pools with disableBGPExport. Nothing
// else a peer announced leaves the node again.
func ExportFilter(pools []*api.IPPool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range pools {
		if p.Spec.DisableBGPExport {
			continue
		}
		if c, err := p.Prefix(); err == nil {
			out = append(out, c.Masked())
		}
	}
	return out
}
