package vswitch

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Capture receives copies of the packets crossing one port, for
// `podnet capture`. While no capture is attached, the data path pays one
// atomic load per batch read and per packet sent; while one is, it copies
// each packet it has room for (an allocation per packet, on purpose only
// then) and counts the ones it has no room for, without copying them.
type Capture struct {
	// C delivers the packets; it is closed by Stop, or when the port goes
	// away (Ended says so). The reader hands each packet back with Release
	// once done with it.
	C <-chan CapturedPacket
	c chan CapturedPacket

	port    *atomic.Pointer[Capture]
	dropped atomic.Uint64
	// queued is the bytes of copies sent on C and not yet released;
	// allQueued the same summed over the switch's captures.
	queued    atomic.Int64
	allQueued *atomic.Int64
	// mu orders put against Stop closing c: readers that loaded the
	// capture before Stop detached it may still be putting a copy.
	mu      sync.RWMutex
	stopped bool
	ended   string // why the switch ended it; "" for Stop
}

// What captures may hold for readers that fall behind: a copy is up to
// 64 KiB (a TSO superframe), so a bound on packets alone would let one
// stalled capture pin hundreds of MB.
const (
	captureBytes      = 8 << 20  // one capture
	captureTotalBytes = 32 << 20 // all captures of a switch
)

// LinkType says what CapturedPacket.Data starts with.
type LinkType uint8

const (
	// LinkEthernet: an Ethernet frame (pod ports), without the virtio header.
	LinkEthernet LinkType = iota
	// LinkIPv4: an IPv4 packet (the host port; tunnels show inner packets).
	LinkIPv4
)

// CapturedPacket is one copy.
type CapturedPacket struct {
	Time time.Time
	// Out: the switch sent it to the port; else the port sent it to the
	// switch.
	Out  bool
	Link LinkType
	Data []byte
}

// Dropped is how many copies were lost because the reader was slow.
func (c *Capture) Dropped() uint64 { return c.dropped.Load() }

// Release returns p's bytes to the capture's budget; the reader calls it
// for each packet it has taken from C.
func (c *Capture) Release(p CapturedPacket) { c.unreserve(int64(len(p.Data))) }

// Stop detaches the capture, closes C once the data path has let go, and
// releases the copies the reader has not taken.
func (c *Capture) Stop() {
	c.end("")
	for p := range c.c {
		c.Release(p)
	}
}

// Ended says why the switch ended the capture (its port went away), or
// "" if it did not.
func (c *Capture) Ended() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ended
}

// end detaches the capture and closes C once the data path has let go;
// the reader still gets what C holds. The first end's reason stays.
func (c *Capture) end(why string) {
	c.port.CompareAndSwap(c, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopped = true
		c.ended = why
		close(c.c)
	}
}

// endCapture ends the capture on slot, if any, whose port has gone away:
// its reader would otherwise wait for packets that cannot come.
func endCapture(slot *atomic.Pointer[Capture], why string) {
	if c := slot.Load(); c != nil {
		c.end(why)
	}
}

// put copies b to the capture; it never blocks the data path. Room is
// checked before copying, so a reader that has fallen behind costs each
// packet a count, not an allocation.
func (c *Capture) put(out bool, link LinkType, b []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.stopped {
		return
	}
	size := int64(len(b))
	if len(c.c) == cap(c.c) || !c.reserve(size) {
		c.dropped.Add(1)
		return
	}
	p := CapturedPacket{Time: time.Now(), Out: out, Link: link, Data: append([]byte(nil), b...)}
	select {
	case c.c <- p:
	default: // another port's reader took the last slot meanwhile
		c.unreserve(size)
		c.dropped.Add(1)
	}
}

// reserve counts n more bytes queued, unless that would go over this
// capture's or all captures' bound.
func (c *Capture) reserve(n int64) bool {
	if c.queued.Add(n) > captureBytes {
		c.queued.Add(-n)
		return false
	}
	if c.allQueued.Add(n) > captureTotalBytes {
		c.allQueued.Add(-n)
		c.queued.Add(-n)
		return false
	}
	return true
}

func (c *Capture) unreserve(n int64) {
	c.queued.Add(-n)
	c.allQueued.Add(-n)
}

// StartCapture attaches a capture to port: a pod's name, "host", or a
// tunnel ("ipip", "vxlan", whose inner packets it shows). One capture per
// port at a time. buffer bounds the packets it holds (0: 4096); their
// bytes are bounded too, per capture and over all captures.
func (s *Switch) StartCapture(port string, buffer int) (*Capture, error) {
	if buffer <= 0 {
		buffer = 4096
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var slot *atomic.Pointer[Capture]
	switch {
	case port == "host" || port == HostTUNName:
		if s.att.host != nil {
			slot = &s.att.host.capt
		}
	default:
		for _, t := range s.att.tunnels {
			if t != nil && t.t.Device() == port {
				slot = &t.capt
			}
		}
		for _, p := range s.att.pods {
			if p != nil && p.name == port {
				slot = &p.capt
			}
		}
	}
	if slot == nil {
		return nil, fmt.Errorf("capture: no port %q on this node (a pod's name, host, ipip or vxlan)", port)
	}
	ch := make(chan CapturedPacket, buffer)
	c := &Capture{C: ch, c: ch, port: slot, allQueued: &s.captureQueued}
	if !slot.CompareAndSwap(nil, c) {
		return nil, fmt.Errorf("capture: a capture is already running on %s", port)
	}
	return c, nil
}
