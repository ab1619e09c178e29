package api

import (
	"strings"
	"testing"
	"time"
)

func pool(name, cidr string, mod func(*IPPoolSpec)) *IPPool {
	p := NewIPPool(name)
	p.Spec.CIDR = cidr
	if mod != nil {
		mod(&p.Spec)
	}
	return p
}

func withMeta(p *IPPool, mod func(*ObjectMeta)) *IPPool {
	mod(&p.ObjectMeta)
	return p
}

func TestIPPoolValidate(t *testing.T) {
	tests := []struct {
		name string
		p    *IPPool
		want string // "" = valid; else a substring of the error
	}{
		{"ok", pool("p", "10.0.0.0/16", nil), ""},
		{"ok /26 pool", pool("p", "10.0.0.0/26", nil), ""},
		{"ok ipip crosssubnet", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.IPIPMode = EncapCrossSubnet }), ""},
		{"missing name", pool("", "10.0.0.0/16", nil), "error with field Metadata.Name = '' (metadata.name: required)"},
		{"bad name", pool("Bad_Name", "10.0.0.0/16", nil), "error with field Metadata.Name = 'Bad_Name' (name must consist of lower case"},
		{"control character in uid", withMeta(pool("p", "10.0.0.0/16", nil), func(m *ObjectMeta) { m.UID = "\x7f" }), "Metadata.UID = '\x7f' (control characters are not allowed"},
		{"control character in annotation", withMeta(pool("p", "10.0.0.0/16", nil), func(m *ObjectMeta) { m.Annotations = map[string]string{"note": "a\u0085b\u009fc"} }), "Metadata.Annotations[note]"},
		{"line breaks in annotation", withMeta(pool("p", "10.0.0.0/16", nil), func(m *ObjectMeta) { m.Annotations = map[string]string{"note": "a\tb\nc\r\n\u0085"} }), ""},
		{"empty cidr", pool("p", "", nil), "error with field IPPool.Spec.CIDR = '' (IPPool CIDR must be specified)"},
		{"bad cidr", pool("p", "10.0.0/16", nil), "error with field IPPool.Spec.CIDR = '10.0.0/16' (IPPool CIDR must be a valid subnet)"},
		{"not masked", pool("p", "10.0.0.1/16", nil), "error with field IPPool.Spec.CIDR = '10.0.0.1/16' (IPPool CIDR is not strictly masked)"},
		{"link local", pool("p", "169.254.0.0/16", nil), "(IPPool CIDR overlaps with IPv4 Link Local range 169.254.0.0/16)"},
		{"link local super", pool("p", "168.0.0.0/6", nil), "IPv4 Link Local range"},
		{"block too small", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.BlockSize = 19 }), "error with field IPPool.Spec.BlockSize = '19' (IPv4 block size must be between 20 and 32)"},
		{"block too big", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.BlockSize = 33 }), "(IPv4 block size must be between 20 and 32)"},
		{"pool smaller than block", pool("p", "10.0.0.0/28", nil), "error with field IPPool.Spec.CIDR = '10.0.0.0/28' (IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size.)"},
		{"small disabled pool ok", pool("p", "10.0.0.0/28", func(s *IPPoolSpec) { s.Disabled = true }), ""},
		{"both encaps", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.IPIPMode, s.VXLANMode = EncapAlways, EncapCrossSubnet }),
			"error with field IPPool.Spec.VXLANMode = 'CrossSubnet' (Cannot enable both VXLAN and IPIP on the same IPPool)"},
		{"lower-case mode", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.IPIPMode = "always" }),
			"error with field IPPool.Spec.IPIPMode = 'always' (must be one of Never, Always, CrossSubnet)"},
		{"ipv6", pool("p", "fd00::/48", nil), "(IPv6 pools are not supported yet)"},
		{"ipv6 ipip", pool("p", "fd00::/48", func(s *IPPoolSpec) { s.IPIPMode = EncapAlways }), "-  IPPool.Spec.IPIPMode = 'Always' (IPIP is not supported on an IPv6 IP pool)"},
		{"bad use", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AllowedUses = []string{"Pods"} }), "(must be one of Workload, Tunnel, LoadBalancer)"},
		{"lb mixed", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AllowedUses = []string{UseLoadBalancer, UseWorkload} }), "LoadBalancer cannot be combined"},
		{"bad assignment", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AssignmentMode = "auto" }), "(must be one of Automatic, Manual)"},
		{"bad selector", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.NodeSelector = "has(x" }),
			"error with field IPPool.Spec.NodeSelector = 'has(x' (invalid selector at position 6: expected ')' after has(x, found end of selector)"},
		{"selector with or", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.NodeSelector = "zone in {'west', 'east'} || !has(zone)" }), ""},
		{"manual only", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.NodeSelector = "!all()" }), ""},
		{"disableBGPExport", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.DisableBGPExport = true }), ""},
		{"disableBGPExport ipip", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.DisableBGPExport, s.IPIPMode = true, EncapAlways }), ""},
		{"disableBGPExport vxlan never", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.DisableBGPExport, s.VXLANMode = true, EncapNever }), ""},
		{"disableBGPExport vxlan", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.DisableBGPExport, s.VXLANMode = true, EncapAlways }),
			"error with field IPPool.Spec.DisableBGPExport = 'true' (podnet does not support disableBGPExport on a VXLAN pool yet: nodes learn VXLAN routes from BGP; use vxlanMode Never, or export the pool)"},
		{"disableBGPExport vxlan cross-subnet", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.DisableBGPExport, s.VXLANMode = true, EncapCrossSubnet }),
			"podnet does not support disableBGPExport on a VXLAN pool yet"},
		{"lb ok", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AllowedUses = []string{UseLoadBalancer} }), ""},
		{"lb all() spaced", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AllowedUses, s.NodeSelector = []string{UseLoadBalancer}, " all( ) " }), ""},
		{"lb selector", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AllowedUses, s.NodeSelector = []string{UseLoadBalancer}, "zone == 'a'" }), "LoadBalancer pools need nodeSelector all()"},
		{"tunnel only ok", pool("p", "10.0.0.0/16", func(s *IPPoolSpec) { s.AllowedUses = []string{UseTunnel} }), ""},
		{"several", pool("p", "10.0.0.1/16", func(s *IPPoolSpec) { s.BlockSize = 40 }),
			"error with the following fields:\n-  IPPool.Spec.CIDR = '10.0.0.1/16' (IPPool CIDR is not strictly masked)\n-  IPPool.Spec.BlockSize = '40' (IPv4 block size must be between 20 and 32)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.p.SetDefaults()
			checkErr(t, tt.p.Validate(), tt.want)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("got error %q, want none", err)
	case want != "" && err == nil:
		t.Fatalf("got no error, want %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("got error %q, want it to contain %q", err, want)
	}
}

func TestIPPoolDefaults(t *testing.T) {
	p := pool("p", "10.1.0.0/16", nil)
	p.SetDefaults()
	s := p.Spec
	if s.BlockSize != 26 || s.IPIPMode != "Never" || s.VXLANMode != "Never" || s.NodeSelector != "all()" ||
		s.AssignmentMode != "Automatic" || len(s.AllowedUses) != 2 || s.AllowedUses[0] != "Workload" || s.AllowedUses[1] != "Tunnel" || s.NATOutgoing {
		t.Fatalf("got %+v", s)
	}
	d := DefaultIPPool()
	if d.Name != "default-ipv4-ippool" || d.Spec.CIDR != "192.168.0.0/16" || !d.Spec.NATOutgoing || d.Validate() != nil {
		t.Fatalf("default pool: got %+v", d)
	}
}

func TestIPPoolValidateUpdate(t *testing.T) {
	old := pool("p", "10.0.0.0/16", nil)
	old.SetDefaults()
	tests := []struct {
		name string
		mod  func(*IPPoolSpec)
		want string
	}{
		{"disable", func(s *IPPoolSpec) { s.Disabled = true }, ""},
		{"cidr", func(s *IPPoolSpec) { s.CIDR = "10.0.0.0/15" }, "error with field IPPool.Spec.CIDR = '10.0.0.0/15' (IPPool CIDR cannot be modified)"},
		{"block", func(s *IPPoolSpec) { s.BlockSize = 24 }, "error with field IPPool.Spec.BlockSize = '24' (IPPool BlockSize cannot be modified)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pool("p", "10.0.0.0/16", tt.mod)
			p.SetDefaults()
			checkErr(t, p.ValidateUpdate(old), tt.want)
		})
	}
	n := pool("new-pool", "10.0.128.0/17", nil)
	if !n.Overlaps(old) {
		t.Fatal("10.0.128.0/17 should overlap 10.0.0.0/16")
	}
	checkErr(t, n.OverlapError(old), "error with field IPPool.Spec.CIDR = '10.0.128.0/17' (IPPool(new-pool) CIDR overlaps with IPPool(p) CIDR 10.0.0.0/16)")
}

func ptr[T any](v T) *T { return &v }

func TestOtherKindsValidate(t *testing.T) {
	as := func(a ASNumber) *ASNumber { return &a }
	dur := func(s string) *Duration { d, _ := time.ParseDuration(s); return &Duration{d} }
	tests := []struct {
		name string
		r    Resource
		want string
	}{
		{"ipamconfig ok", &IPAMConfiguration{ObjectMeta: ObjectMeta{Name: "default"}}, ""},
		{"ipamconfig name", &IPAMConfiguration{ObjectMeta: ObjectMeta{Name: "other"}}, `with a name other than "default"`},
		// Calico's own sample: the resource validator does not tie
		// maxBlocksPerHost to strictAffinity (only `ipam configure` does).
		{"ipamconfig calico sample", &IPAMConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: IPAMConfigurationSpec{StrictAffinity: false, MaxBlocksPerHost: 4}}, ""},
		{"ipamconfig max strict", &IPAMConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: IPAMConfigurationSpec{MaxBlocksPerHost: 4, StrictAffinity: true}}, ""},
		{"ipamconfig neither", &IPAMConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: IPAMConfigurationSpec{AutoAllocateBlocks: ptr(false)}}, ""},
		{"ipamconfig negative", &IPAMConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: IPAMConfigurationSpec{MaxBlocksPerHost: -1}},
			"error with field IPAMConfiguration.Spec.MaxBlocksPerHost = '-1' (must be greater than or equal to 0)"},
		{"node ipv6", &Node{ObjectMeta: ObjectMeta{Name: "w"}, Spec: NodeSpec{BGP: &NodeBGPSpec{IPv4Address: "10.0.0.11/24", IPv6Address: "fd00::11/64"}}},
			"error with field Node.Spec.BGP.IPv6Address = 'fd00::11/64' (podnet does not support IPv6 node addresses yet: podnet does not route IPv6 yet (IPv6 pools are refused too); leave ipv6Address unset)"},
		{"node bad ipv6", &Node{ObjectMeta: ObjectMeta{Name: "w"}, Spec: NodeSpec{BGP: &NodeBGPSpec{IPv6Address: "10.0.0.1/24"}}}, "(must be an IPv6 address with prefix length)"},
		{"node ok", &Node{ObjectMeta: ObjectMeta{Name: "worker1"}, Spec: NodeSpec{BGP: &NodeBGPSpec{IPv4Address: "10.0.0.11/24", ASNumber: as(64513), RouteReflectorClusterID: "244.0.0.1"}, VXLANTunnelMACAddr: "66:aa:bb:cc:dd:ee", IPv4VXLANTunnelAddr: "192.168.1.0"}}, ""},
		{"node bad address", &Node{ObjectMeta: ObjectMeta{Name: "w"}, Spec: NodeSpec{BGP: &NodeBGPSpec{IPv4Address: "10.0.0.11"}}}, "Node.Spec.BGP.IPv4Address = '10.0.0.11'"},
		{"node bad rr", &Node{ObjectMeta: ObjectMeta{Name: "w"}, Spec: NodeSpec{BGP: &NodeBGPSpec{RouteReflectorClusterID: "x"}}}, "Node.Spec.BGP.RouteReflectorClusterID"},
		{"node bad mac", &Node{ObjectMeta: ObjectMeta{Name: "w"}, Spec: NodeSpec{VXLANTunnelMACAddr: "zz"}}, "Node.Spec.VXLANTunnelMACAddr"},
		{"wep ok", &WorkloadEndpoint{ObjectMeta: ObjectMeta{Name: "w1-pod1"}, Spec: WorkloadEndpointSpec{Node: "w1", Workload: "pod1", InterfaceName: "pn1234", IPNetworks: []string{"192.168.0.5/32"}, MAC: "ee:ee:ee:ee:ee:ee", Netns: "/run/netns/pod1"}}, ""},
		{"wep /24", &WorkloadEndpoint{ObjectMeta: ObjectMeta{Name: "w1-pod1"}, Spec: WorkloadEndpointSpec{Node: "w1", Workload: "pod1", InterfaceName: "pn1234", IPNetworks: []string{"192.168.0.0/24"}}}, "WorkloadEndpoint.Spec.IPNetworks = '192.168.0.0/24'"},
		{"wep missing", &WorkloadEndpoint{ObjectMeta: ObjectMeta{Name: "w1-pod1"}}, "error with the following fields:\n-  WorkloadEndpoint.Spec.Node = '' (node is required)"},
		{"bgpconfig ok", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}}, ""},
		{"bgpconfig node ok", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "node.worker1"}, Spec: BGPConfigurationSpec{LogSeverityScreen: "Info"}}, ""},
		{"bgpconfig debug", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{LogSeverityScreen: "Debug"}},
			"error with field BGPConfiguration.Spec.LogSeverityScreen = 'Debug' (podnet does not support logSeverityScreen other than Info yet: BGP messages go to the daemon's log at its --log-level)"},
		{"bgpconfig port 179", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{ListenPort: 179, BindMode: "None"}}, ""},
		{"bgpconfig listenPort", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{ListenPort: 178}}, ""},
		{"bgpconfig node listenPort", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "node.worker1"}, Spec: BGPConfigurationSpec{ListenPort: 1179}}, ""},
		{"bgpconfig bad port", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{ListenPort: 70000}}, "(must be between 1 and 65535)"},
		{"bgpconfig bindMode", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{BindMode: "NodeIP"}}, ""},
		{"bgpconfig bad bindMode", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{BindMode: "nodeip"}},
			"error with field BGPConfiguration.Spec.BindMode = 'nodeip' (must be one of None, NodeIP)"},
		{"bgpconfig node bindMode", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "node.worker1"}, Spec: BGPConfigurationSpec{BindMode: "NodeIP"}},
			"error with field BGPConfiguration.Spec.BindMode = 'NodeIP' (podnet does not support bindMode on a node's BGPConfiguration yet: set it on the global BGPConfiguration (default))"},
		{"bgpconfig name", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "global"}}, `name must be "default" or "node.<nodename>"`},
		{"bgpconfig node mesh", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "node.w1"}, Spec: BGPConfigurationSpec{NodeToNodeMeshEnabled: ptr(false)}}, "can only be set on the global BGPConfiguration"},
		{"bgpconfig severity", &BGPConfiguration{ObjectMeta: ObjectMeta{Name: "default"}, Spec: BGPConfigurationSpec{LogSeverityScreen: "info"}}, "LogSeverityScreen = 'info'"},
		{"peer ok", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "192.20.30.40", ASNumber: 64567, Password: &BGPPassword{Env: "TOR_PW"}, KeepaliveTime: dur("10s"), HoldTime: dur("30s")}}, ""},
		{"peer port ok", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "192.20.30.40:1179", ASNumber: 64567}}, ""},
		{"peer v6", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "[ac13::57]:50", ASNumber: 64567}},
			"error with field BGPPeer.Spec.PeerIP = '[ac13::57]:50' (podnet does not support IPv6 BGP peers yet: podnet does not route IPv6 yet (IPv6 pools are refused too))"},
		{"peer bare v6", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "fd00::1", ASNumber: 64567}}, "podnet does not support IPv6 BGP peers yet"},
		{"peer v4-mapped v6", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "[::ffff:10.0.0.1]:179", ASNumber: 64567}}, ""},
		{"rr ok", &BGPPeer{ObjectMeta: ObjectMeta{Name: "rr"}, Spec: BGPPeerSpec{NodeSelector: "all()", PeerSelector: "route-reflector == 'true'"}}, ""},
		{"rr not rr", &BGPPeer{ObjectMeta: ObjectMeta{Name: "mesh"}, Spec: BGPPeerSpec{NodeSelector: "!has(routeReflector)", PeerSelector: "has(routeReflector)"}}, ""},
		{"peer bad nodeSelector", &BGPPeer{ObjectMeta: ObjectMeta{Name: "p"}, Spec: BGPPeerSpec{NodeSelector: "rack = 'a'", PeerIP: "1.2.3.4", ASNumber: 1}},
			"error with field BGPPeer.Spec.NodeSelector = 'rack = 'a'' (invalid selector at position 6: expected an operator"},
		{"peer bad peerSelector", &BGPPeer{ObjectMeta: ObjectMeta{Name: "p"}, Spec: BGPPeerSpec{PeerSelector: "has(rr) &&"}},
			"error with field BGPPeer.Spec.PeerSelector = 'has(rr) &&' (invalid selector at position 11: expected an expression, found end of selector)"},
		{"peer no asn", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "192.20.30.40"}}, "BGPPeer.Spec.ASNumber = '0' (asNumber is required"},
		{"peer bad ip", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "192.20.30", ASNumber: 1}}, "BGPPeer.Spec.PeerIP = '192.20.30'"},
		{"peer node+selector", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, Node: "w1", NodeSelector: "all()"}}, "node and nodeSelector cannot both be set"},
		{"peer selector+ip", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", PeerSelector: "all()"}}, "peerIP must be empty when peerSelector is set"},
		{"peer password both", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, Password: &BGPPassword{Env: "A", SecretFile: "/x"}}}, "set exactly one of password.secretFile and password.env"},
		{"peer password relative", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, Password: &BGPPassword{SecretFile: "etc/pw"}}}, "BGPPeer.Spec.Password.SecretFile = 'etc/pw' (must be an absolute path)"},
		{"peer password dir", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, Password: &BGPPassword{SecretFile: "/etc/podnet/"}}}, "BGPPeer.Spec.Password.SecretFile = '/etc/podnet/' (must be the path of a file, written plainly (no trailing /, no . or .. parts, no //): /etc/podnet?)"},
		{"peer password dotdot", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, Password: &BGPPassword{SecretFile: "/etc/../pw"}}}, "must be the path of a file"},
		{"peer password file absent here", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, Password: &BGPPassword{SecretFile: "/nonexistent/podnet/peer.pw"}}}, ""},
		{"peer hold", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, HoldTime: dur("2s")}}, "hold time must be 0 or"},
		{"peer keepalive", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, HoldTime: dur("9s"), KeepaliveTime: dur("9s")}}, "keepalive time must be less than the hold time"},
		{"peer keepalive past default hold", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, KeepaliveTime: dur("90s")}},
			"BGPPeer.Spec.KeepaliveTime = '1m30s' (keepalive time must be less than the hold time (1m30s when holdTime is 0 or not set))"},
		{"peer keepalive past hold 0", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, HoldTime: dur("0s"), KeepaliveTime: dur("120s")}},
			"keepalive time must be less than the hold time (1m30s when holdTime is 0 or not set)"},
		{"peer keepalive under default hold", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "1.2.3.4", ASNumber: 1, KeepaliveTime: dur("89s")}}, ""},
		{"peer unspecified", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "0.0.0.0", ASNumber: 1}}, "BGPPeer.Spec.PeerIP = '0.0.0.0' (must be a unicast address of a BGP router"},
		{"peer loopback", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "127.0.0.1:1790", ASNumber: 1}}, "BGPPeer.Spec.PeerIP = '127.0.0.1:1790' (must be a unicast address"},
		{"peer multicast", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "224.0.0.5", ASNumber: 1}}, "must be a unicast address"},
		{"peer v4-mapped loopback", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "::ffff:127.0.0.1", ASNumber: 1}}, "must be a unicast address"},
		{"peer private", &BGPPeer{ObjectMeta: ObjectMeta{Name: "tor"}, Spec: BGPPeerSpec{PeerIP: "10.77.0.1", ASNumber: 1}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			SetDefaults(tt.r)
			checkErr(t, Validate(tt.r), tt.want)
		})
	}
}

func TestBGPConfigurationDefaults(t *testing.T) {
	c := NewBGPConfiguration("default")
	c.SetDefaults()
	s := c.Spec
	if *s.ASNumber != 64512 || !*s.NodeToNodeMeshEnabled || s.ListenPort != 179 || s.LogSeverityScreen != "Info" {
		t.Fatalf("got %+v", s)
	}
	n := NewBGPConfiguration("node.w1")
	n.SetDefaults()
	if n.Spec.ASNumber != nil || n.Spec.NodeToNodeMeshEnabled != nil || n.Spec.ListenPort != 0 {
		t.Fatalf("per-node config got defaults: %+v", n.Spec)
	}
}

func TestLookupKind(t *testing.T) {
	tests := []struct{ name, want string }{
		{"ippool", KindIPPool}, {"IPPools", KindIPPool}, {"ipp", KindIPPool}, {"Pool", KindIPPool},
		{"no", KindNode}, {"nodes", KindNode}, {"bp", KindBGPPeer}, {"BGPPeers", KindBGPPeer},
		{"bgpconfig", KindBGPConfiguration}, {"ipamconfig", KindIPAMConfiguration}, {"weps", KindWorkloadEndpoint},
	}
	for _, tt := range tests {
		k, err := LookupKind(tt.name)
		if err != nil || k.Kind != tt.want {
			t.Errorf("LookupKind(%q): got %q, %v, want %q", tt.name, k.Kind, err, tt.want)
		}
	}
	if _, err := LookupKind("foo"); err == nil || !strings.Contains(err.Error(), "resource type 'foo' is not supported") {
		t.Errorf("LookupKind(foo): got %v", err)
	}
}
