// Package turn lets goroutines take turns reading one device.
//
// A port's own reader waits on its device; another reader that has just
// sent the port a packet may poll it for the answer without waiting for
// the owner to wake (reply polling, docs/datapath.md). Whoever reads
// holds the turn until the packets it read are forwarded, so packets of
// one flow leave in the order they arrived, whichever goroutine read them.
// Nobody holds the turn while parked.
package turn

import (
	"errors"
	"runtime"
	"sync/atomic"
)

// Turn is free or held; the zero value is free.
type Turn struct{ held atomic.Bool }

// Try takes the turn if it is free and reports whether it did.
func (t *Turn) Try() bool {
	// The Load keeps a poller that finds the turn held from writing the
	// cache line the holder uses.
	return !t.held.Load() && t.held.CompareAndSwap(false, true)
}

// Take takes the turn, yielding while another goroutine holds it (only
// ever for one batch: a read and its forwarding).
func (t *Turn) Take() {
	for !t.Try() {
		runtime.Gosched()
	}
}

// Done gives the turn back.
func (t *Turn) Done() { t.held.Store(false) }

// ErrHeld is what a non-blocking read returns when another goroutine
// holds the device's turn: that one is reading it now.
var ErrHeld = errors.New("turn held by another reader")
