package ipam

import (
	"context"
	"time"
)

// rewatchDelay is how long routineWatch waits before watching again after
// etcd ended a watch (compaction, lost leader, etcd down), so that a dead
// etcd does not make it spin.
const rewatchDelay = 200 * time.Millisecond

// Changes returns a channel that receives a value when blocks or block
// affinities change: a coalescing "IPAM dirty" signal, never one value
// per change. Receivers re-read what they need (NodeBlocks, Allocations).
// A value is sent at once, and again whenever the watch had to restart
// and changes may have been missed, so the first read and every gap are
// covered. The channel is closed when ctx is done and the watching
// goroutine has exited; receive until then to wait for it.
func (m *IPAM) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go m.routineWatch(ctx, out)
	return out
}

// routineWatch watches blocks and affinities for Changes, which starts
// it. It exits when ctx is done and closes out.
func (m *IPAM) routineWatch(ctx context.Context, out chan<- struct{}) {
	defer close(out)
	notify := func() {
		select {
		case out <- struct{}{}:
		default: // a signal is pending already
		}
	}
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		blocks, affs := m.blocks.Watch(wctx, 0), m.affinities.Watch(wctx, 0)
		notify()
	loop:
		for {
			select {
			case _, ok := <-blocks:
				if !ok {
					break loop
				}
			case _, ok := <-affs:
				if !ok {
					break loop
				}
			}
			notify()
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(rewatchDelay):
		}
	}
}
