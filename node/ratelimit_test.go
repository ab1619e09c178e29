package node

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestRateLimited: a burst of kicks is one call, after the interval; a
// kick after that call is another.
func TestRateLimited(t *testing.T) {
	var calls atomic.Int32
	done := make(chan struct{}, 4)
	r := &rateLimited{every: 50 * time.Millisecond, f: func() { calls.Add(1); done <- struct{}{} }}
	for range 1000 {
		r.kick()
	}
	<-done
	time.Sleep(200 * time.Millisecond) // a second call, if any, would be in by now
	if got := calls.Load(); got != 1 {
		t.Fatalf("1000 kicks in a burst: %d calls, want 1", got)
	}
	r.kick()
	<-done
	if got := calls.Load(); got != 2 {
		t.Fatalf("a kick after the call: %d calls in all, want 2", got)
	}
}
