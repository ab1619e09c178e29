package bgp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// realDialError dials addr the way GoBGP's connect loop does and returns the
// error's text, which is what GoBGP logs.
func realDialError(t *testing.T, addr string, timeout time.Duration) string {
	t.Helper()
	c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: unexpectedly connected", addr)
	}
	return err.Error()
}

// fields builds a record's attributes the way slog does for GoBGP's calls
// (slog.Int becomes an Int64 value, and so on).
func fields(args ...any) logFields {
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)
	r.Add(args...)
	f := logFields{}
	r.Attrs(func(a slog.Attr) bool {
		f.add("", a)
		return true
	})
	return f
}

func TestReasonFromLog(t *testing.T) {
	closed := netip.MustParseAddr("127.77.251.1")
	refused := realDialError(t, netip.AddrPortFrom(closed, uint16(freePort(t, closed))).String(), time.Second)
	timeout := realDialError(t, "127.77.251.2:179", time.Nanosecond)
	// How GoBGP's dialer reports a TCP_MD5SIG refused by the socket and an
	// unexplained error.
	noMD5 := (&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("setSockOpt", syscall.ENOPROTOOPT)}).Error()
	other := (&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EPERM)}).Error()

	ibgp := reasonInput{PeerASN: 64512, LocalASN: 64512}
	withPw := reasonInput{HasPassword: true, PeerASN: 64512, LocalASN: 64512}
	tests := []struct {
		name   string
		msg    string
		fields logFields
		in     reasonInput
		want   string
	}{
		{"refused", logFailedToConnect, fields("Key", "10.0.0.2", slog.String("Error", refused)), ibgp, "Connection refused"},
		{"timeout with password", logFailedToConnect, fields(slog.String("Error", timeout)), withPw, "TCP MD5 password mismatch or missing (no answer to SYN)"},
		{"timeout without password", logFailedToConnect, fields(slog.String("Error", timeout)), ibgp, "Connection timed out (peer down or filtered, or it expects a TCP MD5 password)"},
		{"md5 on mptcp socket", logFailedToConnect, fields(slog.String("Error", noMD5)), withPw, "Cannot set TCP MD5 on the socket (protocol not available; is GODEBUG multipathtcp=0 set?)"},
		{"other dial error", logFailedToConnect, fields(slog.String("Error", other)), ibgp, "Connect failed: operation not permitted"},
		{"dial without error field", logFailedToConnect, fields(), ibgp, ""},

		{"we saw the wrong AS", logSentNotification, fields(slog.Int("Code", 2), slog.Int("Subcode", 2), slog.Any("Data", []byte(nil))),
			reasonInput{PeerASN: 65002, LocalASN: 64512}, "AS mismatch: peer's AS is not the configured 65002"},
		{"we saw our own router id", logSentNotification, fields(slog.Int("Code", 2), slog.Int("Subcode", 3)),
			ibgp, "Bad BGP identifier from peer (0.0.0.0, or the same router ID as ours)"},
		{"sent hold timer", logSentNotification, fields(slog.Int("Code", 4), slog.Int("Subcode", 0)), ibgp, "Hold timer expired"},
		{"sent cease is ours, not a failure", logSentNotification, fields(slog.Int("Code", 6), slog.Int("Subcode", 3)), ibgp, ""},
		{"sent header error", logSentNotification, fields(slog.Int("Code", 1), slog.Int("Subcode", 1)), ibgp,
			"Malformed message from peer: message header error: connection not synchronized"},
		{"sent unknown message type", logSentNotification, fields(slog.Int("Code", 1), slog.Int("Subcode", 3)), ibgp,
			"Malformed message from peer: message header error: bad message type"},
		{"peer answered our OPEN with a notification", logSentNotification, fields(slog.Int("Code", 5), slog.Int("Subcode", 1)),
			reasonInput{PeerASN: 64512, LocalASN: 65001}, "Peer rejected our OPEN (AS mismatch? we announce AS 65001)"},
		{"sent other fsm error", logSentNotification, fields(slog.Int("Code", 5), slog.Int("Subcode", 2)), ibgp,
			"Sent notification: FSM error: receive unexpected message in openconfirm state"},

		{"peer rejected our AS", logRecvNotification, fields(slog.Int("Code", 2), slog.Int("Subcode", 2)),
			reasonInput{PeerASN: 64512, LocalASN: 65001}, "AS mismatch: peer rejected our AS 65001"},
		{"peer deconfigured us", logRecvNotification, fields(slog.Int("Code", 6), slog.Int("Subcode", 3)), ibgp,
			"Peer closed the session: cease: peer deconfigured"},
		{"peer shut down with a message", logRecvNotification, fields(slog.Int("Code", 6), slog.Int("Subcode", 2), slog.String("Communicated-Reason", "maintenance")), ibgp,
			`Peer closed the session: cease: administrative shutdown ("maintenance")`},
		{"collision loser", logRecvNotification, fields(slog.Int("Code", 6), slog.Int("Subcode", 7)), ibgp, ""},
		{"peer's hold timer", logRecvNotification, fields(slog.Int("Code", 4), slog.Int("Subcode", 0)), ibgp, "Peer's hold timer expired"},
		{"unknown code", logRecvNotification, fields(slog.Int("Code", 9), slog.Int("Subcode", 1)), ibgp, "Peer closed the session: code 9: subcode 1"},
		{"notification with wrong field types", logRecvNotification, fields(slog.String("Code", "6"), slog.String("Subcode", "3")), ibgp, ""},
		{"notification code out of range", logRecvNotification, fields(slog.Int("Code", 300), slog.Int("Subcode", 3)), ibgp, ""},

		{"hold timer", logHoldTimerExpired, fields(), ibgp, "Hold timer expired"},
		{"peer down read failed", logPeerDown, fields(slog.String("Reason", "read-failed")), ibgp, "Connection lost (closed or reset by peer)"},
		{"peer down hold timer", logPeerDown, fields(slog.String("Reason", "hold-timer-expired")), ibgp, "Hold timer expired"},
		{"peer down after notification", logPeerDown, fields(slog.String("Reason", "notification-received code 6(cease) subcode 3(peer deconfigured)")), ibgp, ""},
		{"peer rejected our OPEN after its own", logStateChanged,
			fields(slog.String("old", "BGP_FSM_OPENCONFIRM"), slog.String("new", "BGP_FSM_IDLE"), slog.String("reason", "invalid-msg")),
			reasonInput{PeerASN: 64512, LocalASN: 65001}, "Peer rejected our OPEN (AS mismatch? we announce AS 65001)"},
		{"other state change to idle", logStateChanged,
			fields(slog.String("old", "BGP_FSM_OPENCONFIRM"), slog.String("new", "BGP_FSM_IDLE"), slog.String("reason", "hold-timer-expired")), ibgp, ""},
		{"invalid message in opensent", logStateChanged,
			fields(slog.String("old", "BGP_FSM_OPENSENT"), slog.String("new", "BGP_FSM_IDLE"), slog.String("reason", "invalid-msg")), ibgp, ""},
		{"unrelated record", "Add a peer configuration", fields("Key", "10.0.0.2"), ibgp, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reasonFromLog(tt.msg, tt.fields, tt.in); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotificationName(t *testing.T) {
	tests := []struct {
		code, sub uint8
		want      string
	}{
		{6, 3, "cease: peer deconfigured"},
		{2, 2, "OPEN message error: bad peer as"},
		{3, 1, "UPDATE message error: malformed attribute list"},
		{6, 0, "cease"},
		{6, 99, "cease: subcode 99"},
		{4, 0, "hold timer expired"},
		{42, 0, "code 42"},
	}
	for _, tt := range tests {
		if got := notificationName(tt.code, tt.sub); got != tt.want {
			t.Errorf("notificationName(%d, %d): got %q, want %q", tt.code, tt.sub, got, tt.want)
		}
	}
}

// The observer keeps the last reason until the session is Established, and
// ignores records about peers it does not know. Records go through the
// slog handler GoBGP logs to, with the peer's address attached the way
// GoBGP attaches it (a logger derived With "Key").
func TestObserver(t *testing.T) {
	o := newObserver(testLogger(t))
	gobgp := slog.New(newGobgpHandler(o.log, o)).With("Topic", "Peer")
	peer := gobgp.With(slog.String("Key", "10.0.0.2"))
	addr := netip.MustParseAddr("10.0.0.2")
	t0 := time.Unix(1000, 0)
	o.add(addr, reasonInput{PeerASN: 1, LocalASN: 1}, "global", false, t0)

	refused := (&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}).Error()
	peer.Debug(logFailedToConnect, slog.String("Error", refused))
	peer.Warn("Closed an accepted connection", slog.String("State", "BGP_FSM_IDLE"))
	gobgp.With("Key", "10.0.0.3").Debug(logFailedToConnect, slog.String("Error", "x"))
	p, _ := o.get(addr)
	if p.reason != "Connection refused" || p.state != "Idle" || !p.since.Equal(t0) || p.typ != "global" {
		t.Errorf("after refused: got %+v", p)
	}
	if _, ok := o.get(netip.MustParseAddr("10.0.0.3")); ok {
		t.Errorf("unknown peer was recorded")
	}

	t1 := t0.Add(time.Second)
	o.stateChanged(addr, "Established", t1)
	p, _ = o.get(addr)
	if p.reason != "" || p.state != "Established" || !p.since.Equal(t1) {
		t.Errorf("after Established: got %+v", p)
	}
	o.stateChanged(addr, "Established", t1.Add(time.Second)) // repeated state keeps Since
	if p, _ = o.get(addr); !p.since.Equal(t1) {
		t.Errorf("repeated state moved Since to %v", p.since)
	}

	peer.Info(logPeerDown, slog.String("State", "BGP_FSM_ESTABLISHED"), slog.String("Reason", "read-failed"))
	o.stateChanged(addr, "Idle", t1.Add(2*time.Second))
	if p, _ = o.get(addr); p.reason != "Connection lost (closed or reset by peer)" || p.state != "Idle" {
		t.Errorf("after Peer Down: got %+v", p)
	}
	// A hold timer expiry is not overwritten by the "read-failed" of the
	// Peer Down record that follows it.
	o.stateChanged(addr, "Established", t1.Add(3*time.Second))
	peer.Warn(logHoldTimerExpired, slog.String("State", "BGP_FSM_ESTABLISHED"))
	peer.Info(logPeerDown, slog.String("Reason", "read-failed"))
	if p, _ = o.get(addr); p.reason != "Hold timer expired" {
		t.Errorf("hold timer then Peer Down: got reason %q, want %q", p.reason, "Hold timer expired")
	}

	// In OpenConfirm, a malformed message is answered with a NOTIFICATION
	// whose reason stands; without one, the drop to Idle means the peer
	// rejected our OPEN.
	o.stateChanged(addr, "Idle", t1.Add(4*time.Second))
	toIdle := []any{slog.String("old", "BGP_FSM_OPENCONFIRM"), slog.String("new", "BGP_FSM_IDLE"), slog.String("reason", "invalid-msg")}
	peer.Info(logSentNotification, slog.Int("Code", 1), slog.Int("Subcode", 3))
	peer.Debug(logStateChanged, toIdle...)
	if p, _ = o.get(addr); p.reason != "Malformed message from peer: message header error: bad message type" {
		t.Errorf("notification then OpenConfirm->Idle: got reason %q", p.reason)
	}
	peer.Debug(logStateChanged, toIdle...)
	if p, _ = o.get(addr); p.reason != "Peer rejected our OPEN (AS mismatch? we announce AS 1)" {
		t.Errorf("OpenConfirm->Idle without a notification: got reason %q", p.reason)
	}

	o.remove(addr)
	if _, ok := o.get(addr); ok {
		t.Errorf("removed peer still there")
	}
}

// recorder is a slog.Handler that keeps what reaches it.
type recorder struct {
	mu    sync.Mutex
	lines []string // guarded by mu: "LEVEL msg k=v ..."
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// GoBGP's warnings and errors reach our logger once a minute per message and
// peer, with groups flattened; Info and Debug do not. A new failure reason
// is logged once by the observer.
func TestGobgpHandlerForwarding(t *testing.T) {
	rec := &recorder{}
	lg := slog.New(rec)
	o := newObserver(lg)
	addr := netip.MustParseAddr("10.0.0.2")
	o.add(addr, reasonInput{PeerASN: 1, LocalASN: 1}, "global", false, time.Unix(1000, 0))
	gobgp := slog.New(newGobgpHandler(lg, o))
	peer := gobgp.With("Topic", "Peer", "Key", "10.0.0.2")

	peer.Warn("Closed an accepted connection", slog.String("State", "BGP_FSM_IDLE"))
	peer.Warn("Closed an accepted connection", slog.String("State", "BGP_FSM_IDLE")) // repeat: dropped
	peer.Debug("try to connect")
	peer.Info("Add a peer configuration")
	gobgp.WithGroup("g").With("a", 1).Error("failed to listen", slog.Group("sub", slog.Int("b", 2)))
	peer.Info(logSentNotification, slog.Int("Code", 4), slog.Int("Subcode", 0))
	peer.Warn(logHoldTimerExpired) // forwarded; the same reason is not logged again

	want := []string{
		"WARN Closed an accepted connection source=gobgp Key=10.0.0.2 State=BGP_FSM_IDLE Topic=Peer",
		"ERROR failed to listen source=gobgp g.a=1 g.sub.b=2",
		"WARN peer not up peer=10.0.0.2 reason=Hold timer expired",
		"WARN hold timer expired source=gobgp Key=10.0.0.2 Topic=Peer",
	}
	got := rec.all()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("forwarded lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLogRateLimit(t *testing.T) {
	l := &rateLimiter{}
	t0 := time.Unix(1000, 0)
	if !l.allow("m|a", t0) || l.allow("m|a", t0.Add(time.Second)) || !l.allow("m|b", t0) {
		t.Errorf("first record per key must pass, a repeat within the interval must not")
	}
	if !l.allow("m|a", t0.Add(logRepeatInterval)) {
		t.Errorf("a repeat after the interval must pass")
	}
}
