package bgp

// This file turns what GoBGP tells us about a failing peer (log records,
// NOTIFICATION codes, dial errors) into the short reason shown in
// PeerStatus.Info. The functions are pure so the mapping can be unit-tested
// with the records GoBGP really produces.

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"

	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// reasonInput is what the mapping needs to know about the peer.
type reasonInput struct {
	HasPassword bool
	PeerASN     uint32 // configured remote AS
	LocalASN    uint32 // AS we announce to this peer
}

// GoBGP v4.8.0 log messages that carry a peer's failure reason. They are
// matched exactly; a GoBGP upgrade that rewords them makes the reasons fall
// back to the bare FSM state, which TestReasonFromLog would catch only for
// the messages it knows, so re-read pkg/server/fsm.go on upgrade.
const (
	logFailedToConnect  = "failed to connect"     // Debug; "Error" (string: the dial error's text)
	logSentNotification = "sent notification"     // Info; "Code", "Subcode" (int)
	logRecvNotification = "received notification" // Info; "Code", "Subcode", optional "Communicated-Reason"
	logHoldTimerExpired = "hold timer expired"    // Warn
	logPeerDown         = "Peer Down"             // Info; "Reason" (fsmStateReason.String())
	logStateChanged     = "state changed"         // Debug; "old", "new" (FSMState.String()), "reason" (fsmStateReason.String())
)

// logFields is one GoBGP log record's attributes by name, with the names of
// groups joined by dots.
type logFields map[string]slog.Value

func (f logFields) str(name string) (string, bool) {
	v, ok := f[name]
	if !ok || v.Kind() != slog.KindString {
		return "", false
	}
	return v.String(), true
}

// code reads a NOTIFICATION code or subcode, which GoBGP logs as an int.
func (f logFields) code(name string) (uint8, bool) {
	v, ok := f[name]
	if !ok || v.Kind() != slog.KindInt64 || v.Int64() < 0 || v.Int64() > 255 {
		return 0, false
	}
	return uint8(v.Int64()), true
}

// reasonFromLog maps one GoBGP log record about a peer to a short human
// reason, or "" when the record says nothing new about why the session is
// not up (the caller then keeps the previous reason).
func reasonFromLog(msg string, f logFields, in reasonInput) string {
	switch msg {
	case logFailedToConnect:
		text, ok := f.str("Error")
		if !ok || text == "" {
			return ""
		}
		return dialReason(text, in.HasPassword)
	case logSentNotification:
		code, ok1 := f.code("Code")
		sub, ok2 := f.code("Subcode")
		if !ok1 || !ok2 {
			return ""
		}
		return sentNotificationReason(code, sub, in)
	case logRecvNotification:
		code, ok1 := f.code("Code")
		sub, ok2 := f.code("Subcode")
		if !ok1 || !ok2 {
			return ""
		}
		comm, _ := f.str("Communicated-Reason")
		return receivedNotificationReason(code, sub, comm, in)
	case logHoldTimerExpired:
		return "Hold timer expired"
	case logPeerDown:
		r, _ := f.str("Reason")
		return peerDownReason(r)
	case logStateChanged:
		return rejectedOpenReason(f, in)
	}
	return ""
}

// rejectedOpenReason covers a gap in GoBGP's logging: a NOTIFICATION
// received before the session is Established (typically the peer refusing
// our OPEN because of the AS number, after it sent its own OPEN) is never
// logged. The FSM only drops from OpenConfirm to Idle with reason
// "invalid-msg". GoBGP gives the same reason when it found a malformed
// message there, but then it logged "sent notification" first, and the
// observer keeps that more precise reason.
func rejectedOpenReason(f logFields, in reasonInput) string {
	from, _ := f.str("old")
	to, _ := f.str("new")
	r, _ := f.str("reason")
	if from != "BGP_FSM_OPENCONFIRM" || to != "BGP_FSM_IDLE" || r != "invalid-msg" {
		return ""
	}
	return fmt.Sprintf("Peer rejected our OPEN (AS mismatch? we announce AS %d)", in.LocalASN)
}

// Dial errors reach us as text ("dial tcp 10.0.0.1:0->10.0.0.2:179: connect:
// connection refused"); GoBGP v4 logs err.Error(), not the error. The last
// ": "-separated part is the system's message, compared with the messages of
// the errors we explain.
var dialReasons = []struct {
	err    error
	reason string
}{
	{syscall.ECONNREFUSED, "Connection refused"},
	{syscall.EHOSTUNREACH, "No route to host"},
	{syscall.ENETUNREACH, "Network is unreachable"},
	{syscall.EADDRNOTAVAIL, "Local address not available"},
	// Go ≥1.24 may use MPTCP, which rejects TCP_MD5SIG; go.mod sets
	// godebug multipathtcp=0 so that it does not.
	{syscall.ENOPROTOOPT, "Cannot set TCP MD5 on the socket (protocol not available; is GODEBUG multipathtcp=0 set?)"},
}

// dialReason explains a failed outgoing TCP connection from the error's
// text.
func dialReason(text string, hasPassword bool) string {
	last := text
	if i := strings.LastIndex(text, ": "); i >= 0 {
		last = text[i+2:]
	}
	if last == os.ErrDeadlineExceeded.Error() || last == syscall.ETIMEDOUT.Error() {
		// With TCP MD5 (RFC 2385) the kernel silently drops a SYN whose
		// signature is wrong, missing or unexpected, so a password problem
		// looks exactly like a dead peer: no answer at all.
		if hasPassword {
			return "TCP MD5 password mismatch or missing (no answer to SYN)"
		}
		return "Connection timed out (peer down or filtered, or it expects a TCP MD5 password)"
	}
	for _, d := range dialReasons {
		if last == d.err.Error() {
			return d.reason
		}
	}
	return "Connect failed: " + last
}

// sentNotificationReason explains a NOTIFICATION we sent: we found the error.
func sentNotificationReason(code, sub uint8, in reasonInput) string {
	switch code {
	case bgppkt.BGP_ERROR_OPEN_MESSAGE_ERROR:
		switch sub {
		case bgppkt.BGP_ERROR_SUB_BAD_PEER_AS:
			// GoBGP v4 logs neither the AS the peer announced nor its OPEN.
			return fmt.Sprintf("AS mismatch: peer's AS is not the configured %d", in.PeerASN)
		case bgppkt.BGP_ERROR_SUB_BAD_BGP_IDENTIFIER:
			return "Bad BGP identifier from peer (0.0.0.0, or the same router ID as ours)"
		case bgppkt.BGP_ERROR_SUB_UNACCEPTABLE_HOLD_TIME:
			return "Peer proposed an unacceptable hold time"
		}
		return "Bad OPEN from peer: " + notificationName(code, sub)
	case bgppkt.BGP_ERROR_HOLD_TIMER_EXPIRED:
		return "Hold timer expired"
	case bgppkt.BGP_ERROR_CEASE:
		if sub == bgppkt.BGP_ERROR_SUB_MAXIMUM_NUMBER_OF_PREFIXES_REACHED {
			return "Maximum number of prefixes reached: the peer sent more than podnet keeps from one peer"
		}
		// Otherwise we sent Cease because we are deconfiguring, resetting
		// or shutting down the peer, or resolving a connection collision:
		// not a failure.
		return ""
	case bgppkt.BGP_ERROR_FSM_ERROR:
		if sub == bgppkt.BGP_ERROR_SUB_RECEIVE_UNEXPECTED_MESSAGE_IN_OPENSENT_STATE {
			// GoBGP answers anything but an OPEN in OpenSent with this,
			// including a NOTIFICATION refusing our OPEN sent before the
			// peer's own OPEN (see rejectedOpenReason for the usual order).
			return fmt.Sprintf("Peer rejected our OPEN (AS mismatch? we announce AS %d)", in.LocalASN)
		}
	case bgppkt.BGP_ERROR_MESSAGE_HEADER_ERROR, bgppkt.BGP_ERROR_UPDATE_MESSAGE_ERROR:
		return "Malformed message from peer: " + notificationName(code, sub)
	}
	return "Sent notification: " + notificationName(code, sub)
}

// receivedNotificationReason explains a NOTIFICATION the peer sent us: the
// peer found the error, or chose to close the session.
func receivedNotificationReason(code, sub uint8, communication string, in reasonInput) string {
	switch {
	case code == bgppkt.BGP_ERROR_OPEN_MESSAGE_ERROR && sub == bgppkt.BGP_ERROR_SUB_BAD_PEER_AS:
		return fmt.Sprintf("AS mismatch: peer rejected our AS %d", in.LocalASN)
	case code == bgppkt.BGP_ERROR_HOLD_TIMER_EXPIRED:
		return "Peer's hold timer expired"
	case code == bgppkt.BGP_ERROR_CEASE && sub == bgppkt.BGP_ERROR_SUB_CONNECTION_COLLISION_RESOLUTION:
		// The other of the two parallel connections survives.
		return ""
	}
	r := "Peer closed the session: " + notificationName(code, sub)
	if communication != "" {
		r += fmt.Sprintf(" (%q)", communication)
	}
	return r
}

// peerDownReason maps the "Reason" of GoBGP's "Peer Down" record (logged
// when an Established session ends). Notifications were already logged, with
// more detail, by the time "Peer Down" is, so they map to "".
func peerDownReason(r string) string {
	switch r {
	case "read-failed":
		return "Connection lost (closed or reset by peer)"
	case "write-failed":
		return "Connection lost (write failed)"
	case "hold-timer-expired":
		return "Hold timer expired"
	}
	return ""
}

var notificationCodeNames = map[uint8]string{
	bgppkt.BGP_ERROR_MESSAGE_HEADER_ERROR:        "message header error",
	bgppkt.BGP_ERROR_OPEN_MESSAGE_ERROR:          "OPEN message error",
	bgppkt.BGP_ERROR_UPDATE_MESSAGE_ERROR:        "UPDATE message error",
	bgppkt.BGP_ERROR_HOLD_TIMER_EXPIRED:          "hold timer expired",
	bgppkt.BGP_ERROR_FSM_ERROR:                   "FSM error",
	bgppkt.BGP_ERROR_CEASE:                       "cease",
	bgppkt.BGP_ERROR_ROUTE_REFRESH_MESSAGE_ERROR: "ROUTE-REFRESH message error",
}

// notificationName is "<code>: <subcode>" in words, e.g. "cease: peer
// deconfigured". Subcode names come from GoBGP's table (RFC 4271 §4.5, RFC
// 4486), read out of NotificationErrorCode.String's "subcode N(name)".
func notificationName(code, sub uint8) string {
	c, ok := notificationCodeNames[code]
	if !ok {
		c = fmt.Sprintf("code %d", code)
	}
	s := bgppkt.NewNotificationErrorCode(code, sub).String()
	i := strings.LastIndexByte(s, '(')
	if i < 0 || !strings.HasSuffix(s, ")") {
		return c
	}
	name := s[i+1 : len(s)-1]
	if name == "undefined" || name == c {
		if sub != 0 {
			return fmt.Sprintf("%s: subcode %d", c, sub)
		}
		return c
	}
	return c + ": " + name
}
