// Package netnsutil runs code inside another network namespace without
// leaking the switch into the rest of the process.
package netnsutil

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread that has joined the network namespace at
// nsPath (e.g. /run/netns/pod1 or /proc/PID/ns/net). Sockets and devices
// opened by fn belong to that namespace. An empty nsPath runs fn in the
// caller's namespace.
//
// setns(2) changes only the calling thread, so the goroutine is locked to
// its thread for the duration. If switching back fails the thread stays
// locked and Go discards it when the goroutine exits, instead of handing a
// thread in the wrong namespace to other goroutines.
func Do(nsPath string, fn func() error) error {
	if nsPath == "" {
		return fn()
	}
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer target.Close()
	return DoHandle(target, nsPath, fn)
}

// DoHandle is Do for a namespace the caller holds open (target), which it
// still owns afterwards; name says which one in errors.
func DoHandle(target netns.NsHandle, name string, fn func() error) error {
	nsPath := name
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return from netns %s: %w", nsPath, err)
			return // leave the thread locked: it is in the wrong namespace
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DefaultRouteLink is the name of the interface the calling thread's
// namespace's IPv4 default route leaves through, or "" if there is none:
// the underlay a node uses when none is named.
func DefaultRouteLink() string {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}
