// Package queuedrops counts what the kernel drops before podnet reads
// it: frames sent into a TUN or TAP while its queue is full, datagrams
// that find a socket's receive buffer full. podnet never sees those
// packets, so it asks the kernel how many there were, and reports how
// many since a port was attached.
package queuedrops

import (
	"cmp"
	"fmt"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// Dropper is a device or socket that says how many packets its kernel
// queue has dropped so far (tap.Device, encap's sockets and TAPs).
type Dropper interface{ QueueDrops() (uint64, error) }

// TunLocation finds the TUN or TAP device behind fd wherever it is now:
// a new fd of its network namespace, which the caller closes
// (TUNGETDEVNETNS, Linux 5.2+), and its name there (TUNGETIFF), so that
// a pod that renamed or moved its eth0 is still followed. The caller
// keeps fd from being closed meanwhile, and hands nsfd and name to
// TunTxDropped.
func TunLocation(fd int) (nsfd int, name string, err error) {
	nsfd, err = unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS)
	if err != nil {
		return -1, "", fmt.Errorf("TUNGETDEVNETNS: %w", err)
	}
	ifr, err := unix.NewIfreq("")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr)
	}
	if err != nil {
		unix.Close(nsfd)
		return -1, "", fmt.Errorf("TUNGETIFF: %w", err)
	}
	return nsfd, ifr.Name(), nil
}

// TunTxDropped is the tx_dropped counter of the tun device name in the
// network namespace nsfd (TunLocation), which it closes: frames sent into
// it that its reader had not taken when its queue (txqueuelen frames) was
// full. It is read over netlink, which takes the kernel's RTNL lock: for
// statistics, not for a packet path.
func TunTxDropped(nsfd int, name string) (uint64, error) {
	defer unix.Close(nsfd)
	var drops uint64
	err := netnsutil.DoHandle(netns.NsHandle(nsfd), "of "+name, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		// The name was read a moment ago; a pod renaming its devices
		// meanwhile must not pass another device's counter off as this.
		if l.Type() != "tuntap" || l.Attrs().Statistics == nil {
			return fmt.Errorf("%s is a %s without tun statistics", name, l.Type())
		}
		drops = l.Attrs().Statistics.TxDropped
		return nil
	})
	return drops, err
}

// Counter follows Droppers (a tunnel has a socket per reader) from the
// moment it is made, as a port's other counters start when it is
// attached: a persistent TAP's own count does not start again.
type Counter struct {
	devs []Dropper
	base []uint64 // devs[i]'s count when followed
	// last is the count last reported. It never goes back, so that a
	// read that fails (a pod renaming its eth0 just then) or a counter
	// that wrapped does not look like a reset to a metrics scraper.
	last atomic.Uint64
}

// Follow reads, now, the counts of those devs that are Droppers. The
// error is the first of one that could not say (a TAP before Linux
// 5.2): its drops go uncounted, for the caller to log.
func Follow[D any](devs ...D) (*Counter, error) {
	c := &Counter{}
	var first error
	for _, d := range devs {
		qd, ok := any(d).(Dropper)
		if !ok {
			continue
		}
		n, err := qd.QueueDrops()
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		c.devs, c.base = append(c.devs, qd), append(c.base, n)
	}
	return c, first
}

// Count is how many the devices dropped since Follow, never less than
// it said before. It makes system calls: not for under a lock that a
// packet path takes. A nil Counter counts nothing.
func (c *Counter) Count() uint64 {
	if c == nil || len(c.devs) == 0 {
		return 0
	}
	var total uint64
	for i, d := range c.devs {
		n, err := d.QueueDrops()
		if err != nil {
			return c.last.Load()
		}
		total += countedSince(c.base[i], n)
	}
	// Another Count may have stored more meanwhile: keep the larger.
	for last := c.last.Load(); total > last; last = c.last.Load() {
		if c.last.CompareAndSwap(last, total) {
			break
		}
	}
	return c.last.Load()
}

// countedSince is how far a drop counter moved from base to n. One that
// went down wrapped around 32 bits: a socket's counter is that wide (a
// device's is 64 bits).
func countedSince(base, n uint64) uint64 {
	if n >= base {
		return n - base
	}
	return n + 1<<32 - base
}
