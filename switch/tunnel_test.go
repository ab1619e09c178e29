package vswitch

import (
	"testing"

	"podnet/internal/packet"
	"podnet/router"
)

// A reader lets go of its lane toward a tunnel once the tunnel is
// detached (DetachTunnel when no pool uses the encapsulation any more):
// switching a pool's mode off and on again holds no more lanes per reader
// than switching it once.
func TestDetachedTunnelLaneDropped(t *testing.T) {
	n := newFakeNet(t)
	f := newForwarder(n.s)
	n.s.mu.Lock()
	a := n.s.att.pods[n.a.port]
	n.s.mu.Unlock()
	frame := podFrame(n.a, ipSpec{src: "10.0.0.1", dst: "10.0.1.9", payload: 64}.build())
	buf := make([]byte, packet.BufferSize)
	for round := range 5 {
		f.begin()
		f.fromPod(a, buf, packet.Headroom, copy(buf[packet.Headroom:], frame))
		f.end()
		n.s.mu.Lock()
		id := n.s.att.tunnels[router.EncapIPIP].lane
		n.s.mu.Unlock()
		if id >= len(f.lanes) || f.lanes[id] == nil {
			t.Fatalf("round %d: no lane toward the IP-in-IP tunnel after sending through it", round)
		}
		if err := n.s.DetachTunnel(router.EncapIPIP); err != nil {
			t.Fatal(err)
		}
		if err := n.s.AttachUnderlay(UnderlayConfig{Conn: &fakeIPIP{fakeQueue: newFakeQueue()}, MTU: 1500, LocalAddr: nodeSelf}); err != nil {
			t.Fatal(err)
		}
		f.begin()
		f.end()
		if f.lanes[id] != nil {
			t.Fatalf("round %d: the reader still holds lane %d toward the detached tunnel", round, id)
		}
	}
	held := 0
	for _, l := range f.lanes {
		if l != nil {
			held++
		}
	}
	if held != 0 {
		t.Errorf("after the last detach the reader holds %d lanes, want none", held)
	}
}
