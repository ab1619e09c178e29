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
// each packet (an allocation per packet, on purpose only then) and drops
// copies the reader does not take in time, counting them.
type Capture struct {
	// C delivers the packets; it is closed by Stop.
	C <-chan CapturedPacket
	c chan CapturedPacket

	port    *atomic.Pointer[Capture]
	dropped atomic.Uint64
	// mu orders put against Stop closing c: readers that loaded the
	// capture before Stop detached it may still be putting a copy.
	mu      sync.RWMutex
	stopped bool
}

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

// Stop detaches the capture and closes C once the data path has let go.
func (c *Capture) Stop() {
	c.port.CompareAndSwap(c, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopped = true
		close(c.c)
	}
}

// put copies b to the capture; it never blocks the data path.
func (c *Capture) put(out bool, link LinkType, b []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.stopped {
		return
	}
	p := CapturedPacket{Time: time.Now(), Out: out, Link: link, Data: append([]byte(nil), b...)}
	select {
	case c.c <- p:
	default:
		c.dropped.Add(1)
	}
}

// StartCapture attaches a capture to port: a pod's name, "host", or a
// tunnel ("ipip", "vxlan", whose inner packets it shows). One capture per
// port at a time.
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
	c := &Capture{C: ch, c: ch, port: slot}
	if !slot.CompareAndSwap(nil, c) {
		return nil, fmt.Errorf("capture: a capture is already running on %s", port)
	}
	return c, nil
}
