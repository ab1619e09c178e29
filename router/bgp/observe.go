package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/osrg/gobgp/v3/pkg/log"
)

// observer keeps, per configured peer, what GoBGP's events and log records
// told us: the FSM state, since when, and the last failure reason. It is fed
// from GoBGP's goroutines (watcher and FSM), so its lock is only ever held
// for map updates and never across a call into GoBGP.
type observer struct {
	log *slog.Logger

	mu sync.Mutex
	// peers is guarded by mu.
	peers map[netip.Addr]*peerObs
}

type peerObs struct {
	in      reasonInput
	typ     string // Peer.Type, reported back
	passive bool
	state   string
	since   time.Time
	reason  string
}

func newObserver(lg *slog.Logger) *observer {
	return &observer{log: lg, peers: make(map[netip.Addr]*peerObs)}
}

// add starts observing a peer (before it is added to GoBGP, so that no early
// record is missed). A previous entry for the address is replaced.
func (o *observer) add(addr netip.Addr, in reasonInput, typ string, passive bool, now time.Time) {
	o.mu.Lock()
	o.peers[addr] = &peerObs{in: in, typ: typ, passive: passive, state: "Idle", since: now}
	o.mu.Unlock()
}

func (o *observer) remove(addr netip.Addr) {
	o.mu.Lock()
	delete(o.peers, addr)
	o.mu.Unlock()
}

// get returns a copy of what is known about addr.
func (o *observer) get(addr netip.Addr) (peerObs, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.peers[addr]
	if !ok {
		return peerObs{}, false
	}
	return *p, true
}

// stateChanged records a peer FSM state from GoBGP's peer watch.
func (o *observer) stateChanged(addr netip.Addr, state string, now time.Time) {
	o.mu.Lock()
	p, ok := o.peers[addr]
	if !ok || p.state == state {
		o.mu.Unlock()
		return
	}
	old := p.state
	p.state, p.since = state, now
	if state == "Established" {
		p.reason = ""
	}
	reason := p.reason
	o.mu.Unlock()

	switch {
	case state == "Established":
		o.log.Info("peer up", "peer", addr)
	case old == "Established":
		o.log.Info("peer down", "peer", addr, "state", state, "reason", reason)
	}
}

// record feeds one GoBGP log record about a peer to the reason mapping.
func (o *observer) record(addr netip.Addr, msg string, f log.Fields) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.peers[addr]
	if !ok {
		return
	}
	r := reasonFromLog(msg, f, p.in)
	switch {
	case r == "":
	case msg == logPeerDown && p.reason != "":
		// "Peer Down" only says how the session ended ("read-failed" when
		// the socket closed under the FSM): a reason logged just before it
		// (hold timer, notification) is the better one. Established clears
		// the reason, so this cannot keep a stale one.
	default:
		p.reason = r
	}
}

// gobgpLogger adapts GoBGP v3's log.Logger to slog and to the observer.
//
// Every record that names a peer ("Key") goes to the observer, whatever its
// level, because some reasons only appear at Debug ("failed to connect").
// Only Warn and above reach the slog logger, rate-limited per message and
// peer, since GoBGP repeats the same warning on every retry.
type gobgpLogger struct {
	log *slog.Logger
	obs *observer

	limitMu sync.Mutex
	// lastLogged is guarded by limitMu: message+peer -> last time logged.
	lastLogged map[string]time.Time
}

var _ log.Logger = (*gobgpLogger)(nil)

// logRepeatInterval is how often the same GoBGP warning about the same peer
// may reach the slog logger.
const logRepeatInterval = time.Minute

func (l *gobgpLogger) Panic(msg string, f log.Fields) { l.emit(slog.LevelError, msg, f) }

// Fatal is only called by GoBGP when its gRPC server cannot listen, which we
// never start. A library must not exit the process, so it just logs.
func (l *gobgpLogger) Fatal(msg string, f log.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *gobgpLogger) Error(msg string, f log.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *gobgpLogger) Warn(msg string, f log.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *gobgpLogger) Info(msg string, f log.Fields)  { l.observe(msg, f) }
func (l *gobgpLogger) Debug(msg string, f log.Fields) { l.observe(msg, f) }

// SetLevel is ignored: see GetLevel.
func (l *gobgpLogger) SetLevel(log.LogLevel) {}

// GetLevel reports Debug because GoBGP only builds its "failed to connect"
// record (the dial error we need) when the level is at least Debug. Debug
// records are not forwarded, only observed.
func (l *gobgpLogger) GetLevel() log.LogLevel { return log.DebugLevel }

func (l *gobgpLogger) observe(msg string, f log.Fields) {
	key, _ := f["Key"].(string)
	if key == "" {
		return
	}
	addr, err := netip.ParseAddr(key)
	if err != nil {
		return
	}
	l.obs.record(addr.Unmap(), msg, f)
}

func (l *gobgpLogger) emit(level slog.Level, msg string, f log.Fields) {
	l.observe(msg, f)
	key, _ := f["Key"].(string)
	if !l.allow(msg+"|"+key, time.Now()) {
		return
	}
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	names := make([]string, 0, len(f))
	for k := range f {
		names = append(names, k)
	}
	sort.Strings(names)
	attrs := make([]any, 0, 2*len(names)+2)
	attrs = append(attrs, "source", "gobgp")
	for _, k := range names {
		attrs = append(attrs, k, fmt.Sprint(f[k]))
	}
	l.log.Log(context.Background(), level, msg, attrs...)
}

// allow reports whether a record with this key may be logged now.
func (l *gobgpLogger) allow(key string, now time.Time) bool {
	l.limitMu.Lock()
	defer l.limitMu.Unlock()
	if l.lastLogged == nil {
		l.lastLogged = make(map[string]time.Time)
	}
	if t, ok := l.lastLogged[key]; ok && now.Sub(t) < logRepeatInterval {
		return false
	}
	// Keep the map bounded: keys are per message and peer, so this only
	// triggers with very many peers; forgetting old entries is harmless.
	if len(l.lastLogged) >= 4096 {
		for k, t := range l.lastLogged {
			if now.Sub(t) >= logRepeatInterval {
				delete(l.lastLogged, k)
			}
		}
	}
	l.lastLogged[key] = now
	return true
}
