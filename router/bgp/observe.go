package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// observer keeps, per configured peer, what GoBGP's events and log records
// told us: the FSM state, since when, and the last failure reason. It is fed
// from GoBGP's goroutines (watcher and FSM), so its lock is only ever held
// for map updates and never across a call into GoBGP.
type observer struct {
	log   *slog.Logger
	limit rateLimiter // for "peer not up" lines

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
	// notifSent is set by a "sent notification" record that gave a reason
	// and cleared by the next FSM state change: that reason is the precise
	// one for this attempt (see rejectedOpenReason).
	notifSent bool
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

// upSince returns, for every peer whose last reported state is Established,
// when that state was reported: a new time means a new session.
func (o *observer) upSince() map[netip.Addr]time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	up := make(map[netip.Addr]time.Time)
	for addr, p := range o.peers {
		if p.state == "Established" {
			up[addr] = p.since
		}
	}
	return up
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

// record feeds one GoBGP log record about a peer to the reason mapping. A
// new reason for a session that is not up is logged once (rate-limited per
// peer and reason): GoBGP logs most failures at Info or Debug, which the
// handler does not forward. (The end of an Established session is logged by
// stateChanged, with its reason.)
func (o *observer) record(addr netip.Addr, msg string, f logFields) {
	o.mu.Lock()
	p, ok := o.peers[addr]
	if !ok {
		o.mu.Unlock()
		return
	}
	r := reasonFromLog(msg, f, p.in)
	changed := false
	switch {
	case r == "":
	case msg == logPeerDown && p.reason != "":
		// "Peer Down" only says how the session ended ("read-failed" when
		// the socket closed under the FSM): a reason logged just before it
		// (hold timer, notification) is the better one. Established clears
		// the reason, so this cannot keep a stale one.
	case msg == logStateChanged && p.notifSent:
		// The state change's guess yields to the notification we sent.
	default:
		changed = p.reason != r && p.state != "Established"
		p.reason = r
	}
	switch msg {
	case logSentNotification:
		p.notifSent = r != ""
	case logStateChanged:
		p.notifSent = false
	}
	o.mu.Unlock()

	if changed && o.limit.allow(addr.String()+"|"+r, time.Now()) {
		o.log.Warn("peer not up", "peer", addr, "reason", r)
	}
}

// gobgpHandler is the slog.Handler GoBGP v4 logs to. It adapts GoBGP's
// records to our logger and to the observer.
//
// Every record that names a peer (attribute "Key", which GoBGP attaches to
// each peer's logger) goes to the observer, whatever its level, because some
// reasons only appear at Debug ("failed to connect"). Only Warn and above
// reach our logger, rate-limited per message and peer, since GoBGP repeats
// the same warning on every retry.
type gobgpHandler struct {
	sink *gobgpSink
	// attrs are the attributes added with WithAttrs, already qualified by
	// the groups open at the time; group is the prefix for later ones.
	attrs []slog.Attr
	group string
}

// gobgpSink is what all handlers derived from one speaker's share.
type gobgpSink struct {
	log   *slog.Logger
	obs   *observer
	limit rateLimiter
}

func newGobgpHandler(lg *slog.Logger, obs *observer) *gobgpHandler {
	return &gobgpHandler{sink: &gobgpSink{log: lg, obs: obs}}
}

var _ slog.Handler = (*gobgpHandler)(nil)

// logRepeatInterval is how often the same GoBGP warning about the same peer
// may reach the slog logger.
const logRepeatInterval = time.Minute

// Enabled reports true for every level: GoBGP only builds its "failed to
// connect" record (the dial error we need) when Debug is enabled. Debug and
// Info records are observed, not forwarded.
func (h *gobgpHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *gobgpHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = slices.Clip(h.attrs)
	for _, a := range attrs {
		a.Key = h.group + a.Key
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *gobgpHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

func (h *gobgpHandler) Handle(_ context.Context, r slog.Record) error {
	f := make(logFields, len(h.attrs)+r.NumAttrs())
	for _, a := range h.attrs {
		f.add("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		f.add(h.group, a)
		return true
	})
	h.sink.handle(r.Level, r.Message, f)
	return nil
}

// add stores a under prefix+a.Key, flattening groups.
func (f logFields) add(prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			f.add(p, g)
		}
		return
	}
	f[prefix+a.Key] = v
}

func (s *gobgpSink) handle(level slog.Level, msg string, f logFields) {
	key, _ := f.str("Key")
	if addr, err := netip.ParseAddr(key); err == nil {
		s.obs.record(addr.Unmap(), msg, f)
	}
	if level < slog.LevelWarn || !s.log.Enabled(context.Background(), level) {
		return
	}
	if !s.limit.allow(msg+"|"+key, time.Now()) {
		return
	}
	names := make([]string, 0, len(f))
	for k := range f {
		names = append(names, k)
	}
	slices.Sort(names)
	attrs := make([]any, 0, 2*len(names)+2)
	attrs = append(attrs, "source", "gobgp")
	for _, k := range names {
		attrs = append(attrs, k, f[k].String())
	}
	s.log.Log(context.Background(), level, msg, attrs...)
}

// rateLimiter lets a line with a given key through at most once per
// logRepeatInterval.
type rateLimiter struct {
	mu sync.Mutex
	// last is guarded by mu: key -> last time let through.
	last map[string]time.Time
}

// allow reports whether a line with this key may be logged now.
func (l *rateLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < logRepeatInterval {
		return false
	}
	// Keep the map bounded: keys are per message and peer, so this only
	// triggers with very many peers; forgetting old entries is harmless.
	if len(l.last) >= 4096 {
		for k, t := range l.last {
			if now.Sub(t) >= logRepeatInterval {
				delete(l.last, k)
			}
		}
	}
	l.last[key] = now
	return true
}
