package routing

import (
	"net/netip"
	"strings"

	"podnet/api"
)

// BGPSettings is what the cluster's BGPConfigurations say: the global
// one (default), its defaults set also when there is none, and the
// listen ports that node-specific ones (node.<name>) give their nodes.
type BGPSettings struct {
	Global *api.BGPConfiguration
	// nodePorts are the listen ports of nodes with their own
	// BGPConfiguration setting one.
	nodePorts map[string]int
}

// NewBGPSettings picks the global BGPConfiguration and every node's
// listen port out of cfgs.
func NewBGPSettings(cfgs []*api.BGPConfiguration) BGPSettings {
	s := BGPSettings{Global: api.NewBGPConfiguration(api.BGPConfigurationGlobal), nodePorts: map[string]int{}}
	for _, c := range cfgs {
		name, perNode := strings.CutPrefix(c.Name, api.BGPConfigurationNodePrefix)
		switch {
		case c.Name == api.BGPConfigurationGlobal:
			s.Global = c
		case perNode && c.Spec.ListenPort != 0:
			s.nodePorts[name] = c.Spec.ListenPort
		}
	}
	s.Global.SetDefaults()
	return s
}

// ListenPort is the port node's BGP speaker listens on: its own
// BGPConfiguration's, else the global one's (as Calico's node-specific
// override works). Peers of the node dial this port.
func (s BGPSettings) ListenPort(node string) int {
	if p, ok := s.nodePorts[node]; ok {
		return p
	}
	return s.Global.Spec.ListenPort
}

// ListenAddrs are the addresses a speaker on the node at nodeAddr
// listens on: with bindMode NodeIP that address only, else all (nil).
func (s BGPSettings) ListenAddrs(nodeAddr netip.Addr) []netip.Addr {
	if s.Global.Spec.BindMode == api.BindModeNodeIP && nodeAddr.IsValid() {
		return []netip.Addr{nodeAddr}
	}
	return nil
}
