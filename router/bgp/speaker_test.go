package bgp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

const podnetASN = 64512

// The tests that run speakers in this process are deliberately not parallel:
// GoBGP's StartBgp writes package-level variables (table.SelectionOptions,
// table.UseMultiplePaths) that every server's goroutines read, so speakers of
// concurrent tests race (see the package comment). Within one test the
// calls into each speaker order those accesses.

// A <-> B, iBGP AS 64512:
//
//	A 127.77.x.a ------ B 127.77.x.b
//	advertises 192.168.1.0/26, 192.168.2.5/32 (next hop A)
func TestIBGPAdvertiseWithdrawClose(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	a.setPeers(t, a.peerOf(b))
	b.setPeers(t, b.peerOf(a))
	a.waitEstablished(t, b)
	pb := b.waitEstablished(t, a)
	if pb.Type != "node-to-node mesh" || pb.Since.IsZero() || time.Since(pb.Since) > time.Minute {
		t.Errorf("B's row for A: got %+v, want type node-to-node mesh and a recent Since", pb)
	}

	a.advertise(t, a.addr, "192.168.1.0/26", "192.168.2.5/32")
	got := b.routes.wait(t, "both of A's prefixes", func(ps []Path) bool { return len(ps) == 2 })
	for _, p := range got {
		if p.NextHop != a.addr || p.Peer != a.addr || len(p.ASPath) != 0 || p.Origin != "IGP" {
			t.Errorf("B learned %+v, want next hop and peer %v, empty AS path (iBGP), origin IGP", p, a.addr)
		}
	}
	if got[0].Prefix.String() != "192.168.1.0/26" || got[1].Prefix.String() != "192.168.2.5/32" {
		t.Errorf("got prefixes %s, want 192.168.1.0/26 and 192.168.2.5/32 in order", prefixesOf(got))
	}
	// A does not report its own originated prefixes as learned routes.
	if cur, _ := a.routes.snapshot(); len(cur) != 0 {
		t.Errorf("A's OnRoutes got %s, want nothing", prefixesOf(cur))
	}

	// The released /32 is withdrawn, the block stays.
	a.advertise(t, a.addr, "192.168.1.0/26")
	got = b.routes.wait(t, "only 192.168.1.0/26", func(ps []Path) bool { return len(ps) == 1 })
	if got[0].Prefix.String() != "192.168.1.0/26" {
		t.Errorf("after withdraw got %s, want 192.168.1.0/26", prefixesOf(got))
	}

	// A stops: B drops A's routes well within the 3 s hold time (A sends
	// Cease on StopBgp).
	start := time.Now()
	if err := a.s.Close(); err != nil {
		t.Fatalf("A Close: %v", err)
	}
	b.routes.wait(t, "A's routes gone", func(ps []Path) bool { return len(ps) == 0 })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("B lost A's routes after %v, want within the 3s hold time", d)
	}
	pb = b.waitPeer(t, a.addr, "down with a reason", func(p PeerStatus) bool { return p.State != "Established" })
	if pb.Info == "" || pb.Info == "Established" {
		t.Errorf("B's row for stopped A: got Info %q, want a reason", pb.Info)
	}
	t.Logf("B's row for stopped A: %+v", pb)
}

// TestNonBestPathsOffered: A and B both announce a prefix to C. C's
// OnRoutes has both paths, GoBGP's best first and marked Best, so that an
// import policy refusing the best one can take the other; when the best
// one goes, the other becomes best.
func TestNonBestPathsOffered(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	c := newNode(t, podnetASN, nil)
	c.setPeers(t, c.peerOf(a), c.peerOf(b))
	a.setPeers(t, a.peerOf(c))
	b.setPeers(t, b.peerOf(c))
	c.waitEstablished(t, a)
	c.waitEstablished(t, b)
	a.advertise(t, a.addr, "192.168.7.0/26")
	b.advertise(t, b.addr, "192.168.7.0/26")
	got := c.routes.wait(t, "both paths", func(ps []Path) bool { return len(ps) == 2 })
	if !got[0].Best || got[1].Best || got[0].Prefix != got[1].Prefix || got[0].Peer == got[1].Peer {
		t.Fatalf("C learned %+v, want two paths for one prefix from A and B, the best first and alone marked", got)
	}
	loser := got[1].Peer
	winner := a
	if winner.addr == loser {
		winner = b
	}
	winner.advertise(t, winner.addr)
	got = c.routes.wait(t, "the other path alone, best now", func(ps []Path) bool { return len(ps) == 1 && ps[0].Best })
	if got[0].Peer != loser {
		t.Fatalf("C learned %+v, want the path from %v", got, loser)
	}
}

// R is a route reflector (cluster 244.0.0.1); A and B are its clients and
// have no session with each other:
//
//	A ---- R ---- B
func TestRouteReflector(t *testing.T) {
	r := newNode(t, podnetASN, func(c *Config) { c.RouteReflectorClusterID = netip.MustParseAddr("244.0.0.1") })
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	pa, pb := r.peerOf(a), r.peerOf(b)
	pa.RRClient, pb.RRClient = true, true
	pa.Type, pb.Type = "node specific", "node specific"
	r.setPeers(t, pa, pb)
	a.setPeers(t, a.peerOf(r))
	b.setPeers(t, b.peerOf(r))
	r.waitEstablished(t, a)
	r.waitEstablished(t, b)

	a.advertise(t, a.addr, "10.244.1.0/26")
	got := b.routes.wait(t, "A's block via R", func(ps []Path) bool { return len(ps) == 1 })
	if p := got[0]; p.Prefix.String() != "10.244.1.0/26" || p.NextHop != a.addr || p.Peer != r.addr || p.Originator != a.addr {
		t.Errorf("B learned %+v, want 10.244.1.0/26 next hop %v (A) from peer %v (R), originator %v (A)", p, a.addr, r.addr, a.addr)
	}
	rs, err := r.s.Peers(context.Background())
	if err != nil || len(rs) != 2 || rs[0].Type != "node specific" || rs[0].Address.Compare(rs[1].Address) >= 0 {
		t.Errorf("R's Peers: got %+v, %v; want two node specific rows sorted by address", rs, err)
	}
}

// A (AS 64512) and C (AS 65001, e.g. a top-of-rack router) over eBGP.
func TestEBGPNextHop(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	c := newNode(t, 65001, nil)
	pc := a.peerOf(c)
	pc.Type = "global"
	a.setPeers(t, pc)
	c.setPeers(t, c.peerOf(a))
	a.waitEstablished(t, c)

	a.advertise(t, a.addr, "10.244.7.0/26")
	c.advertise(t, c.addr, "172.31.0.0/16")
	got := c.routes.wait(t, "A's block", func(ps []Path) bool { return len(ps) == 1 })
	if p := got[0]; p.Prefix.String() != "10.244.7.0/26" || p.NextHop != a.addr || !slices.Equal(p.ASPath, []uint32{podnetASN}) {
		t.Errorf("C learned %+v, want 10.244.7.0/26 next hop %v AS path [64512]", p, a.addr)
	}
	got = a.routes.wait(t, "C's prefix", func(ps []Path) bool { return len(ps) == 1 })
	if p := got[0]; p.NextHop != c.addr || !slices.Equal(p.ASPath, []uint32{65001}) {
		t.Errorf("A learned %+v, want next hop %v AS path [65001]", p, c.addr)
	}
	if row, _ := a.peerStatus(t, c.addr); row.Type != "global" {
		t.Errorf("A's row for C: got type %q, want global", row.Type)
	}
}

func TestPasswordMatch(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	pa, pb := b.peerOf(a), a.peerOf(b)
	pa.Password, pb.Password = "s3cret", "s3cret"
	a.setPeers(t, pb)
	b.setPeers(t, pa)
	a.waitEstablished(t, b)
	b.waitEstablished(t, a)
}

func TestPasswordMismatch(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	pa, pb := b.peerOf(a), a.peerOf(b)
	pa.Password, pb.Password = "one", "two"
	a.setPeers(t, pb)
	b.setPeers(t, pa)
	row := a.waitPeer(t, b.addr, "Info mentions the password", func(p PeerStatus) bool {
		return strings.Contains(p.Info, "password")
	})
	if row.State == "Established" {
		t.Errorf("mismatched passwords: got Established")
	}
	t.Logf("A's row for B: %+v", row)
}

// A is configured with peer AS 65002 but C is AS 65001.
func TestASMismatch(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	c := newNode(t, 65001, nil)
	pc := a.peerOf(c)
	pc.ASN = 65002
	a.setPeers(t, pc)
	c.setPeers(t, c.peerOf(a))
	row := a.waitPeer(t, c.addr, "AS mismatch", func(p PeerStatus) bool { return strings.HasPrefix(p.Info, "AS mismatch") })
	if want := "AS mismatch: peer's AS is not the configured 65002"; row.Info != want {
		t.Errorf("A's Info: got %q, want %q", row.Info, want)
	}
	// GoBGP does not log a NOTIFICATION received before Established, so C
	// can only say that A rejected its OPEN.
	row = c.waitPeer(t, a.addr, "rejected OPEN", func(p PeerStatus) bool { return strings.HasPrefix(p.Info, "Peer rejected our OPEN") })
	if want := "Peer rejected our OPEN (AS mismatch? we announce AS 65001)"; row.Info != want {
		t.Errorf("C's Info: got %q, want %q", row.Info, want)
	}
}

func TestConnectionRefused(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	nobody := newAddr(t)
	a.setPeers(t, Peer{Address: nobody, Port: freePort(t, nobody), ASN: podnetASN, Type: "global"})
	row := a.waitPeer(t, nobody, "Connection refused", func(p PeerStatus) bool { return p.Info == "Connection refused" })
	if row.State == "Established" || row.Type != "global" {
		t.Errorf("got %+v, want a global peer that is not Established", row)
	}
}

// garbagePeer listens on a fresh address and answers every connection with
// msg, then waits for the other side to close. It returns address and port.
func garbagePeer(t *testing.T, msg []byte) (netip.Addr, int) {
	t.Helper()
	g := newAddr(t)
	l, err := net.Listen("tcp", netip.AddrPortFrom(g, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write(msg)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	return g, l.Addr().(*net.TCPAddr).Port
}

// bgpMarker is the all-ones marker that starts every BGP message.
var bgpMarker = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// G accepts BGP connections and answers with a header whose length (5) is
// below the minimum of 19. B keeps its session with A, and A's routes, while
// the session with G keeps failing.
func TestGarbagePeerDoesNotHurtOthers(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	g, gPort := garbagePeer(t, append(slices.Clone(bgpMarker), 0, 5, 1))

	a.setPeers(t, a.peerOf(b))
	b.setPeers(t, b.peerOf(a), Peer{Address: g, Port: gPort, ASN: podnetASN, Type: "global"})
	b.waitEstablished(t, a)
	a.advertise(t, a.addr, "10.244.9.0/26")
	b.routes.wait(t, "A's block", func(ps []Path) bool { return len(ps) == 1 })

	row := b.waitPeer(t, g, "malformed message reason", func(p PeerStatus) bool {
		return strings.HasPrefix(p.Info, "Malformed message from peer")
	})
	if want := "Malformed message from peer: message header error: bad message length"; row.Info != want {
		t.Errorf("B's row for G: got Info %q, want %q", row.Info, want)
	}
	if p, _ := b.peerStatus(t, a.addr); !established(p) {
		t.Errorf("B's session with A after G's garbage: got %+v, want Established", p)
	}
	if cur, _ := b.routes.snapshot(); len(cur) != 1 {
		t.Errorf("B's routes after G's garbage: got %s, want A's block", prefixesOf(cur))
	}
}

func TestSetPeersIdempotentChangeAndRemove(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	c := newNode(t, podnetASN, nil)
	// B dials A throughout, whichever address is lower: the re-added
	// peer below must be passive on A's side (see there).
	ab, ba := a.peerOf(b), b.peerOf(a)
	ab.Passive, ba.Passive = true, false
	a.setPeers(t, ab, a.peerOf(c))
	b.setPeers(t, ba)
	c.setPeers(t, c.peerOf(a))
	before := a.waitEstablished(t, b)
	a.waitEstablished(t, c)
	b.advertise(t, b.addr, "10.244.2.0/26")
	a.routes.wait(t, "B's block", func(ps []Path) bool { return len(ps) == 1 })
	_, calls := a.routes.snapshot()

	// Same set again (different order): nothing is reset.
	a.setPeers(t, a.peerOf(c), ab)
	after, _ := a.peerStatus(t, b.addr)
	if !established(after) || !after.Since.Equal(before.Since) {
		t.Errorf("after idempotent SetPeers: got %+v, want Established since %v", after, before.Since)
	}
	if _, n := a.routes.snapshot(); n != calls {
		t.Errorf("idempotent SetPeers caused %d OnRoutes calls", n-calls)
	}

	// A changed setting re-adds the peer; the session comes back. The
	// re-added peer is passive: B got Cease and sits in Idle for GoBGP's 5 s,
	// closing connections meanwhile, so if both sides dialled they could
	// miss each other for a few rounds (each Idle side refuses the other's
	// attempt). Passive, A just waits for B's dial.
	pb := ab
	pb.Type = "node specific"
	pb.HoldTime = 6 * time.Second
	a.setPeers(t, pb, a.peerOf(c))
	a.waitPeer(t, b.addr, "re-added and Established", func(p PeerStatus) bool {
		return established(p) && p.Type == "node specific"
	})
	a.routes.wait(t, "B's block again", func(ps []Path) bool { return len(ps) == 1 })

	// Removal: B disappears from A's peers, and B sees the session go.
	a.setPeers(t, a.peerOf(c))
	ps, err := a.s.Peers(context.Background())
	if err != nil || len(ps) != 1 || ps[0].Address != c.addr {
		t.Errorf("A's peers after removing B: got %+v, %v; want only C", ps, err)
	}
	a.routes.wait(t, "B's block gone", func(ps []Path) bool { return len(ps) == 0 })
	b.waitPeer(t, a.addr, "down", func(p PeerStatus) bool { return p.State != "Established" })

	// Removing everything.
	a.setPeers(t)
	if ps, _ := a.s.Peers(context.Background()); len(ps) != 0 {
		t.Errorf("A's peers after SetPeers(nil): got %+v", ps)
	}
}

func TestAdvertiseDiffAndNextHopChange(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	a.setPeers(t, a.peerOf(b))
	b.setPeers(t, b.peerOf(a))
	b.waitEstablished(t, a)

	a.advertise(t, netip.Addr{}, "10.244.0.0/26", "10.244.0.64/26", "10.244.0.130/26") // last one is masked to .128/26
	got := b.routes.wait(t, "three blocks", func(ps []Path) bool { return len(ps) == 3 })
	if _, ok := findPath(got, "10.244.0.128/26"); !ok {
		t.Errorf("got %s, want 10.244.0.128/26 (masked)", prefixesOf(got))
	}
	for _, p := range got {
		if p.NextHop != a.addr {
			t.Errorf("zero next hop: got %v for %v, want RouterID %v", p.NextHop, p.Prefix, a.addr)
		}
	}

	// Add one, drop one, keep one, in one call.
	a.advertise(t, netip.Addr{}, "10.244.0.64/26", "10.244.0.128/26", "10.244.0.192/26")
	b.routes.wait(t, ".64 .128 .192", func(ps []Path) bool {
		_, has0 := findPath(ps, "10.244.0.0/26")
		_, has192 := findPath(ps, "10.244.0.192/26")
		return len(ps) == 3 && !has0 && has192
	})

	// A different next hop for the same prefixes replaces the paths.
	nh := netip.MustParseAddr("10.0.0.99")
	a.advertise(t, nh, "10.244.0.64/26")
	got = b.routes.wait(t, "one block via 10.0.0.99", func(ps []Path) bool {
		return len(ps) == 1 && ps[0].NextHop == nh
	})
	if got[0].Prefix.String() != "10.244.0.64/26" {
		t.Errorf("got %s, want 10.244.0.64/26", prefixesOf(got))
	}

	a.advertise(t, netip.Addr{})
	b.routes.wait(t, "nothing", func(ps []Path) bool { return len(ps) == 0 })
}

// GoBGP sends a new session its best paths before the state that decides
// propagation says Established, and a path added in between never reaches
// that peer (resync.go). The speaker therefore sends every session that
// comes up its table again once GoBGP reports it Established. The gap
// cannot be made to happen from here (with a sleep put into GoBGP's gap, an
// Advertise made in it reached the peer only with the resync), and GoBGP
// may merge a table and its resync into one UPDATE; so after the session's
// own resync, the test forges one more up event, and G must get the whole
// table again.
func TestResyncSendsTable(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	a.advertise(t, a.addr, "10.244.5.0/26")
	g, routes := routeStreamPeer(t)
	a.setPeers(t, Peer{Address: g.addr, Port: g.port, ASN: podnetASN, Type: "global"})
	expectRoutes(t, routes, "+10.244.5.0/26")
	settleResync(t, a, routes, 1, "10.244.5.0/26", "10.244.9.0/26")

	forgeUp(a, g.addr, time.Now())
	expectRouteSet(t, routes, "+10.244.5.0/26", "+10.244.9.0/26")
	if p, _ := a.peerStatus(t, g.addr); !established(p) {
		t.Errorf("A's session with G after the resync: got %+v, want Established", p)
	}
}

// A withdrawal made in the same gap is lost too, and the resync repairs it
// by announcing and withdrawing the prefix once more, for prefixes
// withdrawn after the session's up event only. The test forges what the
// speaker would see after such a gap: an up event of G's session dated
// before a withdrawal.
func TestResyncRepeatsWithdrawals(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	a.advertise(t, a.addr, "10.244.6.0/26", "10.244.7.0/26")
	g, routes := routeStreamPeer(t)
	a.setPeers(t, Peer{Address: g.addr, Port: g.port, ASN: podnetASN, Type: "global"})
	expectRouteSet(t, routes, "+10.244.6.0/26", "+10.244.7.0/26")
	settleResync(t, a, routes, 1, "10.244.6.0/26", "10.244.7.0/26", "10.244.9.0/26")

	// Up before the withdrawal: the withdrawal may be missing, and is sent
	// again after the table.
	upBefore := time.Now()
	a.advertise(t, a.addr, "10.244.7.0/26", "10.244.9.0/26")
	expectRoutes(t, routes, "-10.244.6.0/26")
	forgeUp(a, g.addr, upBefore)
	// The table, and .6 announced and withdrawn. GoBGP may merge these
	// into fewer UPDATEs, which leaves the withdrawal only and puts it
	// first; an announcement of .6 after its withdrawal would be the bug.
	var got []string
	for !slices.Contains(got, "-10.244.6.0/26") || !slices.Contains(got, "+10.244.7.0/26") || !slices.Contains(got, "+10.244.9.0/26") {
		select {
		case e := <-routes:
			got = append(got, e)
		case <-time.After(waitTimeout):
			t.Fatalf("peer got %q, then nothing for %v; want .7 and .9 announced and .6 withdrawn", got, waitTimeout)
		}
	}
	if i := slices.Index(got, "+10.244.6.0/26"); len(got) > 4 || (i >= 0 && i > slices.Index(got, "-10.244.6.0/26")) {
		t.Fatalf("peer got %q, want .7 and .9 announced and .6 withdrawn (announced at most once, before)", got)
	}

	// Up after it: the table only. The resync noted its own withdrawal of
	// .6 as it finished (it can fall into another session's gap too), so
	// the new up time is taken after that pass: the marker .10 is announced
	// only once it is over, since Advertise and the resync hold the
	// speaker's lock. Likewise .11 comes after anything the next resync
	// sent, since GoBGP sends in order.
	settleResync(t, a, routes, 2, "10.244.7.0/26", "10.244.9.0/26", "10.244.10.0/26")
	forgeUp(a, g.addr, time.Now())
	expectRouteSet(t, routes, "+10.244.7.0/26", "+10.244.9.0/26", "+10.244.10.0/26")
	settleResync(t, a, routes, 3, "10.244.7.0/26", "10.244.9.0/26", "10.244.10.0/26", "10.244.11.0/26")
}

// Not parallel either: the goroutine comparison must not see other tests'
// speakers start or stop.
func TestCloseIdempotentNoLeak(t *testing.T) {
	before := goroutines()
	func() {
		a := newNode(t, podnetASN, nil)
		b := newNode(t, podnetASN, nil)
		a.setPeers(t, a.peerOf(b))
		b.setPeers(t, b.peerOf(a))
		b.waitEstablished(t, a)
		a.advertise(t, a.addr, "10.244.3.0/26")
		b.routes.wait(t, "A's block", func(ps []Path) bool { return len(ps) == 1 })

		for _, n := range []*node{a, b} {
			if err := n.s.Close(); err != nil {
				t.Errorf("first Close: %v", err)
			}
			if err := n.s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		}
		ctx := context.Background()
		if err := a.s.SetPeers(ctx, nil); !errors.Is(err, ErrClosed) {
			t.Errorf("SetPeers after Close: got %v, want ErrClosed", err)
		}
		if err := a.s.Advertise(ctx, nil, netip.Addr{}); !errors.Is(err, ErrClosed) {
			t.Errorf("Advertise after Close: got %v, want ErrClosed", err)
		}
		if _, err := a.s.Peers(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("Peers after Close: got %v, want ErrClosed", err)
		}
	}()

	// Two FSMs ended: A's for B and B's for A.
	waitNoLeak(t, before, 2)
}

func TestConfigValidation(t *testing.T) {
	onRoutes := func([]Path) {}
	rid := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no router id", Config{ASN: 1, OnRoutes: onRoutes}, "RouterID"},
		{"ipv6 router id", Config{RouterID: netip.MustParseAddr("::1"), ASN: 1, OnRoutes: onRoutes}, "RouterID"},
		{"no asn", Config{RouterID: rid, OnRoutes: onRoutes}, "ASN"},
		{"no OnRoutes", Config{RouterID: rid, ASN: 1}, "OnRoutes"},
		{"bad port", Config{RouterID: rid, ASN: 1, OnRoutes: onRoutes, ListenPort: 70000}, "ListenPort"},
		{"v6 cluster id", Config{RouterID: rid, ASN: 1, OnRoutes: onRoutes, RouteReflectorClusterID: netip.MustParseAddr("::2")}, "RouteReflectorClusterID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(context.Background(), tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("got no error, want one mentioning %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestSetPeersValidation(t *testing.T) {
	a := newNode(t, podnetASN, func(c *Config) { c.ListenPort = -1 })
	other := netip.MustParseAddr("127.77.250.1")
	good := Peer{Address: other, ASN: podnetASN}
	tests := []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"no address", []Peer{{ASN: 1}}, "IPv4"},
		{"ipv6", []Peer{{Address: netip.MustParseAddr("::1"), ASN: 1}}, "IPv4"},
		{"no asn", []Peer{{Address: other}}, "ASN"},
		{"bad port", []Peer{{Address: other, ASN: 1, Port: 65536}}, "Port"},
		{"short hold", []Peer{{Address: other, ASN: 1, HoldTime: 2 * time.Second}}, "HoldTime"},
		{"fractional", []Peer{{Address: other, ASN: 1, HoldTime: 3500 * time.Millisecond}}, "whole seconds"},
		{"rr client without cluster", []Peer{{Address: other, ASN: podnetASN, RRClient: true}}, "RouteReflectorClusterID"},
		{"duplicate", []Peer{good, good}, "twice"},
		{"ourselves", []Peer{{Address: a.addr, ASN: 1}}, "own router ID"},
	}
	// Each bad peer comes with a good one (another address but for the
	// duplicate): the bad one is refused and reported, the good one
	// still applied.
	good2 := Peer{Address: netip.MustParseAddr("127.77.250.2"), ASN: podnetASN}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := good2
			if tt.name == "duplicate" {
				want = good
			}
			err := a.s.SetPeers(context.Background(), append(slices.Clone(tt.peers), good2))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.want)
			}
			ps, _ := a.s.Peers(context.Background())
			if tt.name == "duplicate" {
				if len(ps) != 2 || ps[0].Address != good.Address {
					t.Errorf("peers %+v, want %v once and %v", ps, good.Address, good2.Address)
				}
				return
			}
			if len(ps) != 1 || ps[0].Address != want.Address {
				t.Errorf("peers %+v, want only %v", ps, want.Address)
			}
		})
	}
	if err := a.s.Advertise(context.Background(), []netip.Prefix{netip.MustParsePrefix("fd00::/64")}, netip.Addr{}); err == nil {
		t.Errorf("Advertise of an IPv6 prefix: got no error")
	}
}

// G misbehaves by sending a BGP header of unknown message type 9, the
// message that made GoBGP v3.37.0 dereference nil and kill the process
// (osrg/gobgp#3325). B must survive it in every session state: it answers
// with a NOTIFICATION, shows why in G's row, and its session with A neither
// flaps nor loses A's routes. (Under v3 the first case killed the test
// binary.)
//
//	A ---- B ---- G (AS 64512, misbehaving)
func TestMisbehavingPeer(t *testing.T) {
	const wantInfo = "Malformed message from peer: message header error: bad message type"
	tests := []struct {
		name string
		// start starts G against B. gUp is closed once B reports G
		// Established (only when needsUp). passive means B must not dial G.
		start   func(t *testing.T, b *node, gUp <-chan struct{}) *fakePeer
		needsUp bool
		passive bool
	}{
		{name: "answers our OPEN with type 9", start: func(t *testing.T, b *node, _ <-chan struct{}) *fakePeer {
			return listeningFakePeer(t, func(g *fakePeer, c net.Conn) error {
				if err := expectMsg(c, bgppkt.BGP_MSG_OPEN); err != nil {
					return err
				}
				return g.sendUnknownType(c)
			})
		}},
		{name: "sends type 9 once Established", needsUp: true, start: func(t *testing.T, b *node, gUp <-chan struct{}) *fakePeer {
			return listeningFakePeer(t, func(g *fakePeer, c net.Conn) error {
				if err := expectMsg(c, bgppkt.BGP_MSG_OPEN); err != nil {
					return err
				}
				if err := writeRaw(c, openMsg(t, podnetASN, g.addr), keepaliveMsg(t)); err != nil {
					return err
				}
				if err := expectMsg(c, bgppkt.BGP_MSG_KEEPALIVE); err != nil {
					return err
				}
				select {
				case <-gUp:
				case <-g.done:
					return nil // the test failed waiting for Established
				}
				return g.sendUnknownType(c)
			})
		}},
		{name: "dials in with type 9 instead of OPEN", passive: true, start: func(t *testing.T, b *node, _ <-chan struct{}) *fakePeer {
			return dialingFakePeer(t, netip.AddrPortFrom(b.addr, uint16(b.port)), func(g *fakePeer, c net.Conn) error {
				return g.sendUnknownType(c)
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newNode(t, podnetASN, nil)
			b := newNode(t, podnetASN, nil)
			a.setPeers(t, a.peerOf(b))
			b.setPeers(t, b.peerOf(a))
			a.advertise(t, a.addr, "10.244.9.0/26")
			before := b.waitEstablished(t, a)
			aBefore := a.waitEstablished(t, b)
			b.routes.wait(t, "A's block", func(ps []Path) bool { return len(ps) == 1 })
			_, calls := b.routes.snapshot()

			gUp := make(chan struct{})
			g := tt.start(t, b, gUp)
			// Port 0 (179) for the dialling G: B is passive and never uses it.
			b.setPeers(t, b.peerOf(a), Peer{Address: g.addr, Port: g.port, ASN: podnetASN, Type: "global", Passive: tt.passive})
			if tt.needsUp {
				b.waitPeer(t, g.addr, "G Established", established)
				close(gUp)
			}

			row := b.waitPeer(t, g.addr, "malformed message reason", func(p PeerStatus) bool { return p.Info == wantInfo })
			if row.State == "Established" || row.Type != "global" {
				t.Errorf("B's row for G: got %+v, want a global peer that is not Established", row)
			}
			if g.sent.Load() == 0 {
				t.Errorf("G never sent its message, yet B reports %q", row.Info)
			}
			t.Logf("B's row for G: %+v", row)

			if p, _ := b.peerStatus(t, a.addr); !established(p) || !p.Since.Equal(before.Since) {
				t.Errorf("B's session with A after G: got %+v, want Established since %v (no flap)", p, before.Since)
			}
			if p, _ := a.peerStatus(t, b.addr); !established(p) || !p.Since.Equal(aBefore.Since) {
				t.Errorf("A's session with B after G: got %+v, want Established since %v (no flap)", p, aBefore.Since)
			}
			if cur, n := b.routes.snapshot(); len(cur) != 1 || n != calls {
				t.Errorf("B's routes after G: got %s after %d more OnRoutes calls, want A's block and none", prefixesOf(cur), n-calls)
			}
		})
	}
}

// New fails when one of its listen addresses is taken, and leaves nothing
// behind: the listener it had already opened is closed and no GoBGP
// goroutine is left running.
func TestNewFailureLeavesNothing(t *testing.T) {
	before := goroutines()
	x, y := newAddr(t), newAddr(t)
	port := freePort(t, x)
	taken, err := net.Listen("tcp", netip.AddrPortFrom(y, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	s, err := New(context.Background(), Config{
		RouterID: x, ASN: podnetASN, ListenPort: port, ListenAddrs: []netip.Addr{x, y},
		Logger: testLogger(t), OnRoutes: func([]Path) {},
	})
	if err == nil {
		s.Close()
		t.Fatalf("New with %v:%d taken: got no error", y, port)
	}
	if !strings.Contains(err.Error(), "start speaker") {
		t.Errorf("got %v, want it to name the start", err)
	}
	l, err := net.Listen("tcp", netip.AddrPortFrom(x, uint16(port)).String())
	if err != nil {
		t.Errorf("%v:%d still taken after New failed: %v", x, port, err)
	} else {
		l.Close()
	}
	waitNoLeak(t, before, 0) // no session was ever configured
}

// freezer is a TCP relay that can stop delivering bytes while keeping both
// connections open: a peer that hangs without closing its socket.
type freezer struct {
	l      net.Listener
	frozen atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn // guarded by mu
}

// newFreezer relays connections accepted on a fresh address to target,
// dialling from `from` (GoBGP accepts sessions only from a configured
// neighbor address).
func newFreezer(t *testing.T, from netip.Addr, target netip.AddrPort) (*freezer, netip.AddrPort) {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(newAddr(t), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l}
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c1, err := l.Accept()
			if err != nil {
				return
			}
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
			c2, err := d.Dial("tcp", target.String())
			if err != nil {
				c1.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c1, c2)
			f.mu.Unlock()
			f.wg.Add(2)
			go f.pipe(c1, c2)
			go f.pipe(c2, c1)
		}
	}()
	return f, l.Addr().(*net.TCPAddr).AddrPort()
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	defer func() {
		// A frozen relay does not pass on a close either (Cleanup closes
		// everything).
		if !f.frozen.Load() {
			dst.Close()
		}
	}()
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if f.frozen.Load() {
			continue // swallow: the peer looks alive at TCP level but says nothing
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// B reaches A through a relay that then goes silent: B drops A's routes
// when the 3 s hold timer expires, and says so.
//
//	B --> relay P --(from B's address)--> A (passive towards B)
func TestHoldTimerExpiry(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	relay, p := newFreezer(t, b.addr, netip.AddrPortFrom(a.addr, uint16(a.port)))
	pb := a.peerOf(b)
	pb.Passive = true // only B's relayed connection may reach A
	a.setPeers(t, pb)
	b.setPeers(t, Peer{Address: p.Addr(), Port: int(p.Port()), ASN: podnetASN, Type: "global",
		KeepaliveTime: time.Second, HoldTime: 3 * time.Second})
	b.waitPeer(t, p.Addr(), "Established", established)
	a.advertise(t, a.addr, "10.244.5.0/26")
	got := b.routes.wait(t, "A's block", func(ps []Path) bool { return len(ps) == 1 })
	if got[0].NextHop != a.addr || got[0].Peer != p.Addr() {
		t.Errorf("B learned %+v, want next hop %v (A) from peer %v (relay)", got[0], a.addr, p.Addr())
	}

	start := time.Now()
	relay.frozen.Store(true)
	b.routes.wait(t, "A's block gone", func(ps []Path) bool { return len(ps) == 0 })
	if d := time.Since(start); d < 2*time.Second || d > 6*time.Second {
		t.Errorf("routes dropped %v after the peer went silent, want about the 3s hold time", d)
	}
	row := b.waitPeer(t, p.Addr(), "hold timer reason", func(p PeerStatus) bool { return p.State != "Established" })
	if row.Info != "Hold timer expired" {
		t.Errorf("B's row: got Info %q, want %q", row.Info, "Hold timer expired")
	}
}

// TestMaxPathsPerPeer: a peer that sends more paths than the speaker
// keeps from one peer loses its session (Cease, maximum number of
// prefixes reached), with the reason in the speaker's row for it, and
// the speaker keeps none of them. After PrefixLimitRetry the session is
// tried again, and a peer that sends fewer now is back.
func TestMaxPathsPerPeer(t *testing.T) {
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, func(c *Config) { c.MaxPathsPerPeer, c.PrefixLimitRetry = 5, time.Second })
	a.setPeers(t, a.peerOf(b))
	b.setPeers(t, b.peerOf(a))
	b.waitEstablished(t, a)
	a.advertise(t, a.addr, "192.168.1.0/26", "192.168.2.0/26", "192.168.3.0/26", "192.168.4.0/26", "192.168.5.0/26", "192.168.6.0/26")
	row := b.waitPeer(t, a.addr, "session torn down for too many prefixes", func(p PeerStatus) bool {
		return p.State != "Established" && strings.Contains(strings.ToLower(p.Info), "prefix")
	})
	t.Logf("B's row for A: %+v", row)
	b.routes.wait(t, "none of A's paths", func(ps []Path) bool { return len(ps) == 0 })
	a.advertise(t, a.addr, "192.168.1.0/26", "192.168.2.0/26", "192.168.3.0/26")
	b.waitEstablished(t, a)
	b.routes.wait(t, "A's three paths after the retry", func(ps []Path) bool { return len(ps) == 3 })
}

// R reflects for clients A and B and has an eBGP neighbour C; its export
// filter passes on only what lies in 10.244.0.0/16:
//
//	A ---- R ---- B
//	       |
//	       C (AS 65001)
//
// A's 203.0.113.0/24 (announced first, so that it would arrive before
// the block if it were passed on) reaches neither B nor C; widening the
// filter passes it on to the sessions already up, and an empty filter
// passes nothing.
func TestExportFilter(t *testing.T) {
	r := newNode(t, podnetASN, func(c *Config) { c.RouteReflectorClusterID = netip.MustParseAddr("244.0.0.1") })
	a := newNode(t, podnetASN, nil)
	b := newNode(t, podnetASN, nil)
	c := newNode(t, 65001, nil)
	ctx := context.Background()
	pool := netip.MustParsePrefix("10.244.0.0/16")
	if err := r.s.SetExportFilter(ctx, []netip.Prefix{pool}); err != nil {
		t.Fatal(err)
	}
	pa, pb, pc := r.peerOf(a), r.peerOf(b), r.peerOf(c)
	pa.RRClient, pb.RRClient = true, true
	r.setPeers(t, pa, pb, pc)
	a.setPeers(t, a.peerOf(r))
	b.setPeers(t, b.peerOf(r))
	c.setPeers(t, c.peerOf(r))
	for _, n := range []*node{a, b, c} {
		r.waitEstablished(t, n)
	}

	a.advertise(t, a.addr, "203.0.113.0/24")
	a.advertise(t, a.addr, "203.0.113.0/24", "10.244.1.0/26")
	has := func(ps []Path, prefix string) bool {
		return slices.ContainsFunc(ps, func(p Path) bool { return p.Prefix.String() == prefix })
	}
	for _, n := range []*node{b, c} {
		got := n.routes.wait(t, "A's block via R", func(ps []Path) bool { return has(ps, "10.244.1.0/26") })
		if has(got, "203.0.113.0/24") || len(got) != 1 {
			t.Errorf("%v learned %+v through R, want only 10.244.1.0/26", n.addr, got)
		}
	}
	// R's own table is fed by its watch, which may lag behind what it
	// has already passed on to b and c.
	r.routes.wait(t, "R itself learns 203.0.113.0/24", func(ps []Path) bool { return has(ps, "203.0.113.0/24") })

	if err := r.s.SetExportFilter(ctx, []netip.Prefix{pool, netip.MustParsePrefix("203.0.113.0/24")}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{b, c} {
		n.routes.wait(t, "203.0.113.0/24 once the filter takes it", func(ps []Path) bool { return has(ps, "203.0.113.0/24") && has(ps, "10.244.1.0/26") })
	}
	if err := r.s.SetExportFilter(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{b, c} {
		n.routes.wait(t, "nothing once the filter is empty", func(ps []Path) bool { return len(ps) == 0 })
	}
	if err := r.s.SetExportFilter(ctx, []netip.Prefix{netip.MustParsePrefix("fd00::/64")}); err == nil {
		t.Error("an IPv6 prefix in the export filter: no error")
	}
}
