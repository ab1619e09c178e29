package tap

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/turn"
)

// TestDeviceNonBlocking: every device's fd is non-blocking, in both
// modes. The reads and writes are raw system calls that the scheduler
// does not see (rawRead, rawWrite); on a blocking fd a read of an empty
// device would hold its thread and its P for good. An empty device reads
// EAGAIN at once.
func TestDeviceNonBlocking(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"offload tap", Config{Name: "pt0", Offload: true}},
		{"offload tun", Config{Name: "pt0", Offload: true, L3: true}},
		{"plain tap", Config{Name: "pt0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := nettest.Netns(t, nettest.UniqueName("pnt"))
			var d *Device
			if err := netnsutil.Do(ns, func() (err error) {
				d, err = Open(tt.cfg)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			fl, err := unix.FcntlInt(uintptr(d.fd), unix.F_GETFL, 0)
			if err != nil || fl&unix.O_NONBLOCK == 0 {
				t.Fatalf("fd flags %#x (%v): want O_NONBLOCK", fl, err)
			}
			if _, err := rawRead(d.fd, make([]byte, 2048)); !errors.Is(err, unix.EAGAIN) {
				t.Errorf("read of an empty device: got %v, want EAGAIN at once", err)
			}
			var tn turn.Turn
			d.SetTurn(&tn)
			n, err := d.TryRead([][]byte{make([]byte, 2048)}, []int{0}, 0)
			if n != 0 || err != nil {
				t.Errorf("TryRead of an empty device: %d, %v; want 0, nil", n, err)
			}
			if !tn.Try() {
				t.Errorf("TryRead that found nothing kept the turn")
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := d.WriteOne(make([]byte, 64)); !errors.Is(err, os.ErrClosed) {
				t.Errorf("write after Close: got %v, want os.ErrClosed", err)
			}
		})
	}
}
