package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestPeerRoutes runs two real speakers, A and B, in one iBGP session and
// checks each side's received and advertised lists as the advertisements
// change.
func TestPeerRoutes(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	a.setPeers(t, a.peerOf(b))
	b.setPeers(t, b.peerOf(a))
	a.waitEstablished(t, b)
	b.waitEstablished(t, a)

	steps := []struct {
		name     string
		aAdverts []string
		bAdverts []string
	}{
		{"A one block, B none", []string{"192.168.1.0/26"}, nil},
		{"both advertise", []string{"192.168.1.0/26", "192.168.2.5/32"}, []string{"192.168.3.64/26"}},
		{"A withdraws one", []string{"192.168.2.5/32"}, []string{"192.168.3.64/26"}},
		{"nothing", nil, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			a.advertise(t, a.addr, st.aAdverts...)
			b.advertise(t, b.addr, st.bAdverts...)
			want := map[*node]PeerRoutes{
				a: {Peer: b.addr, Received: prefixes(st.bAdverts), Advertised: prefixes(st.aAdverts)},
				b: {Peer: a.addr, Received: prefixes(st.aAdverts), Advertised: prefixes(st.bAdverts)},
			}
			for n, w := range want {
				waitPeerRoutes(t, n, w)
			}
		})
	}

	if err := a.s.Close(); err != nil {
		t.Fatalf("A Close: %v", err)
	}
	if _, err := a.s.PeerRoutes(context.Background()); err != ErrClosed {
		t.Errorf("PeerRoutes after Close: got %v, want ErrClosed", err)
	}
}

func prefixes(ss []string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// waitPeerRoutes waits until n's PeerRoutes is exactly [want] (UPDATEs take
// a moment to cross).
func waitPeerRoutes(t *testing.T, n *node, want PeerRoutes) {
	t.Helper()
	var got []PeerRoutes
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		got, err = n.s.PeerRoutes(context.Background())
		if err != nil {
			t.Fatalf("%v: PeerRoutes: %v", n.addr, err)
		}
		if len(got) == 1 && got[0].Peer == want.Peer &&
			slices.Equal(got[0].Received, want.Received) && slices.Equal(got[0].Advertised, want.Advertised) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%v: PeerRoutes = %s, want %s", n.addr, fmt.Sprint(got), fmt.Sprint([]PeerRoutes{want}))
}
