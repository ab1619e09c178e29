package bgp

// This file turns what GoBGP tells us about a failing peer (log records,
// NOTIFICATION codes, dial errors) into the short reason shown in
// PeerStatus.Info. The functions are pure so the mapping can be unit-tested
// with the error values GoBGP really produces.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"syscall"

	"github.com/osrg/gobgp/v3/pkg/log"
	bgppkt "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// reasonInput is what the mapping needs to know about the peer.
type reasonInput struct {
	HasPassword bool
	PeerASN     uint32 // configured remote AS
	LocalASN    uint32 // AS we announce to this peer
}

// GoBGP v3.37.0 log messages that carry a peer's failure reason. They are
// matched exactly; a GoBGP upgrade that rewords them makes the reasons fall
// back to the bare FSM state, which TestReasonFromLog would catch only for
// the messages it knows, so re-read fsm.go on upgrade.
const (
	logFailedToConnect  = "failed to connect"     // Debug; field "Error" (error)
	logSentNotification = "sent notification"     // Warn; "Code"/"Subcode" (uint8) or "Data" (*bgp.MessageError)
	logRecvNotification = "received notification" // Warn; "Code", "Subcode", optional "Communicated-Reason"
	logHoldTimerExpired = "hold timer expired"    // Warn
	logPeerDown         = "Peer Down"             // Info; "Reason" (fsmStateReason.String())
	logStateChanged     = "state changed"         // Debug; "old", "new" (FSMState.String()), "reason" (*fsmStateReason)
)

// reasonFromLog maps one GoBGP log record about a peer to a short human
// reason, or "" when the record says nothing new about why the session is
// not up (the caller then keeps the previous reason).
func reasonFromLog(msg string, f log.Fields, in reasonInput) string {
	switch msg {
	case logFailedToConnect:
		err, _ := f["Error"].(error)
		if err == nil {
			return ""
		}
		return dialReason(err, in.HasPassword)
	case logSentNotification:
		if me, ok := f["Data"].(*bgppkt.MessageError); ok {
			return sentNotificationReason(me.TypeCode, me.SubTypeCode, me.Message, in)
		}
		code, ok1 := f["Code"].(uint8)
		sub, ok2 := f["Subcode"].(uint8)
		if !ok1 || !ok2 {
			return ""
		}
		return sentNotificationReason(code, sub, "", in)
	case logRecvNotification:
		code, ok1 := f["Code"].(uint8)
		sub, ok2 := f["Subcode"].(uint8)
		if !ok1 || !ok2 {
			return ""
		}
		comm, _ := f["Communicated-Reason"].(string)
		return receivedNotificationReason(code, sub, comm, in)
	case logHoldTimerExpired:
		return "Hold timer expired"
	case logPeerDown:
		r, _ := f["Reason"].(string)
		return peerDownReason(r)
	case logStateChanged:
		return rejectedOpenReason(f, in)
	}
	return ""
}

// rejectedOpenReason covers a gap in GoBGP v3's logging: a NOTIFICATION
// received before the session is Established (typically the peer refusing
// our OPEN because of the AS number) is never logged. The FSM only drops
// from OpenSent/OpenConfirm to Idle with reason "invalid-msg" and no
// notification of its own attached (when we send one, fsmStateReason carries
// it, and "sent notification" has already said why).
func rejectedOpenReason(f log.Fields, in reasonInput) string {
	from, _ := f["old"].(string)
	to, _ := f["new"].(string)
	if to != "BGP_FSM_IDLE" || (from != "BGP_FSM_OPENSENT" && from != "BGP_FSM_OPENCONFIRM") {
		return ""
	}
	r, ok := f["reason"].(fmt.Stringer)
	if !ok || r.String() != "invalid-msg" || stateReasonHasNotification(f["reason"]) {
		return ""
	}
	return fmt.Sprintf("Peer rejected our OPEN (AS mismatch? we announce AS %d)", in.LocalASN)
}

// stateReasonHasNotification reports whether GoBGP's unexported
// fsmStateReason has its exported BGPNotification field set. Reflection is
// the only way in from outside GoBGP's package; an unknown shape reads as
// "has one", so the caller stays quiet rather than guess.
func stateReasonHasNotification(v any) bool {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return true
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return true
	}
	n := rv.FieldByName("BGPNotification")
	if !n.IsValid() || n.Kind() != reflect.Pointer {
		return true
	}
	return !n.IsNil()
}

// dialReason explains a failed outgoing TCP connection.
func dialReason(err error, hasPassword bool) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "Connection refused"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &ne) && ne.Timeout():
		// With TCP MD5 (RFC 2385) the kernel silently drops a SYN whose
		// signature is wrong, missing or unexpected, so a password problem
		// looks exactly like a dead peer: no answer at all.
		if hasPassword {
			return "TCP MD5 password mismatch or missing (no answer to SYN)"
		}
		return "Connection timed out (peer down or filtered, or it expects a TCP MD5 password)"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "No route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "Network is unreachable"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "Local address not available"
	case errors.Is(err, syscall.ENOPROTOOPT):
		// Go ≥1.24 listens/dials with MPTCP, which rejects TCP_MD5SIG:
		// go.mod sets godebug multipathtcp=0 for that reason.
		return "Cannot set TCP MD5 on the socket (protocol not available; is GODEBUG multipathtcp=0 set?)"
	}
	// Keep the innermost text: "dial tcp 1.2.3.4:0->5.6.7.8:179: connect: x"
	// becomes "x".
	for {
		u := errors.Unwrap(err)
		if u == nil {
			break
		}
		err = u
	}
	return "Connect failed: " + err.Error()
}

// sentNotificationReason explains a NOTIFICATION we sent: we found the error.
// text is GoBGP's MessageError.Message when known.
func sentNotificationReason(code, sub uint8, text string, in reasonInput) string {
	switch code {
	case bgppkt.BGP_ERROR_OPEN_MESSAGE_ERROR:
		switch sub {
		case bgppkt.BGP_ERROR_SUB_BAD_PEER_AS:
			var want, got uint32
			// GoBGP's text: "as number mismatch expected %d, received %d".
			if _, err := fmt.Sscanf(text, "as number mismatch expected %d, received %d", &want, &got); err == nil {
				return fmt.Sprintf("AS mismatch: peer says %d, configured %d", got, want)
			}
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
		// We sent Cease because we are deconfiguring, resetting or shutting
		// down the peer, or resolving a connection collision: not a failure.
		return ""
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
