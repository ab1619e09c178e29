package vswitch

import (
	"errors"
	"time"

	"podnet/internal/packet"
	"podnet/internal/turn"
)

// Reply polling: a reader that has just written to a pod polls that pod's
// TAP for a moment before it goes back to its own port. An answer that
// comes within ReplyPoll (a ping reply, which the pod's kernel makes while
// our write is still in progress, or a server's response) is forwarded at
// once by the reader already running, instead of by the pod's own reader,
// which the kernel would first have to wake: on a virtual machine each
// such wake-up costs tens of microseconds, and a round trip has several.
//
// Only small batches are followed by polling (smallBatch): a request that
// waits for its answer is one or two small packets, while bulk transfers
// come in full batches or superframes and are better left to their own
// readers, which keep the CPU for the pods' own work.
//
// The pod's turn (package turn) keeps its packets in order: whoever reads
// the TAP holds it until what it read is forwarded. A pod that does not
// answer within the window pollMisses times in a row is left alone for
// pollQuiet, so one-way traffic costs little polling.
const (
	pollMisses    = 4
	pollQuiet     = 10 * time.Millisecond
	pollBatch     = 2
	pollFrameSize = 512 // a request or an answer, not a full-sized segment
)

// pollReply polls pod p for up to s.replyPoll and forwards what it finds
// as the pod's own reader would, using f and the reader's buffers. It
// reports whether it found an answer that looks like one (small): bulk
// data found instead quiets the pod for pollQuiet.
func (s *Switch) pollReply(f *forwarder, p *podPort, bufs [][]byte, sizes []int) bool {
	if s.replyPoll == 0 {
		return false
	}
	now := time.Now()
	if now.UnixNano() < p.quietUntil.Load() {
		return false
	}
	deadline := now.Add(s.replyPoll)
	for {
		n, err := p.poll.TryRead(bufs, sizes, packet.Headroom)
		if n > 0 {
			small := smallBatch(n, bufs, sizes, p.skip())
			s.forwardBatch(f, &p.c, n, bufs, sizes, &p.capt, p.skip(), LinkEthernet, p.classify)
			p.turn.Done()
			p.c.polled.Add(1)
			p.misses.Store(0)
			f.replyFrom = nil // one answer per poll: the reader's own port waits
			if !small {
				// Bulk data answering an ACK, not a reply to a request:
				// leave this pod to its own reader for a while, so that
				// one reader does not end up carrying both directions of
				// a transfer.
				p.quietUntil.Store(time.Now().Add(pollQuiet).UnixNano())
				return false
			}
			return true
		}
		if errors.Is(err, turn.ErrHeld) || err != nil {
			return false // its own reader is at it, or the port is closing
		}
		if !time.Now().Before(deadline) {
			break
		}
	}
	if p.misses.Add(1) >= pollMisses {
		p.misses.Store(0)
		p.quietUntil.Store(time.Now().Add(pollQuiet).UnixNano())
	}
	return false
}

// spinOwn polls the reader's own pod until deadline, for the request that
// tends to follow an answer delivered to it (request/response traffic).
// It returns what TryRead returned, holding the turn when n > 0, or 0 and
// no error at the deadline or when the turn is held elsewhere.
func (s *Switch) spinOwn(self *podPort, bufs [][]byte, sizes []int, deadline time.Time) (int, error) {
	for {
		n, err := self.poll.TryRead(bufs, sizes, packet.Headroom)
		if n > 0 {
			self.c.polled.Add(1)
			return n, nil
		}
		if err != nil && !errors.Is(err, turn.ErrHeld) {
			return 0, err
		}
		if err != nil || !time.Now().Before(deadline) {
			return 0, nil
		}
	}
}
