package encap

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
)

// A TAP whose offloads the kernel refuses is gone when openTap returns:
// its fd was closed, not leaked. (A leaked one kept the device, so on a
// kernel without UDP-tunnel offloads the VXLAN TAP's name stayed taken
// and the marked TAP could not be opened in its place.)
func TestOpenTapRefusedLeavesNoDevice(t *testing.T) {
	ns := nettest.Netns(t, nettest.UniqueName("tap"))
	const unknownOffload = 1 << 15 // no TUN_F_* flag: the kernel answers EINVAL
	err := netnsutil.Do(ns, func() error {
		_, _, _, err := openTap("pnrefused0", 0, packet.VirtioNetHdrLen, unknownOffload)
		if !errors.Is(err, errOffloadRefused) {
			t.Errorf("openTap with an unknown offload: %v, want errOffloadRefused", err)
		}
		if _, lerr := netlink.LinkByName("pnrefused0"); lerr == nil {
			t.Error("the refused TAP pnrefused0 still exists: its fd leaked")
		}
		// The first set refused, the second taken, on one device.
		fd, name, used, err := openTap("pntaken0", 0, packet.VirtioNetHdrLen, unknownOffload, ipipTapOffloadFlags)
		if err != nil || used != 1 || name != "pntaken0" {
			t.Errorf("openTap with a refused then a known set: %q, set %d, %v; want pntaken0, set 1", name, used, err)
		}
		if err == nil {
			unix.Close(fd)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
