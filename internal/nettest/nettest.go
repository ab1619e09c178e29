// Package nettest holds helpers for tests that move real traffic between
// network namespaces: namespaces that clean themselves up and checksummed
// TCP transfers.
package nettest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// Netns creates the named network namespace /run/netns/NAME with lo up,
// deletes it when the test ends (also on failure) and returns its path.
// A leftover of the same name from a crashed run is removed first.
func Netns(t testing.TB, name string) string {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v\n%s", name, err, out)
	}
	return "/run/netns/" + name
}

// Sysctl sets a sysctl (name=value, as sysctl -w takes it) in the
// named namespace, failing the test if it cannot.
func Sysctl(t testing.TB, name, kv string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-q", "-w", kv).CombinedOutput(); err != nil {
		t.Fatalf("sysctl %s in %s: %v\n%s", kv, name, err, out)
	}
}

// UniqueName returns prefix + a short random suffix, for namespace names
// that do not collide between concurrent test processes.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s%d%04x", prefix, os.Getpid()%1000, rand.IntN(1<<16))
}

// Transfer sends size pseudo-random bytes over TCP from a socket opened
// in netns from to a listener opened in netns to on addr, and fails the
// test unless the receiver's SHA-256 and byte count match the sender's.
// It returns how long the transfer took.
func Transfer(t testing.TB, from, to string, addr netip.Addr, size int64) time.Duration {
	t.Helper()
	var ln net.Listener
	if err := netnsutil.Do(to, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", to, err)
	}
	defer ln.Close()
	type result struct {
		sum []byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		got <- result{h.Sum(nil), n, err}
	}()
	start := time.Now()
	var c net.Conn
	if err := netnsutil.Do(from, func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), from, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(randReader{rand.NewChaCha8([32]byte{1, 2, 3})}, size), h)
	if _, err := io.Copy(c, src); err != nil {
		t.Fatalf("send to %s: %v", ln.Addr(), err)
	}
	c.(*net.TCPConn).CloseWrite()
	r := <-got
	took := time.Since(start)
	if r.err != nil {
		t.Fatalf("receive at %s: %v", ln.Addr(), r.err)
	}
	if r.n != size {
		t.Fatalf("received %d bytes, want %d", r.n, size)
	}
	if want := h.Sum(nil); string(r.sum) != string(want) {
		t.Fatalf("sha256 at receiver %x, want %x", r.sum, want)
	}
	return took
}

type randReader struct{ r *rand.ChaCha8 }

func (r randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// FreeLoopbackAddr returns a TCP address on 127.0.0.1 that nothing
// listens on now (host:port), for a server the test starts there.
func FreeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// SendFrames sends frame n times out of the interface ifname in the
// namespace at nsPath, through a packet socket: straight into the
// device's transmit path, with no ARP or routing on the way.
func SendFrames(t testing.TB, nsPath, ifname string, frame []byte, n int) {
	t.Helper()
	err := netnsutil.Do(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for range n {
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send %d frames out of %s in %s: %v", n, ifname, nsPath, err)
	}
}

// TxDropped is the tx_dropped counter of the interface ifname in the
// named namespace, as the kernel reports it.
func TxDropped(t testing.TB, name, ifname string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", name, "cat", "/sys/class/net/"+ifname+"/statistics/tx_dropped").CombinedOutput()
	if err != nil {
		t.Fatalf("tx_dropped of %s in %s: %v\n%s", ifname, name, err, out)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("tx_dropped of %s in %s: %v", ifname, name, err)
	}
	return v
}
