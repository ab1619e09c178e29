package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Tests run real GoBGP sessions over TCP on loopback. Every speaker gets its
// own address in 127.77.0.0/16 (Linux routes all of 127/8 to lo) and a free
// port, so tests can run in parallel with each other and with other
// packages' tests.

// waitTimeout bounds every wait on a session or route event. Sessions come
// up 1-2 s after the peers are added (GoBGP's first connect waits a random
// 1-2 s); -race makes everything slower.
const waitTimeout = 20 * time.Second

var nextAddr atomic.Uint32

func newAddr(t *testing.T) netip.Addr {
	n := nextAddr.Add(1)
	if n >= 250*250 {
		t.Fatal("out of test addresses")
	}
	return netip.AddrFrom4([4]byte{127, 77, byte(n / 250), byte(n%250 + 1)})
}

// freePort returns a TCP port that was free on addr a moment ago.
func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("find free port on %v: %v", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// routeLog records OnRoutes calls.
type routeLog struct {
	t       *testing.T
	inCall  atomic.Bool
	mu      sync.Mutex
	cur     []Path // guarded by mu
	calls   int    // guarded by mu
	changed chan struct{}
}

func newRouteLog(t *testing.T) *routeLog {
	return &routeLog{t: t, changed: make(chan struct{}, 1)}
}

func (r *routeLog) onRoutes(p []Path) {
	if !r.inCall.CompareAndSwap(false, true) {
		r.t.Error("OnRoutes called concurrently")
	}
	defer r.inCall.Store(false)
	r.mu.Lock()
	r.cur = p
	r.calls++
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *routeLog) snapshot() ([]Path, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, r.calls
}

// wait blocks until cond holds for the latest route set.
func (r *routeLog) wait(t *testing.T, desc string, cond func([]Path) bool) []Path {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		cur, _ := r.snapshot()
		if cond(cur) {
			return cur
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for routes: %s; last set: %v", desc, cur)
		}
	}
}

type node struct {
	s      *Speaker
	addr   netip.Addr
	port   int
	asn    uint32
	routes *routeLog
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func newNode(t *testing.T, asn uint32, mod func(*Config)) *node {
	t.Helper()
	n := &node{addr: newAddr(t), asn: asn, routes: newRouteLog(t)}
	n.port = freePort(t, n.addr)
	cfg := Config{
		RouterID:    n.addr,
		ASN:         asn,
		ListenPort:  n.port,
		ListenAddrs: []netip.Addr{n.addr},
		Logger:      testLogger(t),
		OnRoutes:    n.routes.onRoutes,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New(%v AS %d): %v", n.addr, asn, err)
	}
	n.s = s
	t.Cleanup(func() { s.Close() })
	return n
}

// peerOf describes o as a peer of n, with short timers.
// peerOf is o as n's mesh peer, configured the way podnet configures its
// mesh (routing.DesiredPeers): only the lower address of a pair dials. With
// both ends dialling, gobgp v4.8.0 resolves the collision with a data
// race (fsmHandler.recvMessageWithError reads fsm fields that stateChange
// writes) and can leave a goroutine behind, which fails tests about
// something else under -race. A test that needs a given end to dial sets
// Passive itself.
func (n *node) peerOf(o *node) Peer {
	return Peer{
		Address:       o.addr,
		Port:          o.port,
		ASN:           o.asn,
		Type:          "node-to-node mesh",
		KeepaliveTime: time.Second,
		HoldTime:      3 * time.Second,
		Passive:       n.addr.Compare(o.addr) > 0,
	}
}

func (n *node) setPeers(t *testing.T, peers ...Peer) {
	t.Helper()
	if err := n.s.SetPeers(context.Background(), peers); err != nil {
		t.Fatalf("%v: SetPeers: %v", n.addr, err)
	}
}

func (n *node) advertise(t *testing.T, nh netip.Addr, prefixes ...string) {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	if err := n.s.Advertise(context.Background(), ps, nh); err != nil {
		t.Fatalf("%v: Advertise(%v): %v", n.addr, prefixes, err)
	}
}

// peerStatus returns n's status row for addr.
func (n *node) peerStatus(t *testing.T, addr netip.Addr) (PeerStatus, bool) {
	t.Helper()
	ps, err := n.s.Peers(context.Background())
	if err != nil {
		t.Fatalf("%v: Peers: %v", n.addr, err)
	}
	for _, p := range ps {
		if p.Address == addr {
			return p, true
		}
	}
	return PeerStatus{}, false
}

// waitPeer polls n's view of addr until cond holds. Peer state has no
// public change notification, so this is a condition poll, not a sleep.
func (n *node) waitPeer(t *testing.T, addr netip.Addr, desc string, cond func(PeerStatus) bool) PeerStatus {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		p, ok := n.peerStatus(t, addr)
		if ok && cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: timed out waiting for peer %v: %s; last status %+v (found %v)", n.addr, addr, desc, p, ok)
		}
		<-tick.C
	}
}

func established(p PeerStatus) bool { return p.State == "Established" && p.Info == "Established" }

func (n *node) waitEstablished(t *testing.T, o *node) PeerStatus {
	t.Helper()
	return n.waitPeer(t, o.addr, "Established", established)
}

func findPath(ps []Path, prefix string) (Path, bool) {
	want := netip.MustParsePrefix(prefix)
	for _, p := range ps {
		if p.Prefix == want {
			return p, true
		}
	}
	return Path{}, false
}

func prefixesOf(ps []Path) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("%v via %v from %v", p.Prefix, p.NextHop, p.Peer))
	}
	return strings.Join(s, ", ")
}

// goroutines returns the stacks of all goroutines by id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(g, " [")
		out[id] = g
	}
	return out
}

// leaked returns goroutines that exist now but not in before.
func leaked(before map[string]string) []string {
	var out []string
	for id, g := range goroutines() {
		if _, ok := before[id]; !ok {
			out = append(out, g)
		}
	}
	return out
}

// waitNoLeak fails t unless every goroutine started since before has ended.
// GoBGP's watcher and channel goroutines end asynchronously once the watch
// context is cancelled; they get a moment.
//
// One leftover is GoBGP's, not ours, and up to sessions of them are
// tolerated (and logged): when a peer's FSM ends (the peer removed or the
// speaker stopped), GoBGP v4.8.0 closes the peer's outgoing
// InfiniteChannel and drains it without blocking (cleanInfiniteChannel),
// which returns before the channel's buffer goroutine, woken by the close,
// is ready to hand anything over; with any message still queued that
// goroutine stays blocked on its output for good. Nothing outside GoBGP
// can reach that channel. Any other goroutine, or more of these than FSMs
// ended, fails the test.
func waitNoLeak(t *testing.T, before map[string]string, sessions int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ours, gobgps []string
		for _, g := range leaked(before) {
			if abandonedOutgoing(g) {
				gobgps = append(gobgps, g)
			} else {
				ours = append(ours, g)
			}
		}
		if len(ours) == 0 && len(gobgps) <= sessions {
			if len(gobgps) > 0 {
				t.Logf("%d GoBGP FSM channel goroutines left behind by GoBGP's own close (tolerated, at most %d)", len(gobgps), sessions)
			}
			return
		}
		if time.Now().After(deadline) {
			l := append(ours, gobgps...)
			t.Fatalf("%d goroutines left behind (%d of them GoBGP channel buffers, at most %d tolerated):\n%s",
				len(l), len(gobgps), sessions, strings.Join(l, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// abandonedOutgoing reports whether stack g is an InfiniteChannel buffer
// goroutine blocked with items no one will read (see waitNoLeak).
func abandonedOutgoing(g string) bool {
	_, frames, _ := strings.Cut(g, "\n")
	return strings.HasPrefix(frames, "github.com/eapache/channels.(*InfiniteChannel).infiniteBuffer(")
}

// fakePeer is a scripted BGP neighbor on a fresh loopback address, for
// peers that misbehave in ways a real speaker cannot be made to.
type fakePeer struct {
	addr netip.Addr
	port int           // listening port; 0 for a dialling fakePeer
	sent atomic.Int32  // unknown-type messages written
	done chan struct{} // closed when the test ends

	wg   sync.WaitGroup
	mu   sync.Mutex
	open []io.Closer // guarded by mu: listener and connections, closed at the end of the test
}

func newFakePeer(t *testing.T) *fakePeer {
	g := &fakePeer{addr: newAddr(t), done: make(chan struct{})}
	t.Cleanup(func() {
		close(g.done)
		g.mu.Lock()
		for _, c := range g.open {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

// serve runs script on c, then keeps c open and silent (reading and
// discarding) until the other side or the test closes it, so that the
// speaker's reason for this peer stays the one the script caused.
func (g *fakePeer) serve(t *testing.T, c net.Conn, script func(*fakePeer, net.Conn) error) {
	defer g.wg.Done()
	defer c.Close()
	g.mu.Lock()
	g.open = append(g.open, c)
	g.mu.Unlock()
	if script != nil {
		if err := script(g, c); err != nil {
			select {
			case <-g.done: // the test is over; errors are expected now
			default:
				t.Errorf("fake peer %v: %v", g.addr, err)
			}
			return
		}
	}
	io.Copy(io.Discard, c)
}

// listeningFakePeer accepts connections; the first one gets script, later
// ones are kept silent.
func listeningFakePeer(t *testing.T, script func(*fakePeer, net.Conn) error) *fakePeer {
	t.Helper()
	g := newFakePeer(t)
	l, err := net.Listen("tcp", netip.AddrPortFrom(g.addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	g.port = l.Addr().(*net.TCPAddr).Port
	g.mu.Lock()
	g.open = append(g.open, l)
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for first := true; ; first = false {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s := script
			if !first {
				s = nil
			}
			g.wg.Add(1)
			go g.serve(t, c, s)
		}
	}()
	return g
}

// dialingFakePeer connects to target from its own address and runs script
// on the connection. A speaker that is not yet ready for this neighbour
// closes the connection without a word, as GoBGP does before the peer's
// FSM has left Idle; like a real speaker, the fake peer then dials again
// until the other side answers (or the test ends).
func dialingFakePeer(t *testing.T, target netip.AddrPort, script func(*fakePeer, net.Conn) error) *fakePeer {
	t.Helper()
	g := newFakePeer(t)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(g.addr, 0)), Timeout: waitTimeout}
			c, err := d.Dial("tcp", target.String())
			if err != nil {
				t.Errorf("fake peer %v: dial %v: %v", g.addr, target, err)
				return
			}
			g.mu.Lock()
			g.open = append(g.open, c)
			g.mu.Unlock()
			if err := script(g, c); err != nil {
				c.Close()
				select {
				case <-g.done:
				default:
					t.Errorf("fake peer %v: %v", g.addr, err)
				}
				return
			}
			n, _ := io.Copy(io.Discard, c) // the answer, if any, until B closes
			c.Close()
			if n > 0 {
				return
			}
			select {
			case <-g.done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return g
}

// unknownTypeMsg is a well-formed BGP header (all-ones marker, length 19)
// of message type 9, which no RFC defines.
var unknownTypeMsg = append(slices.Clone(bgpMarker), 0, 19, 9)

// sendUnknownType writes unknownTypeMsg and counts it.
func (g *fakePeer) sendUnknownType(c net.Conn) error {
	if err := writeRaw(c, unknownTypeMsg); err != nil {
		return err
	}
	g.sent.Add(1)
	return nil
}

func writeRaw(c net.Conn, msgs ...[]byte) error {
	for _, m := range msgs {
		if _, err := c.Write(m); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

// readMsg reads one BGP message and returns its type.
func readMsg(c net.Conn) (uint8, error) {
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	defer c.SetReadDeadline(time.Time{})
	msg, err := readRawMsg(c)
	if err != nil {
		return 0, err
	}
	return msg[18], nil
}

// readRawMsg reads one BGP message whole, header included. It waits as
// long as the connection is open.
func readRawMsg(c net.Conn) ([]byte, error) {
	hdr := make([]byte, bgppkt.BGP_HEADER_LENGTH)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	n := int(hdr[16])<<8 | int(hdr[17])
	if n < bgppkt.BGP_HEADER_LENGTH {
		return nil, fmt.Errorf("message length %d", n)
	}
	msg := append(hdr, make([]byte, n-bgppkt.BGP_HEADER_LENGTH)...)
	if _, err := io.ReadFull(c, msg[bgppkt.BGP_HEADER_LENGTH:]); err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return msg, nil
}

// routeStreamPeer is a scripted peer that listens, brings up the session
// it is dialled for, and then reports every prefix announced to it
// ("+10.244.5.0/26") or withdrawn ("-10.244.5.0/26"), in order of arrival.
func routeStreamPeer(t *testing.T) (*fakePeer, <-chan string) {
	t.Helper()
	events := make(chan string, 1024)
	g := listeningFakePeer(t, func(g *fakePeer, c net.Conn) error {
		if err := expectMsg(c, bgppkt.BGP_MSG_OPEN); err != nil {
			return err
		}
		if err := writeRaw(c, openMsg(t, podnetASN, g.addr), keepaliveMsg(t)); err != nil {
			return err
		}
		for {
			raw, err := readRawMsg(c)
			if err != nil {
				return err
			}
			m, err := bgppkt.ParseBGPMessage(raw)
			if err != nil {
				return err
			}
			u, ok := m.Body.(*bgppkt.BGPUpdate)
			if !ok {
				continue
			}
			for _, w := range u.WithdrawnRoutes {
				events <- "-" + w.NLRI.String()
			}
			for _, n := range u.NLRI {
				events <- "+" + n.NLRI.String()
			}
		}
	})
	return g, events
}

// expectRoutes reads the next len(want) events of a routeStreamPeer and
// fails unless they are want, in order.
func expectRoutes(t *testing.T, events <-chan string, want ...string) {
	t.Helper()
	if got := nextRoutes(t, events, want, ""); !slices.Equal(got, want) {
		t.Fatalf("peer got %q, want %q", got, want)
	}
}

// expectRouteSet is expectRoutes for events that may come in any order
// (the prefixes of one table, which GoBGP sends in map order).
func expectRouteSet(t *testing.T, events <-chan string, want ...string) {
	t.Helper()
	got := nextRoutes(t, events, want, " in any order")
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("peer got %q, want %q in any order", got, want)
	}
}

// nextRoutes reads len(want) events, failing if one does not come in time.
func nextRoutes(t *testing.T, events <-chan string, want []string, order string) []string {
	t.Helper()
	var got []string
	for range want {
		select {
		case e := <-events:
			got = append(got, e)
		case <-time.After(waitTimeout):
			t.Fatalf("peer got %q, then nothing for %v; want %q%s", got, waitTimeout, want, order)
		}
	}
	return got
}

// settleResync waits until n's speaker has resynced `resyncs` sessions,
// then advertises prefixes (the last one new, a marker) and reads the
// peer's events up to the marker's announcement. Whatever the resync sent
// is then behind the test: GoBGP queues a session's messages in order, and
// may merge a table and its resync into one UPDATE, so their count is not
// known.
func settleResync(t *testing.T, n *node, events <-chan string, resyncs int64, prefixes ...string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for n.s.resyncs.Load() < resyncs {
		if time.Now().After(deadline) {
			t.Fatalf("%v: %d sessions resynced after %v, want %d", n.addr, n.s.resyncs.Load(), waitTimeout, resyncs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	n.advertise(t, n.addr, prefixes...)
	marker := "+" + prefixes[len(prefixes)-1]
	for {
		select {
		case e := <-events:
			if e == marker {
				return
			}
			if !slices.Contains(prefixes, e[1:]) || e[0] != '+' {
				t.Fatalf("peer got %q while settling, want only announcements of %q", e, prefixes)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("peer did not get %q within %v", marker, waitTimeout)
		}
	}
}

// forgeUp makes n's speaker see a new up event of addr's session, dated at:
// what it would see after GoBGP's gap, which cannot be made to happen from
// here.
func forgeUp(n *node, addr netip.Addr, at time.Time) {
	n.s.obs.stateChanged(addr, "OpenConfirm", at)
	n.s.obs.stateChanged(addr, "Established", at)
	select {
	case n.s.peerUp <- struct{}{}:
	default:
	}
}

// expectMsg reads messages until one of type typ arrives.
func expectMsg(c net.Conn, typ uint8) error {
	for {
		got, err := readMsg(c)
		if err != nil {
			return fmt.Errorf("waiting for message type %d: %w", typ, err)
		}
		if got == typ {
			return nil
		}
	}
}

// openMsg is an OPEN from AS asn (2-octet) with router ID id and a 90 s hold
// time (so the fake peer need not send KEEPALIVEs during a test).
func openMsg(t *testing.T, asn uint16, id netip.Addr) []byte {
	t.Helper()
	m, err := bgppkt.NewBGPOpenMessage(asn, 90, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keepaliveMsg(t *testing.T) []byte {
	t.Helper()
	b, err := bgppkt.NewBGPKeepAliveMessage().Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
