// Package bgp runs an embedded GoBGP (v4) speaker for one podnet node: it
// keeps sessions with the configured peers (node-to-node mesh, global and
// node-specific peers, route reflector clients), originates the node's pod
// address blocks, reports the best paths it learns, and explains in plain
// words why a peer is not Established.
//
// The API is deliberately small and uses plain Go types; the node daemon
// translates podnet resources (BGPConfiguration, BGPPeer, Node) into Config
// and Peer values. Only IPv4 unicast is supported.
//
// Goroutines. A Speaker owns two: routineRoutes rebuilds the learned route
// set and calls Config.OnRoutes; routineResync sends each session that comes
// up our table once more (resync.go says why). Close stops both and waits.
// GoBGP starts more: BgpServer.Serve, its BFD loop, and per-peer FSM,
// listener and watcher goroutines. Close ends all of them (BgpServer.Stop
// and the cancelled watch context); so does New when it fails.
//
// One Speaker per process. GoBGP's StartBgp writes package-level variables
// (table.SelectionOptions, table.UseMultiplePaths) that every server's
// goroutines read, so two Speakers in one process are a data race. The
// values written are always the same here, so it is benign, but -race
// reports it; tests run their speakers sequentially for that reason.
//
// A misbehaving peer costs only its own session: a malformed or unknown
// message is answered with a NOTIFICATION and the session is reset, with the
// reason in PeerStatus.Info. (GoBGP v3 up to v3.37.0, the last v3 release,
// dereferenced nil on a message of unknown type and took the whole process
// down; TestMisbehavingPeer checks that this stays fixed.)
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// DefaultMaxPathsPerPeer is ten times what a node takes from one peer
// (routing.DefaultMaxPrefixes): room for a route reflector's whole
// cluster, not for a full Internet table sent by mistake.
const DefaultMaxPathsPerPeer = 100000

// Config configures a Speaker.
type Config struct {
	// RouterID is the node's underlay IPv4 address. It is the BGP router ID,
	// the source address of outgoing sessions and the default next hop of
	// advertised prefixes. Required.
	RouterID netip.Addr
	// ASN is the local AS number. Required (podnet's default 64512 is the
	// caller's business).
	ASN uint32
	// ListenPort is the TCP port to accept sessions on. 0 means 179; -1 means
	// do not listen (every session is then dialled by us).
	ListenPort int
	// ListenAddrs are the addresses to listen on. nil means all addresses.
	ListenAddrs []netip.Addr
	// MaxPathsPerPeer bounds the paths one peer may keep in this speaker;
	// a peer that sends more gets a Cease NOTIFICATION (maximum number of
	// prefixes reached) and loses its session for PrefixLimitRetry, not
	// the speaker its memory. 0 means DefaultMaxPathsPerPeer.
	MaxPathsPerPeer int
	// PrefixLimitRetry is how long such a session stays down before it is
	// tried again; 0 means DefaultPrefixLimitRetry.
	PrefixLimitRetry time.Duration
	// RouteReflectorClusterID, if valid and non-zero, makes this speaker a
	// route reflector: peers with RRClient set are its clients.
	RouteReflectorClusterID netip.Addr
	// Logger receives the speaker's own messages and GoBGP's messages at Warn
	// and above. nil discards them.
	Logger *slog.Logger
	// OnRoutes is called with the complete set of learned paths (sorted
	// by prefix, each prefix's best path first, then the others in
	// GoBGP's order; our own advertisements are not included) once soon
	// after New, usually empty, and then each time the set changes. Calls are
	// coalesced (a burst of updates becomes one call), made from the
	// speaker's own goroutine, never concurrently, and never after Close
	// returns. The slice is the callee's. It must not call Close. Required.
	OnRoutes func([]Path)
}

// Peer is one BGP neighbor. Address is its key.
type Peer struct {
	Address netip.Addr
	// Port is the peer's TCP port. 0 means 179.
	Port int
	// ASN is the peer's AS number. Required.
	ASN uint32
	// Type is reported back in PeerStatus: "node-to-node mesh", "global" or
	// "node specific" (as calicoctl node status prints it).
	Type string
	// Password enables TCP MD5 (RFC 2385). "" means none.
	Password string
	// KeepaliveTime and HoldTime are whole seconds. 0 means GoBGP's defaults:
	// hold 90 s, keepalive a third of the hold time. HoldTime must be 0 or at
	// least 3 s (RFC 4271 §4.2).
	KeepaliveTime, HoldTime time.Duration
	// RRClient makes the peer a route-reflector client of ours; it needs
	// Config.RouteReflectorClusterID.
	RRClient bool
	// Passive means never dial the peer, only accept its connection.
	Passive bool
	// LocalASN overrides Config.ASN for this session. 0 means Config.ASN.
	LocalASN uint32
}

// Path is a best path learned from a peer.
type Path struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Peer is the neighbor that told us (for a reflected route, the route
	// reflector, not the originator).
	Peer netip.Addr
	// Originator is the ORIGINATOR_ID a route reflector added (the
	// router ID of the client it came from), invalid when the path was
	// not reflected.
	Originator netip.Addr
	ASPath     []uint32
	// Origin is "IGP", "EGP" or "Incomplete".
	Origin string
	// Best: GoBGP's choice among the prefix's paths. The others are
	// still offered, so that a caller that refuses the best one (an
	// import policy) can fall back on the next.
	Best bool
}

// PeerStatus is one row of "calicoctl node status".
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	Type    string     `json:"type"`
	// State is the BGP FSM state: Idle, Connect, Active, OpenSent,
	// OpenConfirm or Established.
	State string `json:"state"`
	// Since is when the peer entered State (for Established, when the
	// session came up).
	Since time.Time `json:"since"`
	// Info is "Established", or a short reason why not, e.g.
	// "Connection refused" or "AS mismatch: peer says 65001, configured 65002".
	Info string `json:"info"`
}

// connectRetry is the ConnectRetry timer given to GoBGP. GoBGP's default is
// 120 s, which is also its dial timeout (minus one second): a mesh peer that
// restarts would then stay down for up to two minutes. BIRD, which Calico
// uses, retries after 5 s.
const connectRetry = 5 * time.Second

// coalesceDelay is how long routineRoutes waits after the first change
// signal before rebuilding, so that a burst of UPDATEs (a peer coming up with
// many prefixes, or going down) becomes one OnRoutes call.
const coalesceDelay = 20 * time.Millisecond

var v4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// Speaker is an embedded BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	// opMu serialises SetPeers, Advertise, SetExportFilter, Close and routineResync's
	// passes. It may be held across calls into GoBGP, so neither GoBGP's
	// callbacks nor the log handler may take it.
	opMu sync.Mutex
	// peers, adverts and withdrawn are guarded by opMu.
	peers     map[netip.Addr]Peer
	adverts   map[netip.Prefix]netip.Addr // prefix -> next hop
	withdrawn map[netip.Prefix]withdrawal // recent withdrawals (resync.go)
	// export is SetExportFilter's filter once exportSet; exportHeld is
	// what GoBGP's prefix set holds, exportPolicy whether GoBGP has the
	// policy that refers to it. Guarded by opMu.
	export       []netip.Prefix
	exportHeld   []netip.Prefix
	exportSet    bool
	exportPolicy bool

	obs *observer // per-peer state and failure reasons; has its own lock

	routesDirty chan struct{} // capacity 1: a "rebuild" signal, never a queue
	peerUp      chan struct{} // capacity 1: "a session came up" (routineResync)
	resyncs     atomic.Int64  // soft resets out routineResync has done
	watchCancel context.CancelFunc
	done        chan struct{}
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closed      bool // guarded by opMu
}

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("bgp: speaker closed")

// New starts a speaker: it starts GoBGP, opens the listeners and begins
// watching for route and peer changes. It has no peers and advertises
// nothing until SetPeers and Advertise are called. When it fails, nothing it
// started is left running (listeners closed, GoBGP's goroutines ended).
func New(ctx context.Context, cfg Config) (*Speaker, error) {
	if !cfg.RouterID.Is4() || cfg.RouterID.IsUnspecified() {
		return nil, fmt.Errorf("bgp: Config.RouterID: need an IPv4 address, got %v", cfg.RouterID)
	}
	if cfg.ASN == 0 {
		return nil, errors.New("bgp: Config.ASN is required")
	}
	if cfg.OnRoutes == nil {
		return nil, errors.New("bgp: Config.OnRoutes is required")
	}
	if cfg.ListenPort < -1 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("bgp: Config.ListenPort %d out of range", cfg.ListenPort)
	}
	if c := cfg.RouteReflectorClusterID; c.IsValid() && !c.Is4() {
		return nil, fmt.Errorf("bgp: Config.RouteReflectorClusterID: need an IPv4 address, got %v", c)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "bgp")

	s := &Speaker{
		cfg:         cfg,
		log:         lg,
		peers:       make(map[netip.Addr]Peer),
		adverts:     make(map[netip.Prefix]netip.Addr),
		withdrawn:   make(map[netip.Prefix]withdrawal),
		routesDirty: make(chan struct{}, 1),
		peerUp:      make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	s.obs = newObserver(lg)
	// GoBGP only consults the LevelVar when asked to change its level over
	// gRPC, which we never serve; the handler decides what is kept.
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	s.srv = server.NewBgpServer(server.LoggerOption(slog.New(newGobgpHandler(lg, s.obs)), level))
	go s.srv.Serve()

	port := int32(cfg.ListenPort)
	if port == 0 {
		port = 179
	}
	g := &api.Global{
		Asn:      cfg.ASN,
		RouterId: cfg.RouterID.String(),
		// -1 tells GoBGP not to listen.
		ListenPort: port,
	}
	for _, a := range cfg.ListenAddrs {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		// StartBgp may have opened some listeners before failing; Stop
		// closes them and ends Serve.
		s.srv.Stop()
		return nil, fmt.Errorf("bgp: start speaker %v AS %d port %d: %w", cfg.RouterID, cfg.ASN, port, err)
	}

	wctx, cancel := context.WithCancel(context.Background())
	s.watchCancel = cancel
	err := s.srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnBestPath:   s.onBestPath,
		OnPeerUpdate: s.onPeerUpdate,
	}, server.WatchBestPath(true), server.WatchPeer())
	if err != nil {
		cancel()
		s.srv.Stop()
		return nil, fmt.Errorf("bgp: watch events: %w", err)
	}

	s.wg.Add(3)
	go s.routineRoutes()
	go s.routineResync()
	go s.routinePrefixLimits()
	s.log.Debug("started", "router_id", cfg.RouterID, "asn", cfg.ASN, "port", port)
	return s, nil
}

// onBestPath and onPeerUpdate run on GoBGP's watcher goroutine: they must
// never block. A best-path change only marks the route set dirty; a peer
// state change updates the observer (which takes a short lock, never held
// across a call into GoBGP).
func (s *Speaker) onBestPath([]*apiutil.Path, time.Time) { s.markRoutesDirty() }

// The event's time is when GoBGP emitted it, inside its session-up step
// (resync.go relies on that), not when it reached us.
func (s *Speaker) onPeerUpdate(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	if !st.NeighborAddress.IsValid() {
		return
	}
	state := fsmStateName(st.SessionState)
	s.obs.stateChanged(st.NeighborAddress.Unmap(), state, at)
	if state == "Established" {
		select {
		case s.peerUp <- struct{}{}:
		default: // a resync pass is already pending; it will see this peer
		}
	}
}

func (s *Speaker) markRoutesDirty() {
	select {
	case s.routesDirty <- struct{}{}:
	default: // a rebuild is already pending; it will see this change too
	}
}

// Close stops the speaker: it stops the route goroutine, the event watch and
// GoBGP (which sends Cease to every peer, closes the listeners and ends its
// goroutines). It is idempotent and returns nil: GoBGP reports a failure to
// stop only to its log, which reaches Config.Logger.
func (s *Speaker) Close() error {
	s.closeOnce.Do(func() {
		s.opMu.Lock()
		s.closed = true
		s.opMu.Unlock()

		close(s.done)
		s.wg.Wait() // our routines have returned: no OnRoutes call after this
		s.watchCancel()
		s.srv.Stop()
		s.log.Debug("stopped")
	})
	return nil
}

// fsmStateName names a session state as BIRD and calicoctl do. GoBGP uses
// two encodings: the FSM's own (watch events) and the API enum (ListPeer).
func fsmStateName(st bgppkt.FSMState) string {
	switch st {
	case bgppkt.BGP_FSM_IDLE:
		return "Idle"
	case bgppkt.BGP_FSM_CONNECT:
		return "Connect"
	case bgppkt.BGP_FSM_ACTIVE:
		return "Active"
	case bgppkt.BGP_FSM_OPENSENT:
		return "OpenSent"
	case bgppkt.BGP_FSM_OPENCONFIRM:
		return "OpenConfirm"
	case bgppkt.BGP_FSM_ESTABLISHED:
		return "Established"
	default:
		return "Unknown(" + strconv.Itoa(int(st)) + ")"
	}
}

func sessionStateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_SESSION_STATE_IDLE:
		return "Idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "Connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "Active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "OpenSent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "Established"
	default:
		return "Unknown(" + strconv.Itoa(int(st)) + ")"
	}
}
