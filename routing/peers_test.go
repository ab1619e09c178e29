package routing

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"podnet/api"
	"podnet/router/bgp"
)

func bgpPeer(name string, f func(s *api.BGPPeerSpec)) *api.BGPPeer {
	p := api.NewBGPPeer(name)
	f(&p.Spec)
	return p
}

func TestDesiredPeers(t *testing.T) {
	asn := func(a api.ASNumber) *api.ASNumber { return &a }
	w1 := node("w1", "10.0.0.1/24", "rack", "r1")
	w2 := node("w2", "10.0.0.2/24", "rack", "r1")
	w3 := node("w3", "10.0.1.3/24", "rack", "r2")
	noAddr := node("w4", "")
	w2own := node("w2", "10.0.0.2/24")
	w2own.Spec.BGP.ASNumber = asn(65002)
	rr := reflector(node("rr", "10.0.0.9/24", "role", "rr"), "1.1.1.1")
	rr2 := reflector(node("rr2", "10.0.0.8/24", "role", "rr"), "1.1.1.1")
	const as = uint32(api.DefaultASNumber)

	tests := []struct {
		name   string
		me     *api.Node
		others []*api.Node
		peers  []*api.BGPPeer
		mesh   bool
		want   []bgp.Peer
	}{
		{
			name: "mesh: the higher address listens", me: w2, others: []*api.Node{w1, w3, noAddr}, mesh: true,
			want: []bgp.Peer{
				{Address: addr("10.0.0.1"), Port: 179, ASN: as, Type: PeerMesh, Passive: true},
				{Address: addr("10.0.1.3"), Port: 179, ASN: as, Type: PeerMesh},
			},
		},
		{
			name: "mesh: a node's own AS", me: w1, others: []*api.Node{w2own}, mesh: true,
			want: []bgp.Peer{{Address: addr("10.0.0.2"), Port: 179, ASN: 65002, Type: PeerMesh}},
		},
		{name: "mesh off, no peers", me: w1, others: []*api.Node{w2, w3}, mesh: false, want: []bgp.Peer{}},
		{
			name: "global peer with timers and local AS", me: w1, others: []*api.Node{w2},
			peers: []*api.BGPPeer{bgpPeer("tor", func(s *api.BGPPeerSpec) {
				s.PeerIP, s.ASNumber = "10.0.0.254:1179", 65000
				s.KeepaliveTime, s.HoldTime = &api.Duration{Duration: 10 * time.Second}, &api.Duration{Duration: 30 * time.Second}
				s.LocalASNumber = asn(65100)
			})},
			want: []bgp.Peer{{Address: addr("10.0.0.254"), Port: 1179, ASN: 65000, Type: PeerGlobal,
				KeepaliveTime: 10 * time.Second, HoldTime: 30 * time.Second, LocalASN: 65100}},
		},
		{
			name: "node-specific peer for another node is skipped", me: w1,
			peers: []*api.BGPPeer{
				bgpPeer("mine", func(s *api.BGPPeerSpec) { s.Node, s.PeerIP, s.ASNumber = "w1", "192.0.2.1", 65001 }),
				bgpPeer("theirs", func(s *api.BGPPeerSpec) { s.Node, s.PeerIP, s.ASNumber = "w2", "192.0.2.2", 65001 }),
				bgpPeer("ipv6", func(s *api.BGPPeerSpec) { s.PeerIP, s.ASNumber = "2001:db8::1", 65001 }),
			},
			want: []bgp.Peer{{Address: addr("192.0.2.1"), ASN: 65001, Type: PeerNode}},
		},
		{
			name: "nodeSelector picks the nodes the peer applies to", me: w3,
			peers: []*api.BGPPeer{
				bgpPeer("r1", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerIP, s.ASNumber = "rack == 'r1'", "192.0.2.1", 65001 }),
				bgpPeer("r2", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerIP, s.ASNumber = "rack == 'r2'", "192.0.2.2", 65002 }),
			},
			want: []bgp.Peer{{Address: addr("192.0.2.2"), ASN: 65002, Type: PeerNode}},
		},
		{
			// Route reflection: clients peer with nodes matching the
			// peerSelector; the reflector peers back with every node the
			// BGPPeer applies to and serves the non-reflectors.
			name: "client side of a peerSelector", me: w1, others: []*api.Node{w2, rr, rr2},
			peers: []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerSelector = "!has(role)", "role == 'rr'" })},
			// Calico's route-reflector example: w1 has no role, so it peers
			// with both reflectors.
			want: []bgp.Peer{
				{Address: addr("10.0.0.8"), Port: 179, ASN: as, Type: PeerNode},
				{Address: addr("10.0.0.9"), Port: 179, ASN: as, Type: PeerNode},
			},
		},
		{
			name: "client side of a peerSelector (supported selector)", me: w1, others: []*api.Node{w2, rr, rr2},
			peers: []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerSelector = "rack == 'r1'", "role == 'rr'" })},
			want: []bgp.Peer{
				{Address: addr("10.0.0.8"), Port: 179, ASN: as, Type: PeerNode},
				{Address: addr("10.0.0.9"), Port: 179, ASN: as, Type: PeerNode},
			},
		},
		{
			name: "reflector side: reverse peering with clients", me: rr, others: []*api.Node{w1, w2, w3, rr2},
			peers: []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerSelector = "rack == 'r1'", "role == 'rr'" })},
			want: []bgp.Peer{
				// The reflector's address is the higher: its clients dial.
				{Address: addr("10.0.0.1"), Port: 179, ASN: as, Type: PeerNode, RRClient: true, Passive: true},
				{Address: addr("10.0.0.2"), Port: 179, ASN: as, Type: PeerNode, RRClient: true, Passive: true},
				// rr2 matches the peerSelector but not the nodeSelector: the
				// BGPPeer does not apply to rr, so no session.
			},
		},
		{
			name: "reflector in the mesh keeps its clients", me: rr, others: []*api.Node{w1, rr2}, mesh: true,
			want: []bgp.Peer{
				{Address: addr("10.0.0.1"), Port: 179, ASN: as, Type: PeerMesh, RRClient: true, Passive: true},
				{Address: addr("10.0.0.8"), Port: 179, ASN: as, Type: PeerMesh, Passive: true},
			},
		},
		{
			// As the client's own entry replaces its mesh session (the
			// forward end), so does the reflector's reverse one: both
			// ends then agree on password and AS.
			name: "a reverse peering replaces the mesh session", me: rr, others: []*api.Node{w1}, mesh: true,
			peers: []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.PeerSelector = "role == 'rr'" })},
			want:  []bgp.Peer{{Address: addr("10.0.0.1"), Port: 179, ASN: as, Type: PeerNode, RRClient: true, Passive: true}},
		},
		{
			name: "no session with a stale Node at our own address", me: w1, others: []*api.Node{w2, node("old-w1", "10.0.0.1/24")}, mesh: true,
			peers: []*api.BGPPeer{bgpPeer("self", func(s *api.BGPPeerSpec) { s.PeerIP, s.ASNumber = "10.0.0.1", 65001 })},
			want:  []bgp.Peer{{Address: addr("10.0.0.2"), Port: 179, ASN: as, Type: PeerMesh}},
		},
		{
			// Reflection is iBGP only: a node in its own AS is an
			// ordinary eBGP neighbour of the reflector.
			name: "reflector: no client in another AS", me: rr, others: []*api.Node{w1, w2own}, mesh: true,
			want: []bgp.Peer{
				{Address: addr("10.0.0.1"), Port: 179, ASN: as, Type: PeerMesh, RRClient: true, Passive: true},
				{Address: addr("10.0.0.2"), Port: 179, ASN: 65002, Type: PeerMesh, Passive: true},
			},
		},
		{
			name: "not registered yet: selectors match nothing", me: nil, others: []*api.Node{w1},
			peers: []*api.BGPPeer{bgpPeer("sel", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerIP, s.ASNumber = "all()", "192.0.2.1", 65001 })},
			want:  []bgp.Peer{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, me := "w9", addr("10.0.0.50")
			if tt.me != nil {
				p, _ := NodeAddr(tt.me)
				name, me = tt.me.Name, p.Addr()
			}
			got := DesiredPeers(name, me, tt.me, tt.others, tt.peers, NewBGPSettings([]*api.BGPConfiguration{globalConfig(tt.mesh)}))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestPeeringEndsAgree: for a session between two nodes, each end's
// entry for the other must match what the other sends: the same
// password, the AS the other uses on it (its local AS override, else its
// own), and exactly one end dialling. Otherwise the session never comes
// up.
func TestPeeringEndsAgree(t *testing.T) {
	asn := func(a api.ASNumber) *api.ASNumber { return &a }
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w1 := node("w1", "10.0.0.1/24")
	w2own := node("w2", "10.0.0.2/24")
	w2own.Spec.BGP.ASNumber = asn(65002)
	rr := reflector(node("rr", "10.0.0.9/24", "role", "rr"), "1.1.1.1")
	rr2 := reflector(node("rr2", "10.0.0.8/24", "role", "rr"), "1.1.1.1")
	t.Setenv("PODNET_TEST_OTHER_PW", "other")
	toRR := func(f func(s *api.BGPPeerSpec)) []*api.BGPPeer {
		return []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) {
			s.NodeSelector, s.PeerSelector = "!has(role)", "role == 'rr'"
			f(s)
		})}
	}
	tests := []struct {
		name  string
		nodes []*api.Node
		peers []*api.BGPPeer
		mesh  bool
	}{
		{"mesh", []*api.Node{w1, w2own, rr}, nil, true},
		{"reflector with a password, mesh on", []*api.Node{w1, rr}, toRR(func(s *api.BGPPeerSpec) { s.Password = &api.BGPPassword{SecretFile: pwFile} }), true},
		{"reflector with a password, mesh off", []*api.Node{w1, rr}, toRR(func(s *api.BGPPeerSpec) { s.Password = &api.BGPPassword{SecretFile: pwFile} }), false},
		{"reflector, clients with a local AS", []*api.Node{w1, rr}, toRR(func(s *api.BGPPeerSpec) { s.LocalASNumber = asn(65100) }), false},
		{"reflector, a client in its own AS", []*api.Node{w1, w2own, rr}, toRR(func(*api.BGPPeerSpec) {}), true},
		{"two BGPPeers pair the same nodes, with different passwords", []*api.Node{w1, rr}, append(
			toRR(func(s *api.BGPPeerSpec) { s.Password = &api.BGPPassword{SecretFile: pwFile} }),
			bgpPeer("to-rr-again", func(s *api.BGPPeerSpec) {
				s.NodeSelector, s.PeerSelector = "!has(role)", "role == 'rr'"
				s.Password = &api.BGPPassword{Env: "PODNET_TEST_OTHER_PW"}
			})), false},
		{"reflectors pair each other as forward ends, with a local AS", []*api.Node{w1, rr, rr2}, []*api.BGPPeer{
			bgpPeer("all-to-rr", func(s *api.BGPPeerSpec) {
				s.NodeSelector, s.PeerSelector = "all()", "role == 'rr'"
				s.LocalASNumber = asn(65100)
			})}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			settings := NewBGPSettings([]*api.BGPConfiguration{globalConfig(tt.mesh)})
			global := GlobalASN(settings.Global)
			sessions := map[[2]string]bgp.Peer{} // [from, to]
			for _, me := range tt.nodes {
				self, others := SplitNodes(tt.nodes, me.Name)
				myAddr, _ := NodeAddr(me)
				for _, p := range DesiredPeers(me.Name, myAddr.Addr(), self, others, tt.peers, settings) {
					for _, o := range others {
						if a, _ := NodeAddr(o); a.Addr() == p.Address {
							sessions[[2]string{me.Name, o.Name}] = p
						}
					}
				}
			}
			if len(sessions) == 0 {
				t.Fatal("no sessions between nodes")
			}
			byName := map[string]*api.Node{}
			for _, n := range tt.nodes {
				byName[n.Name] = n
			}
			for k, p := range sessions {
				back, ok := sessions[[2]string{k[1], k[0]}]
				if !ok {
					t.Errorf("%s peers with %s, which does not peer back", k[0], k[1])
					continue
				}
				local := back.LocalASN
				if local == 0 {
					local = NodeASN(byName[k[1]], global)
				}
				if p.ASN != local {
					t.Errorf("%s expects AS %d from %s, which uses AS %d on the session", k[0], p.ASN, k[1], local)
				}
				if p.Password != back.Password {
					t.Errorf("%s and %s disagree on the password (%q, %q)", k[0], k[1], p.Password, back.Password)
				}
				if p.Passive == back.Passive {
					t.Errorf("%s and %s: passive %v both", k[0], k[1], p.Passive)
				}
			}
		})
	}
}

func TestPeerPassword(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODNET_TEST_BGP_PASSWORD", "from-env")
	tests := []struct {
		name string
		p    *api.BGPPassword
		want string
	}{
		{"none", nil, ""},
		{"file, trimmed", &api.BGPPassword{SecretFile: file}, "s3cret"},
		{"missing file", &api.BGPPassword{SecretFile: file + ".gone"}, ""},
		{"env", &api.BGPPassword{Env: "PODNET_TEST_BGP_PASSWORD"}, "from-env"},
		{"unset env", &api.BGPPassword{Env: "PODNET_TEST_BGP_PASSWORD_UNSET"}, ""},
	}
	for _, tt := range tests {
		if got := peerPassword(tt.p); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	// The password reaches the session.
	w1, w2 := node("w1", "10.0.0.1/24"), node("w2", "10.0.0.2/24")
	got := DesiredPeers("w1", addr("10.0.0.1"), w1, []*api.Node{w2},
		[]*api.BGPPeer{bgpPeer("p", func(s *api.BGPPeerSpec) {
			s.PeerIP, s.ASNumber, s.Password = "192.0.2.1", 65001, &api.BGPPassword{SecretFile: file}
		})}, NewBGPSettings([]*api.BGPConfiguration{globalConfig(false)}))
	if len(got) != 1 || got[0].Password != "s3cret" {
		t.Fatalf("got %+v, want one peer with password s3cret", got)
	}
}

// TestNodeSessionsOneEndDials: of every session two nodes both configure,
// whichever BGPPeer or the mesh made it, exactly one end dials. (Both
// dialling collide; see DesiredPeers.)
func TestNodeSessionsOneEndDials(t *testing.T) {
	nodes := []*api.Node{
		node("w1", "10.0.0.1/24", "rack", "r1"),
		node("w2", "10.0.0.2/24", "rack", "r1"),
		node("w3", "10.0.1.3/24", "rack", "r2"),
		reflector(node("rr", "10.0.0.9/24", "role", "rr"), "1.1.1.1"),
		reflector(node("rr2", "10.0.0.8/24", "role", "rr"), "1.1.1.1"),
	}
	cases := []struct {
		name  string
		mesh  bool
		peers []*api.BGPPeer
	}{
		{name: "mesh", mesh: true},
		{name: "reflectors", peers: []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerSelector = "!has(role)", "role == 'rr'" })}},
		{name: "reflectors and mesh", mesh: true, peers: []*api.BGPPeer{bgpPeer("to-rr", func(s *api.BGPPeerSpec) { s.PeerSelector = "has(role)" })}},
		{name: "everyone by selector", peers: []*api.BGPPeer{bgpPeer("all", func(s *api.BGPPeerSpec) { s.PeerSelector = "all()" })}},
		// A peerIP that is another node's address, on one side only: the
		// other side has the session from the mesh.
		{name: "peerIP to a node, mesh back", mesh: true, peers: []*api.BGPPeer{
			bgpPeer("rr-to-w1", func(s *api.BGPPeerSpec) { s.Node, s.PeerIP, s.ASNumber = "rr", "10.0.0.1", api.DefaultASNumber }),
			bgpPeer("w2-to-rr2", func(s *api.BGPPeerSpec) { s.Node, s.PeerIP, s.ASNumber = "w2", "10.0.0.8", api.DefaultASNumber }),
		}},
		{name: "node and selectors that overlap", peers: []*api.BGPPeer{
			bgpPeer("r1", func(s *api.BGPPeerSpec) { s.NodeSelector, s.PeerSelector = "rack == 'r1'", "has(rack)" }),
			bgpPeer("w3", func(s *api.BGPPeerSpec) { s.Node, s.PeerSelector = "w3", "has(role)" }),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sessions := map[[2]netip.Addr]bgp.Peer{} // [me, peer]
			for _, me := range nodes {
				_, others := SplitNodes(nodes, me.Name)
				p, _ := NodeAddr(me)
				for _, s := range DesiredPeers(me.Name, p.Addr(), me, others, c.peers, NewBGPSettings([]*api.BGPConfiguration{globalConfig(c.mesh)})) {
					sessions[[2]netip.Addr{p.Addr(), s.Address}] = s
				}
			}
			if len(sessions) == 0 {
				t.Fatal("no sessions at all")
			}
			for k, s := range sessions {
				back, ok := sessions[[2]netip.Addr{k[1], k[0]}]
				if !ok {
					t.Errorf("%v peers with %v, which does not peer back", k[0], k[1])
					continue
				}
				if s.Passive == back.Passive {
					t.Errorf("%v and %v: both Passive=%v, want exactly one end dialling", k[0], k[1], s.Passive)
				}
			}
		})
	}
}

func TestExplicitPeers(t *testing.T) {
	w1 := node("w1", "10.0.0.1/24")
	w2 := node("w2", "10.0.0.2/24")
	rr := reflector(node("rr", "10.0.0.9/24", "role", "rr"), "1.1.1.1")
	sessions := []bgp.Peer{
		{Address: addr("10.0.0.1"), Type: PeerMesh},
		{Address: addr("10.0.0.2"), Type: PeerNode},     // a plain node, by peerSelector
		{Address: addr("10.0.0.9"), Type: PeerNode},     // a reflector node, by peerSelector
		{Address: addr("10.0.0.254"), Type: PeerGlobal}, // a ToR
		{Address: addr("192.0.2.1"), Type: PeerNode},    // a node-specific external router
	}
	got := ExplicitPeers(sessions, []*api.Node{w1, w2, rr})
	want := map[netip.Addr]bool{addr("10.0.0.9"): true, addr("10.0.0.254"): true, addr("192.0.2.1"): true}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
