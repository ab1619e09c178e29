package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"podnet/api"
	"podnet/internal/packet"
	"podnet/routing"
)

// The view cache: what the datastore goroutine read last, kept in the
// state dir (view.json). A daemon that starts while etcd does not answer
// routes by it: its BGP sessions (the mesh and the BGPPeers it knew),
// its blocks, the pools (encapsulation, NAT outgoing, MTU). It is the
// last known state, not the truth: as soon as etcd answers, the node
// registers and a fresh read replaces it.

// dsInputs is what reconcile reads from the datastore, and what the
// view cache keeps.
type dsInputs struct {
	Saved   time.Time               `json:"saved"`
	Pools   []*api.IPPool           `json:"pools"`
	Nodes   []*api.Node             `json:"nodes"`
	Peers   []*api.BGPPeer          `json:"bgpPeers"`
	Configs []*api.BGPConfiguration `json:"bgpConfigurations"`
	// Blocks are this node's affine blocks; Borrowed the addresses it
	// took from other nodes' blocks; Lent the addresses other nodes took
	// from blocks not their own, with the name of the node that holds
	// each; Owners the other nodes' blocks, with the name of each one's
	// node.
	Blocks   []netip.Prefix          `json:"blocks"`
	Borrowed []netip.Addr            `json:"borrowed"`
	Lent     map[netip.Addr]string   `json:"lent,omitempty"`
	Owners   map[netip.Prefix]string `json:"owners,omitempty"`
}

func (n *Node) viewCachePath() string { return filepath.Join(n.cfg.StateDir, "view.json") }

// viewCache writes the view cache when what was read changed. The
// datastore goroutine owns it.
type viewCache struct {
	path string
	last []byte // the last inputs written, Saved left out
}

func (c *viewCache) save(n *Node, in dsInputs) {
	in.Saved = time.Time{}
	b, err := json.Marshal(in)
	if err != nil || bytes.Equal(b, c.last) {
		return
	}
	in.Saved = time.Now().UTC()
	out, err := json.MarshalIndent(in, "", "  ")
	if err == nil {
		err = writeFileAtomic(c.path, append(out, '\n'))
	}
	if err != nil {
		n.log.Warn("save the view cache", "err", err)
		return
	}
	c.last = b
}

// loadViewCache reads the view cache; nil when there is none.
func (n *Node) loadViewCache() (*dsInputs, error) {
	b, err := os.ReadFile(n.viewCachePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the view cache: %w", err)
	}
	var in dsInputs
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("parse the view cache %s: %w", n.viewCachePath(), err)
	}
	return &in, nil
}

// useCachedView takes what the start needs from the view cache when
// etcd did not answer: the pods' MTU (from the pools) and the VXLAN MAC
// the Node resource sets. Run calls it before the switch starts.
func (n *Node) useCachedView(s *state, in *dsInputs) {
	s.view.overhead, s.overheadKnown = routing.EncapOverhead(in.Pools), true
	self, _ := routing.SplitNodes(in.Nodes, n.cfg.Name)
	if self != nil && self.Spec.VXLANTunnelMACAddr != "" {
		if m, err := packet.ParseMAC(self.Spec.VXLANTunnelMACAddr); err == nil {
			n.cfg.VTEPMAC = m
		}
	}
}

// addCachedTunnelAddrs puts the tunnel addresses the cached Node names
// on podnet0 (a new podnet0 has none): the node's own traffic to remote
// pods leaves with them, as before the restart.
func (n *Node) addCachedTunnelAddrs(in dsInputs) {
	self, _ := routing.SplitNodes(in.Nodes, n.cfg.Name)
	if self == nil {
		return
	}
	for _, k := range tunnelKinds {
		if a := *k.field(self); a != "" {
			n.addHostAddr(a)
		}
	}
}
