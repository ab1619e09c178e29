package nat

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestForgetPod: deleting a pod resets its TCP connections toward the
// remote at once and leaves no entry of it in the table.
func TestForgetPod(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		ln, _ := tp.listen(t, "tcp4", "10.252.0.2:13")
		serverErr := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				serverErr <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			_, err = c.Read(make([]byte, 10))
			serverErr <- err
		}()
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 13))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		u := pod.dialUDP(t, netip.AddrPortFrom(remoteAddr, 7))
		u.Write([]byte("x"))
		if !waitFor(5*time.Second, func() bool { return len(n.Entries()) == 2 }) {
			t.Fatalf("entries %+v, want a TCP and a UDP flow", n.Entries())
		}
		if got := n.ForgetPod(netip.MustParseAddr("192.168.1.99")); got != 0 {
			t.Fatalf("ForgetPod of another address ended %d flows", got)
		}
		start := time.Now()
		if got := n.ForgetPod(podAddr); got != 2 {
			t.Fatalf("ForgetPod ended %d flows, want 2", got)
		}
		if e := n.Entries(); len(e) != 0 {
			t.Errorf("entries left: %+v", e)
		}
		select {
		case err := <-serverErr:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("remote saw %v, want a reset", err)
			}
			t.Logf("remote reset %v after ForgetPod", time.Since(start))
		case <-time.After(5 * time.Second):
			t.Fatal("the remote's connection is still open")
		}
	})
}
