package bgp

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/osrg/gobgp/v3/pkg/log"
	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// realDialError dials addr the way GoBGP's connect loop does and returns the
// error.
func realDialError(t *testing.T, addr string, timeout time.Duration) error {
	t.Helper()
	c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: unexpectedly connected", addr)
	}
	return err
}

// openError runs GoBGP's own OPEN validation on an OPEN from AS peerAS and
// router ID peerID, as a speaker with the given expectations would.
func openError(t *testing.T, peerAS uint32, peerID string, expectAS, myAS uint32, myID string) *bgppkt.MessageError {
	t.Helper()
	caps := []bgppkt.ParameterCapabilityInterface{bgppkt.NewCapFourOctetASNumber(peerAS)}
	m := bgppkt.NewBGPOpenMessage(bgppkt.AS_TRANS, 90, peerID, []bgppkt.OptionParameterInterface{bgppkt.NewOptionParameterCapability(caps)})
	_, err := bgppkt.ValidateOpenMsg(m.Body.(*bgppkt.BGPOpen), expectAS, myAS, net.ParseIP(myID))
	var me *bgppkt.MessageError
	if !errors.As(err, &me) {
		t.Fatalf("ValidateOpenMsg: got %v, want a *MessageError", err)
	}
	return me
}

func TestReasonFromLog(t *testing.T) {
	closed := netip.MustParseAddr("127.77.251.1")
	refused := realDialError(t, netip.AddrPortFrom(closed, uint16(freePort(t, closed))).String(), time.Second)
	timeout := realDialError(t, "127.77.251.2:179", time.Nanosecond)
	noMD5 := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("setsockopt", syscall.ENOPROTOOPT)}
	other := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EPERM)}

	ibgp := reasonInput{PeerASN: 64512, LocalASN: 64512}
	withPw := reasonInput{HasPassword: true, PeerASN: 64512, LocalASN: 64512}
	tests := []struct {
		name   string
		msg    string
		fields log.Fields
		in     reasonInput
		want   string
	}{
		{"refused", logFailedToConnect, log.Fields{"Key": "10.0.0.2", "Error": refused}, ibgp, "Connection refused"},
		{"timeout with password", logFailedToConnect, log.Fields{"Error": timeout}, withPw, "TCP MD5 password mismatch or missing (no answer to SYN)"},
		{"timeout without password", logFailedToConnect, log.Fields{"Error": timeout}, ibgp, "Connection timed out (peer down or filtered, or it expects a TCP MD5 password)"},
		{"md5 on mptcp socket", logFailedToConnect, log.Fields{"Error": noMD5}, withPw, "Cannot set TCP MD5 on the socket (protocol not available; is GODEBUG multipathtcp=0 set?)"},
		{"other dial error", logFailedToConnect, log.Fields{"Error": other}, ibgp, "Connect failed: operation not permitted"},
		{"dial without error field", logFailedToConnect, log.Fields{}, ibgp, ""},

		{"we saw the wrong AS", logSentNotification, log.Fields{"Data": openError(t, 65001, "10.0.0.2", 65002, 64512, "10.0.0.1")},
			reasonInput{PeerASN: 65002, LocalASN: 64512}, "AS mismatch: peer says 65001, configured 65002"},
		{"we saw our own router id", logSentNotification, log.Fields{"Data": openError(t, 64512, "10.0.0.1", 64512, 64512, "10.0.0.1")},
			ibgp, "Bad BGP identifier from peer (0.0.0.0, or the same router ID as ours)"},
		{"sent bad peer AS without text", logSentNotification, log.Fields{"Code": uint8(2), "Subcode": uint8(2)},
			reasonInput{PeerASN: 65002}, "AS mismatch: peer's AS is not the configured 65002"},
		{"sent hold timer", logSentNotification, log.Fields{"Code": uint8(4), "Subcode": uint8(0)}, ibgp, "Hold timer expired"},
		{"sent cease is ours, not a failure", logSentNotification, log.Fields{"Code": uint8(6), "Subcode": uint8(3)}, ibgp, ""},
		{"sent header error", logSentNotification, log.Fields{"Code": uint8(1), "Subcode": uint8(1)}, ibgp,
			"Malformed message from peer: message header error: connection not synchronized"},
		{"sent fsm error", logSentNotification, log.Fields{"Code": uint8(5), "Subcode": uint8(1)}, ibgp,
			"Sent notification: FSM error: receive unexpected message in opensent state"},

		{"peer rejected our AS", logRecvNotification, log.Fields{"Code": uint8(2), "Subcode": uint8(2)},
			reasonInput{PeerASN: 64512, LocalASN: 65001}, "AS mismatch: peer rejected our AS 65001"},
		{"peer deconfigured us", logRecvNotification, log.Fields{"Code": uint8(6), "Subcode": uint8(3)}, ibgp,
			"Peer closed the session: cease: peer deconfigured"},
		{"peer shut down with a message", logRecvNotification, log.Fields{"Code": uint8(6), "Subcode": uint8(2), "Communicated-Reason": "maintenance"}, ibgp,
			`Peer closed the session: cease: administrative shutdown ("maintenance")`},
		{"collision loser", logRecvNotification, log.Fields{"Code": uint8(6), "Subcode": uint8(7)}, ibgp, ""},
		{"peer's hold timer", logRecvNotification, log.Fields{"Code": uint8(4), "Subcode": uint8(0)}, ibgp, "Peer's hold timer expired"},
		{"unknown code", logRecvNotification, log.Fields{"Code": uint8(9), "Subcode": uint8(1)}, ibgp, "Peer closed the session: code 9: subcode 1"},
		{"notification with wrong field types", logRecvNotification, log.Fields{"Code": 6, "Subcode": 3}, ibgp, ""},

		{"hold timer", logHoldTimerExpired, log.Fields{}, ibgp, "Hold timer expired"},
		{"peer down read failed", logPeerDown, log.Fields{"Reason": "read-failed"}, ibgp, "Connection lost (closed or reset by peer)"},
		{"peer down hold timer", logPeerDown, log.Fields{"Reason": "hold-timer-expired"}, ibgp, "Hold timer expired"},
		{"peer down after notification", logPeerDown, log.Fields{"Reason": "notification-received code 6(cease) subcode 3(peer deconfigured)"}, ibgp, ""},
		{"unrelated record", "Add a peer configuration", log.Fields{"Key": "10.0.0.2"}, ibgp, ""},
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
// ignores records about peers it does not know.
func TestObserver(t *testing.T) {
	o := newObserver(testLogger(t))
	l := &gobgpLogger{log: o.log, obs: o}
	addr := netip.MustParseAddr("10.0.0.2")
	t0 := time.Unix(1000, 0)
	o.add(addr, reasonInput{PeerASN: 1, LocalASN: 1}, "global", false, t0)

	l.Debug(logFailedToConnect, log.Fields{"Key": "10.0.0.2", "Error": &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}})
	l.Warn("Closed an accepted connection", log.Fields{"Key": "10.0.0.2"})
	l.Debug(logFailedToConnect, log.Fields{"Key": "10.0.0.3", "Error": errors.New("x")})
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

	l.Info(logPeerDown, log.Fields{"Key": "10.0.0.2", "Reason": "read-failed"})
	o.stateChanged(addr, "Idle", t1.Add(2*time.Second))
	if p, _ = o.get(addr); p.reason != "Connection lost (closed or reset by peer)" || p.state != "Idle" {
		t.Errorf("after Peer Down: got %+v", p)
	}
	// A hold timer expiry is not overwritten by the "read-failed" of the
	// Peer Down record that follows it.
	o.stateChanged(addr, "Established", t1.Add(3*time.Second))
	l.Warn(logHoldTimerExpired, log.Fields{"Key": "10.0.0.2"})
	l.Info(logPeerDown, log.Fields{"Key": "10.0.0.2", "Reason": "read-failed"})
	if p, _ = o.get(addr); p.reason != "Hold timer expired" {
		t.Errorf("hold timer then Peer Down: got reason %q, want %q", p.reason, "Hold timer expired")
	}
	o.remove(addr)
	if _, ok := o.get(addr); ok {
		t.Errorf("removed peer still there")
	}
}

func TestLogRateLimit(t *testing.T) {
	l := &gobgpLogger{}
	t0 := time.Unix(1000, 0)
	if !l.allow("m|a", t0) || l.allow("m|a", t0.Add(time.Second)) || !l.allow("m|b", t0) {
		t.Errorf("first record per key must pass, a repeat within the interval must not")
	}
	if !l.allow("m|a", t0.Add(logRepeatInterval)) {
		t.Errorf("a repeat after the interval must pass")
	}
}
