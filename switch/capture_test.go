package vswitch

import (
	"testing"
	"time"

	"podnet/internal/packet"
	"podnet/router"
)

// TestCapture: a capture on a pod port sees what the pod sends and what it
// receives, as Ethernet frames without virtio headers; a tunnel capture
// sees inner packets; after Stop nothing more arrives and C is closed.
func TestCapture(t *testing.T) {
	n := newFakeNet(t)
	ca, err := n.s.StartCapture("a", 16)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.s.StartCapture("a", 16); err == nil {
		t.Errorf("second capture on the same port: no error")
	}
	if _, err := n.s.StartCapture("nope", 16); err == nil {
		t.Errorf("capture on a missing port: no error")
	}
	cv, err := n.s.StartCapture("vxlan", 16)
	if err != nil {
		t.Fatal(err)
	}
	out := ipSpec{src: "10.0.0.1", dst: "10.0.2.9", payload: 10}.build()
	n.a.dev.offer(podFrame(n.a, out))
	n.vx.wait(t, 1) // out first, then the answer: two readers, one order
	back := ipSpec{src: "10.0.2.9", dst: "10.0.0.1", payload: 10}.build()
	n.vx.offer(nodeVXLAN, vxlanDatagram(back, 4096))
	n.a.dev.wait(t, 1)

	next := func(c *Capture) CapturedPacket {
		select {
		case p := <-c.C:
			return p
		case <-time.After(5 * time.Second):
			t.Fatal("no captured packet")
		}
		return CapturedPacket{}
	}
	p1, p2 := next(ca), next(ca)
	if p1.Out || p1.Link != LinkEthernet || packet.Ethernet(p1.Data).Src() != n.a.mac {
		t.Errorf("first copy on a: out %v link %v, want the pod's own frame in", p1.Out, p1.Link)
	}
	if !p2.Out || packet.Ethernet(p2.Data).Dst() != n.a.mac || packet.IPv4(p2.Data[ethLen:]).Src().String() != "10.0.2.9" {
		t.Errorf("second copy on a: out %v, want the frame from 10.0.2.9 to the pod", p2.Out)
	}
	v1, v2 := next(cv), next(cv)
	if !v1.Out || v1.Link != LinkIPv4 || packet.IPv4(v1.Data).Dst().String() != "10.0.2.9" {
		t.Errorf("vxlan copy 1: %+v, want the inner packet out to 10.0.2.9", v1)
	}
	if v2.Out || packet.IPv4(v2.Data).Src().String() != "10.0.2.9" {
		t.Errorf("vxlan copy 2: %+v, want the inner packet in from 10.0.2.9", v2)
	}
	ca.Stop()
	cv.Stop()
	n.a.dev.offer(podFrame(n.a, out))
	n.vx.wait(t, 2)
	if _, ok := <-ca.C; ok {
		t.Errorf("capture delivered after Stop")
	}
	if _, err := n.s.StartCapture("a", 16); err != nil {
		t.Errorf("capture after Stop: %v", err)
	}
}

// TestCaptureFullCostsNoCopy: once a capture's reader falls behind and
// its queue is full, each further packet is only counted: no copy, no
// allocation on the data path.
func TestCaptureFullCostsNoCopy(t *testing.T) {
	n := newFakeNet(t)
	c, err := n.s.StartCapture("a", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	frame := make([]byte, 1500)
	for range 4 {
		c.put(false, LinkEthernet, frame)
	}
	if allocs := testing.AllocsPerRun(100, func() { c.put(false, LinkEthernet, frame) }); allocs != 0 {
		t.Errorf("%v allocations per packet with the queue full, want 0", allocs)
	}
	if got := c.Dropped(); got != 101 {
		t.Errorf("%d dropped, want the 101 packets that found the queue full", got)
	}
}

// TestCaptureByteBounds: what a capture holds is bounded in bytes, per
// capture and over all of a switch's captures; what goes over is
// dropped and counted; Release and Stop give the bytes back.
func TestCaptureByteBounds(t *testing.T) {
	n := newFakeNet(t)
	big := make([]byte, 64<<10) // a TSO superframe
	perCapture := captureBytes / len(big)
	fill := func(c *Capture) {
		t.Helper()
		for range perCapture + 1 {
			c.put(false, LinkEthernet, big)
		}
		if len(c.C) != perCapture || c.Dropped() != 1 {
			t.Fatalf("%d queued, %d dropped; want %d queued (%d bytes) and the next one dropped",
				len(c.C), c.Dropped(), perCapture, captureBytes)
		}
	}
	// Enough captures, each full, to hold all that captures may hold.
	var full []*Capture
	for _, port := range []string{"a", "b", "c", "d"}[:captureTotalBytes/captureBytes] {
		c, err := n.s.StartCapture(port, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		fill(c)
		full = append(full, c)
	}
	h, err := n.s.StartCapture("host", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	h.put(true, LinkIPv4, big)
	if len(h.C) != 0 || h.Dropped() != 1 {
		t.Errorf("with all captures holding %d bytes: %d queued, %d dropped on another; want it dropped",
			captureTotalBytes, len(h.C), h.Dropped())
	}
	// A packet read and released makes room for one more.
	full[0].Release(<-full[0].C)
	full[0].put(false, LinkEthernet, big)
	if len(full[0].C) != perCapture || full[0].Dropped() != 1 {
		t.Errorf("after one Release: %d queued, %d dropped; want %d, 1", len(full[0].C), full[0].Dropped(), perCapture)
	}
	// A stopped capture's unread copies no longer count.
	full[1].Stop()
	h.put(true, LinkIPv4, big)
	if len(h.C) != 1 {
		t.Errorf("after Stop of a full capture: %d queued on another, want 1", len(h.C))
	}
}

// TestCaptureEndsWithItsPort: removing a pod port or detaching a tunnel
// ends the capture on it, saying why, rather than leave it waiting for
// packets that cannot come; a pod added again under the same name can
// be captured at once.
func TestCaptureEndsWithItsPort(t *testing.T) {
	n := newFakeNet(t)
	ca, err := n.s.StartCapture("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Stop()
	cv, err := n.s.StartCapture("vxlan", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cv.Stop()
	ended := func(c *Capture, want string) {
		t.Helper()
		select {
		case _, ok := <-c.C:
			if ok {
				t.Fatalf("a packet instead of the end")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("capture not ended 5s after its port went away (want %q)", want)
		}
		if c.Ended() != want {
			t.Errorf("ended: %q, want %q", c.Ended(), want)
		}
	}
	if err := n.s.RemovePort(n.a.port); err != nil {
		t.Fatal(err)
	}
	ended(ca, "pod a was removed")
	if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
		t.Fatal(err)
	}
	ended(cv, "tunnel vxlan was detached")

	n.addPod(t, "a", "10.0.0.1", true)
	again, err := n.s.StartCapture("a", 0)
	if err != nil {
		t.Fatalf("capture of the pod added again: %v", err)
	}
	again.Stop()
	if again.Ended() != "" {
		t.Errorf("a capture stopped by its reader: ended %q, want \"\"", again.Ended())
	}
}
