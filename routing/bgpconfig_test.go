package routing

import (
	"net/netip"
	"slices"
	"testing"

	"podnet/api"
	"podnet/router/bgp"
)

func bgpConfig(name string, f func(s *api.BGPConfigurationSpec)) *api.BGPConfiguration {
	c := api.NewBGPConfiguration(name)
	f(&c.Spec)
	return c
}

func TestBGPSettingsListenPort(t *testing.T) {
	global178 := bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.ListenPort = 178 })
	w2own := bgpConfig("node.w2", func(s *api.BGPConfigurationSpec) { s.ListenPort = 1179 })
	w3noPort := bgpConfig("node.w3", func(s *api.BGPConfigurationSpec) { s.LogSeverityScreen = "Info" })
	tests := []struct {
		name string
		cfgs []*api.BGPConfiguration
		want map[string]int // node -> port
	}{
		{"no configuration: 179", nil, map[string]int{"w1": 179, "w2": 179}},
		{"global port", []*api.BGPConfiguration{global178}, map[string]int{"w1": 178, "w2": 178}},
		{"node override over the default", []*api.BGPConfiguration{w2own}, map[string]int{"w1": 179, "w2": 1179}},
		{"node override over a global port", []*api.BGPConfiguration{w2own, global178}, map[string]int{"w1": 178, "w2": 1179}},
		{"node configuration without a port", []*api.BGPConfiguration{global178, w3noPort}, map[string]int{"w3": 178}},
		// node.w2 names node w2, not a node called "node.w2".
		{"override is by node name", []*api.BGPConfiguration{w2own}, map[string]int{"node.w2": 179}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewBGPSettings(tt.cfgs)
			for nd, want := range tt.want {
				if got := s.ListenPort(nd); got != want {
					t.Errorf("ListenPort(%s) = %d, want %d", nd, got, want)
				}
			}
		})
	}
}

func TestBGPSettingsListenAddrs(t *testing.T) {
	me := addr("10.0.0.1")
	tests := []struct {
		name     string
		bindMode string
		nodeAddr netip.Addr
		want     []netip.Addr
	}{
		{"default: all addresses", "", me, nil},
		{"None: all addresses", api.BindModeNone, me, nil},
		{"NodeIP: the node address only", api.BindModeNodeIP, me, []netip.Addr{me}},
		{"NodeIP without an address yet", api.BindModeNodeIP, netip.Addr{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewBGPSettings([]*api.BGPConfiguration{bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.BindMode = tt.bindMode })})
			if got := s.ListenAddrs(tt.nodeAddr); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDesiredPeersDialListenPort: every session with another node dials
// the port that node listens on; a BGPPeer's peerIP port is its own.
func TestDesiredPeersDialListenPort(t *testing.T) {
	w1 := node("w1", "10.0.0.1/24", "rack", "r1")
	w2 := node("w2", "10.0.0.2/24", "rack", "r1")
	rr := reflector(node("rr", "10.0.0.9/24", "role", "rr"), "1.1.1.1")
	const as = uint32(api.DefaultASNumber)
	meshOff := false
	cfgs := []*api.BGPConfiguration{
		bgpConfig("default", func(s *api.BGPConfigurationSpec) { s.ListenPort = 178 }),
		bgpConfig("node.w2", func(s *api.BGPConfigurationSpec) { s.ListenPort = 1179 }),
		bgpConfig("node.rr", func(s *api.BGPConfigurationSpec) { s.ListenPort = 2179 }),
	}
	toRR := bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerSelector = "!has(role)", "role == 'rr'" })
	tor := bgpPeer("tor", func(s *api.BGPPeerSpec) { s.PeerIP, s.ASNumber = "192.0.2.1:1790", 65000 })
	tests := []struct {
		name   string
		me     *api.Node
		others []*api.Node
		peers  []*api.BGPPeer
		mesh   bool
		want   []bgp.Peer
	}{
		{
			name: "mesh from w1", me: w1, others: []*api.Node{w2, rr}, mesh: true,
			want: []bgp.Peer{
				{Address: addr("10.0.0.2"), Port: 1179, ASN: as, Type: PeerMesh},
				{Address: addr("10.0.0.9"), Port: 2179, ASN: as, Type: PeerMesh},
			},
		},
		{
			name: "mesh from w2 dials the global port of w1", me: w2, others: []*api.Node{w1}, mesh: true,
			want: []bgp.Peer{{Address: addr("10.0.0.1"), Port: 178, ASN: as, Type: PeerMesh, Passive: true}},
		},
		{
			name: "peerSelector client side", me: w1, others: []*api.Node{w2, rr}, peers: []*api.BGPPeer{toRR, tor},
			want: []bgp.Peer{
				{Address: addr("10.0.0.9"), Port: 2179, ASN: as, Type: PeerNode},
				{Address: addr("192.0.2.1"), Port: 1790, ASN: 65000, Type: PeerGlobal},
			},
		},
		{
			name: "peerSelector reflector side", me: rr, others: []*api.Node{w1, w2}, peers: []*api.BGPPeer{toRR},
			want: []bgp.Peer{
				{Address: addr("10.0.0.1"), Port: 178, ASN: as, Type: PeerNode, RRClient: true, Passive: true},
				{Address: addr("10.0.0.2"), Port: 1179, ASN: as, Type: PeerNode, RRClient: true, Passive: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := *cfgs[0]
			g.Spec.NodeToNodeMeshEnabled = &meshOff
			if tt.mesh {
				g.Spec.NodeToNodeMeshEnabled = nil
			}
			s := NewBGPSettings(append([]*api.BGPConfiguration{&g}, cfgs[1:]...))
			p, _ := NodeAddr(tt.me)
			got := DesiredPeers(tt.me.Name, p.Addr(), tt.me, tt.others, tt.peers, s)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestExported(t *testing.T) {
	quiet := pool("quiet", "10.50.0.0/16", api.EncapAlways, api.EncapNever, false)
	quiet.Spec.DisableBGPExport = true
	loud := pool("loud", "10.60.0.0/16", api.EncapAlways, api.EncapNever, false)
	tests := []struct {
		name    string
		adverts []string
		pools   []*api.IPPool
		want    []string
	}{
		{"no pool disables export", []string{"10.50.0.0/26", "10.60.0.64/26"}, []*api.IPPool{loud}, []string{"10.50.0.0/26", "10.60.0.64/26"}},
		{"blocks of the quiet pool go", []string{"10.50.0.0/26", "10.60.0.64/26", "10.50.3.192/26"}, []*api.IPPool{quiet, loud}, []string{"10.60.0.64/26"}},
		{"a borrowed address in it goes", []string{"10.60.0.0/26", "10.50.0.7/32", "10.60.1.9/32"}, []*api.IPPool{loud, quiet}, []string{"10.60.0.0/26", "10.60.1.9/32"}},
		// A prefix wider than the pool is not inside it.
		{"a wider prefix stays", []string{"10.0.0.0/8"}, []*api.IPPool{quiet}, []string{"10.0.0.0/8"}},
		{"edges of the pool", []string{"10.49.255.255/32", "10.50.0.0/32", "10.50.255.255/32", "10.51.0.0/32"}, []*api.IPPool{quiet},
			[]string{"10.49.255.255/32", "10.51.0.0/32"}},
		{"nothing to advertise", nil, []*api.IPPool{quiet}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in, want []netip.Prefix
			for _, a := range tt.adverts {
				in = append(in, prefix(a))
			}
			for _, a := range tt.want {
				want = append(want, prefix(a))
			}
			got := Exported(in, tt.pools)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

func TestExportFilter(t *testing.T) {
	quiet := pool("quiet", "10.50.0.0/16", api.EncapAlways, api.EncapNever, false)
	quiet.Spec.DisableBGPExport = true
	loud := pool("loud", "10.60.0.0/16", api.EncapAlways, api.EncapNever, false)
	off := pool("off", "10.70.0.0/16", api.EncapNever, api.EncapNever, false)
	off.Spec.Disabled = true // its old pods' blocks still go out
	got := ExportFilter([]*api.IPPool{quiet, loud, off})
	if want := []netip.Prefix{prefix("10.60.0.0/16"), prefix("10.70.0.0/16")}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := ExportFilter(nil); len(got) != 0 {
		t.Fatalf("no pools: got %v", got)
	}
}
