package vswitch

import (
	"testing"
	"time"

	"podnet/internal/packet"
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
