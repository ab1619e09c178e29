package tap

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
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

// TestQueueDrops: frames sent into a TAP while its queue is full are
// dropped by the kernel before the reader sees them; QueueDrops counts
// exactly those, after the device moved to another namespace and took
// another name, as a pod's TAP does.
func TestQueueDrops(t *testing.T) {
	const queue, burst = 8, 50
	node := nettest.UniqueName("pnq")
	pod := nettest.UniqueName("pnq")
	nodeNS, podNS := nettest.Netns(t, node), nettest.Netns(t, pod)
	// No IPv6: router solicitations would take places in the queue.
	nettest.Sysctl(t, pod, "net.ipv6.conf.default.disable_ipv6=1")
	var d *Device
	if err := netnsutil.Do(nodeNS, func() (err error) {
		d, err = Open(Config{Name: "pq0"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, args := range [][]string{
		{"-n", node, "link", "set", "pq0", "netns", pod},
		{"-n", pod, "link", "set", "pq0", "name", "eth0"},
		{"-n", pod, "link", "set", "eth0", "txqueuelen", strconv.Itoa(queue), "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	frame, rbuf := make([]byte, 60), make([]byte, 2048)
	drain := func() int {
		n := 0
		for {
			if _, err := rawRead(d.fd, rbuf); err != nil {
				return n
			}
			n++
		}
	}
	drain()
	base, err := d.QueueDrops()
	if err != nil {
		t.Fatal(err)
	}
	// The pod's side sends a burst straight to the device; nothing reads
	// meanwhile.
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	frame[12], frame[13] = 0x88, 0xb5 // local experimental EtherType
	nettest.SendFrames(t, podNS, "eth0", frame, burst)
	got, err := d.QueueDrops()
	if err != nil {
		t.Fatal(err)
	}
	if got-base != burst-queue {
		t.Errorf("QueueDrops: %d dropped of a burst of %d into a queue of %d, want %d", got-base, burst, queue, burst-queue)
	}
	if n := drain(); n != queue {
		t.Errorf("read %d frames after the burst, want the %d the queue held", n, queue)
	}
	d.Close()
	if _, err := d.QueueDrops(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("QueueDrops after Close: %v, want os.ErrClosed", err)
	}
}
