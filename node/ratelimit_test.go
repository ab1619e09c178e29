package node

import (
	"testing"
	"time"
)

// TestRateLimited: a burst of kicks is one call, made when the interval
// is over; a kick after that call is another. The schedule is the
// test's, so no timing is involved.
func TestRateLimited(t *testing.T) {
	calls := 0
	var due []func()
	r := &rateLimited{every: time.Hour, f: func() { calls++ },
		after: func(d time.Duration, f func()) {
			if d != time.Hour {
				t.Errorf("scheduled after %v, want the interval", d)
			}
			due = append(due, f)
		}}
	for range 1000 {
		r.kick()
	}
	if len(due) != 1 || calls != 0 {
		t.Fatalf("1000 kicks: %d scheduled, %d calls; want one scheduled, none yet", len(due), calls)
	}
	due[0]()
	if calls != 1 {
		t.Fatalf("%d calls when the interval is over, want 1", calls)
	}
	r.kick()
	r.kick()
	if len(due) != 2 {
		t.Fatalf("kicks after the call: %d scheduled in all, want 2", len(due))
	}
	due[1]()
	if calls != 2 {
		t.Fatalf("%d calls in all, want 2", calls)
	}
}
