package node

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"podnet/api"
	"podnet/router/bgp"
	"podnet/routing"
)

func TestPasswordProblem(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pw")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(good, []byte("s3cret\n"), 0o600)
	os.WriteFile(empty, []byte(" \n"), 0o600)
	t.Setenv("PODNET_TEST_PW", "x")
	for _, tt := range []struct {
		pw   *api.BGPPassword
		want string
	}{
		{nil, ""},
		{&api.BGPPassword{SecretFile: good}, ""},
		{&api.BGPPassword{SecretFile: filepath.Join(dir, "missing")}, "password file " + filepath.Join(dir, "missing") + ": no such file"},
		{&api.BGPPassword{SecretFile: empty}, "password file " + empty + " is empty"},
		{&api.BGPPassword{SecretFile: dir}, "password file " + dir + ": is a directory"},
		{&api.BGPPassword{Env: "PODNET_TEST_PW"}, ""},
		{&api.BGPPassword{Env: "PODNET_TEST_PW_UNSET"}, "password variable PODNET_TEST_PW_UNSET is not set in the daemon's environment"},
	} {
		if got := passwordProblem(tt.pw); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.pw, got, tt.want)
		}
	}
}

// TestRefusedSessions: a BGPPeer whose password file is missing gets no
// session, not one without a password, and a status row with the
// reason; the mesh and the other peers are untouched.
func TestRefusedSessions(t *testing.T) {
	a := netip.MustParseAddr
	node := func(name, addr string) *api.Node {
		n := api.NewNode(name)
		n.Spec.BGP = &api.NodeBGPSpec{IPv4Address: addr + "/24"}
		return n
	}
	self := node("w1", "10.0.0.1")
	others := []*api.Node{node("w2", "10.0.0.2")}
	peer := func(name, ip, file string) *api.BGPPeer {
		p := api.NewBGPPeer(name)
		p.Spec.PeerIP, p.Spec.ASNumber = ip, 65000
		if file != "" {
			p.Spec.Password = &api.BGPPassword{SecretFile: file}
		}
		return p
	}
	missing := filepath.Join(t.TempDir(), "nope")
	peers := []*api.BGPPeer{peer("tor", "10.0.0.254", missing), peer("other", "10.0.0.253", ""), peer("over-mesh", "10.0.0.2", missing)}
	settings := routing.NewBGPSettings(nil)
	desired := func(ps []*api.BGPPeer) []bgp.Peer {
		return routing.DesiredPeers("w1", a("10.0.0.1"), self, others, ps, settings)
	}
	usable, broken := withoutPasswordProblems(peers)
	if len(usable) != 1 || usable[0].Name != "other" || len(broken) != 2 {
		t.Fatalf("split: got %d usable, %d broken", len(usable), len(broken))
	}
	want, refused := refusedSessions(desired(usable), usable, broken, desired)
	var addrs []netip.Addr
	for _, p := range want {
		addrs = append(addrs, p.Address)
	}
	if !slices.Equal(addrs, []netip.Addr{a("10.0.0.253")}) {
		t.Fatalf("sessions: got %v, want only 10.0.0.253 (the mesh session the broken BGPPeer overrides is refused too)", addrs)
	}
	wantRows := []bgp.PeerStatus{
		{Address: a("10.0.0.2"), Type: routing.PeerGlobal, State: "Idle", Info: "password file " + missing + ": no such file (BGPPeer over-mesh; session not started)"},
		{Address: a("10.0.0.254"), Type: routing.PeerGlobal, State: "Idle", Info: "password file " + missing + ": no such file (BGPPeer tor; session not started)"},
	}
	if !slices.Equal(refused, wantRows) {
		t.Fatalf("refused:\n got %+v\nwant %+v", refused, wantRows)
	}
	if w, r := refusedSessions(desired(peers[1:2]), peers[1:2], nil, desired); len(w) != 2 || r != nil {
		t.Fatalf("nothing broken: got %v %v", w, r)
	}
}
