package node

import (
	"testing"

	"podnet/router"
)

// A close is scheduled once when a tunnel falls out of use: later
// reconciles that find it still unused do not put it off, and a pool that
// takes it up again cancels it.
func TestTunnelCloseSchedule(t *testing.T) {
	var ts tunnelState
	e := router.EncapVXLAN
	ts.open[e] = true

	schedule, gen := ts.unused(e)
	if !schedule {
		t.Fatal("first unused: no close scheduled")
	}
	for i := range 3 { // reconciles within the grace period
		if again, _ := ts.unused(e); again {
			t.Fatalf("reconcile %d scheduled another close, putting the first off", i+1)
		}
	}
	if !ts.due(e, gen) {
		t.Fatal("the first close is no longer due after reconciles that kept the tunnel unused")
	}

	ts.wanted(e)
	if ts.due(e, gen) {
		t.Fatal("a pool took the tunnel up again, yet its close is still due")
	}
	schedule, gen2 := ts.unused(e)
	if !schedule || gen2 == gen || ts.due(e, gen) || !ts.due(e, gen2) {
		t.Fatalf("unused again: schedule %v, gen %d (was %d); only the new close must be due", schedule, gen2, gen)
	}
	ts.wanted(router.EncapIPIP) // another encapsulation leaves e alone
	if !ts.due(e, gen2) {
		t.Fatal("IP-in-IP wanted cancelled VXLAN's close")
	}
}
