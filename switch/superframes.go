package vswitch

import (
	"errors"
	"log/slog"
	"os"
	"sync/atomic"

	"podnet/router"
)

// superframeSink is where a tunnel sends TCP superframes whole, for the
// node's kernel (or its NIC) to segment: encap.VXLANTap and
// encap.IPIPTap. Each tunnel adds its own Frame.
type superframeSink interface {
	// Send writes a frame Frame built.
	Send(frame []byte) error
	// Err is non-nil once what Send writes no longer gets through (the
	// kernel drops it); the switch then stops using it.
	Err() error
}

// superframeGate is a tunnel's use of its superframeSink: it turns the
// sink off for good, with a warning, once the sink reports an error or
// refuses a few superframes in a row; the tunnel then gets superframes
// cut, as without a sink.
type superframeGate struct {
	tunnel string         // the tunnel's device name, for the log
	sink   superframeSink // nil: none
	off    atomic.Bool
	err    atomic.Pointer[error] // why, once off
	fails  atomic.Int32          // sends refused in a row
	log    *slog.Logger
}

// maxSuperframeFails is how many superframes in a row a sink may refuse.
const maxSuperframeFails = 3

// limit is the largest superframe the tunnel takes whole now: max while
// the sink works, 0 without one or once it failed.
func (g *superframeGate) limit(max int) int {
	if g.sink == nil || g.off.Load() {
		return 0
	}
	if err := g.sink.Err(); err != nil {
		g.fail(err)
		return 0
	}
	return max
}

// send hands frame to the sink. A few refusals in a row turn the sink
// off (one odd frame, or a moment without memory, should not); the
// caller counts the drop. A closed sink is the tunnel going away.
func (g *superframeGate) send(frame []byte) error {
	err := g.sink.Send(frame)
	switch {
	case err == nil:
		g.fails.Store(0)
	case errors.Is(err, os.ErrClosed):
	case g.fails.Add(1) >= maxSuperframeFails:
		g.fail(err)
	}
	return err
}

// fail turns the sink off.
func (g *superframeGate) fail(err error) {
	g.err.CompareAndSwap(nil, &err)
	if !g.off.Swap(true) {
		g.log.Warn(g.tunnel+": superframes sent whole do not get through; cutting them in userspace from now on", "err", err)
	}
}

// failure is why the sink is off or failing, nil while it works or
// without one.
func (g *superframeGate) failure() error {
	if p := g.err.Load(); p != nil {
		return *p
	}
	if g.sink == nil {
		return nil
	}
	return g.sink.Err()
}

// flushInOrder sends a queue of datagrams and whole superframes
// (whole[i]) in order: each run of datagrams in one write call, each
// superframe through g in its place, so a flow's packets leave in the
// order they came. It returns how many were sent and how many of those
// were superframes.
func flushInOrder[D any](pkts [][]byte, dsts []D, whole []bool, write func([][]byte, []D) (int, error), g *superframeGate) (sent, superframes int, err error) {
	var errs []error
	run := 0 // first datagram not sent yet
	for j := 0; j <= len(pkts); j++ {
		if j < len(pkts) && !whole[j] {
			continue
		}
		if j > run {
			n, err := write(pkts[run:j], dsts[run:j])
			sent += n
			if err != nil {
				errs = append(errs, err)
			}
		}
		if j < len(pkts) {
			if err := g.send(pkts[j]); err != nil {
				errs = append(errs, err)
			} else {
				sent++
				superframes++
			}
		}
		run = j + 1
	}
	return sent, superframes, errors.Join(errs...)
}

// tunnelSuperframes says whether a tunnel of encapsulation e is attached
// and, if it was given a superframe sink, why it no longer sends
// superframes whole (nil: it does, or it never did).
func (s *Switch) tunnelSuperframes(e router.Encap) (attached bool, failure error) {
	s.mu.Lock()
	tp := s.att.tunnels[e]
	s.mu.Unlock()
	if tp == nil {
		return false, nil
	}
	if g, ok := tp.t.(interface{ gate() *superframeGate }); ok {
		return true, g.gate().failure()
	}
	return true, nil
}
