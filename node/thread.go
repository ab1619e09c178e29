package node

import (
	"runtime"

	"github.com/vishvananda/netns"
)

// runOnLockedThread runs fn on a thread of its own and restores that
// thread's network namespace afterwards; for calls such as netns.NewNamed
// that switch the calling thread.
func runOnLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- err
			return // thread stays locked and is thrown away
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
