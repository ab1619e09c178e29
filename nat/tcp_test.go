package nat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTCPHTTPThroughNAT(t *testing.T) {
	tcpPaths(t, Config{TCPClosing: 2 * time.Second}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		cl := pod.httpClient()
		web := netip.AddrPortFrom(remoteAddr, 80)

		resp, err := cl.Get("http://" + web.String() + "/")
		if err != nil {
			t.Fatalf("GET /: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "hello" {
			t.Fatalf("GET / body %q, %v; want %q", body, err, "hello")
		}
		clients := tp.httpClients()
		if len(clients) != 1 || clients[0].Addr() != nodeAddr {
			t.Fatalf("server saw clients %v, want one from %v (the node, not the pod %v)", clients, nodeAddr, podAddr)
		}

		e, ok := findEntry(n, "tcp", web)
		if !ok {
			t.Fatalf("no tcp entry for %v in %+v", web, n.Entries())
		}
		if e.Pod.Addr() != podAddr || e.Node != clients[0] || e.BytesOut == 0 || e.BytesIn == 0 {
			t.Errorf("entry %+v: want pod %v, node %v and bytes both ways", e, podAddr, clients[0])
		}
		t.Logf("entry after GET: %+v", e)

		// The pod closed (no keep-alives): the entry is closing or closed and
		// goes away once TCPClosing has passed.
		if !waitFor(10*time.Second, func() bool { _, ok := findEntry(n, "tcp", web); return !ok }) {
			t.Fatalf("tcp entry still present after TCPClosing: %+v", n.Entries())
		}
		if s := n.Stats(); s.ConnsTotal != 1 || s.PortsInUse != 0 {
			t.Errorf("stats %+v: want ConnsTotal 1, PortsInUse 0", s)
		}
		wantPath(t, n, packetPath, 1)
	})
}

func TestTCPDownload(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		size := int64(20 << 20)
		if raceEnabled {
			size = 2 << 20
		}
		tp := newTopo(t)
		if packetPath {
			// Replies reach N merged, as from a NIC with GRO; a veth
			// merges only with GRO turned on.
			out, err := exec.Command("ip", "netns", "exec", filepath.Base(tp.n), "ethtool", "-K", "vn0", "gro", "on").CombinedOutput()
			if err != nil {
				t.Fatalf("ethtool -K vn0 gro on: %v\n%s", err, out)
			}
		}
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		cl := pod.httpClient()
		start := time.Now()
		resp, err := cl.Get(fmt.Sprintf("http://%s/bytes?n=%d", netip.AddrPortFrom(remoteAddr, 80), size))
		if err != nil {
			t.Fatalf("GET /bytes: %v", err)
		}
		h := sha256.New()
		got, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || got != size {
			t.Fatalf("read %d bytes, %v; want %d", got, err, size)
		}
		if !bytes.Equal(h.Sum(nil), sha256Of(size)) {
			t.Fatalf("sha256 mismatch")
		}
		t.Logf("%d MiB in %v = %.2f Gbit/s through the NAT", size>>20, took, float64(size)*8/took.Seconds()/1e9)
		// The netstack sends to the pod in superframes (host GSO), each checked
		// by cutting it as the switch would for a pod without offloads.
		sf, segs := d.superframes.Load(), d.segments.Load()
		t.Logf("%d superframes delivered, %.1f segments each", sf, float64(segs)/float64(max(sf, 1)))
		if sf == 0 || segs < 2*sf {
			t.Errorf("%d superframes of %d segments delivered, want the download in superframes", sf, segs)
		}
		e, ok := findEntry(n, "tcp", netip.AddrPortFrom(remoteAddr, 80))
		if !ok || e.BytesIn < uint64(size) {
			t.Errorf("entry %+v (found %v): want BytesIn >= %d", e, ok, size)
		}

		start = time.Now()
		resp, err = cl.Post(fmt.Sprintf("http://%s/upload", netip.AddrPortFrom(remoteAddr, 80)), "application/octet-stream", io.LimitReader(testData(), size))
		if err != nil {
			t.Fatalf("POST /upload: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took = time.Since(start)
		if want := fmt.Sprintf("%d %x", size, sha256Of(size)); err != nil || string(body) != want {
			t.Fatalf("upload: server says %q, %v; want %q", body, err, want)
		}
		t.Logf("%d MiB upload in %v = %.2f Gbit/s through the NAT", size>>20, took, float64(size)*8/took.Seconds()/1e9)
		wantPath(t, n, packetPath, 2)
	})
}

func TestTCPRefused(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 81))
		took := time.Since(start)
		if err == nil {
			c.Close()
			t.Fatalf("dial :81 succeeded, want refused")
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Errorf("dial :81: %v, want connection refused", err)
		}
		t.Logf("refused after %v", took)
		if took > 5*time.Second {
			t.Errorf("refusal took %v: the pod waited for a timeout instead of getting a RST", took)
		}
		wantPath(t, n, packetPath, 1)
		if packetPath {
			// The remote's RST itself went to the pod, and closed the
			// entry, which stays for TCPClosing as conntrack's would.
			if e := n.Entries(); len(e) != 1 || e[0].State != "closed" {
				t.Errorf("entries after refusal: %+v, want one closed", e)
			}
			return
		}
		if got := n.Stats().Drops["dial-refused"]; got != 1 {
			t.Errorf("dial-refused = %d, want 1", got)
		}
		if e := n.Entries(); len(e) != 0 {
			t.Errorf("entries after refusal: %+v", e)
		}
	})
}

func TestTCPUnreachable(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		c, err := pod.dial(ctx, netip.AddrPortFrom(noRoute, 80))
		took := time.Since(start)
		if err == nil {
			c.Close()
			t.Fatalf("dial %v succeeded, want host unreachable", noRoute)
		}
		if !strings.Contains(err.Error(), "no route to host") {
			t.Errorf("dial %v: %v, want no route to host (ICMP host unreachable)", noRoute, err)
		}
		t.Logf("unreachable after %v: %v", took, err)
		if took > 5*time.Second {
			t.Errorf("unreachable took %v: the pod waited for a timeout", took)
		}
		if got := n.Stats().Drops["dial-unreachable"]; got != 1 {
			t.Errorf("dial-unreachable = %d, want 1", got)
		}
		// N has no route to it out of vn0: the netstack dialled it,
		// whichever path the NAT has.
		wantPath(t, n, packetPath, 0)
	})
}

// TestTCPConcurrent opens many connections at once through the NAT and
// echoes a little data over each.
func TestTCPConcurrent(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		conns := 500
		if raceEnabled {
			conns = 100
		}
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		echo := netip.AddrPortFrom(remoteAddr, 9)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := pod.dial(ctx, echo)
				if err != nil {
					errs <- fmt.Errorf("conn %d: dial: %w", i, err)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				msg := bytes.Repeat([]byte{byte(i)}, 1000)
				if _, err := c.Write(msg); err != nil {
					errs <- fmt.Errorf("conn %d: write: %w", i, err)
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("conn %d: echo: %v", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		took := time.Since(start)
		t.Logf("%d concurrent connections in %v (%.0f conn/s)", conns, took, float64(conns)/took.Seconds())

		// New connections per second, one after another.
		seq := 300
		if raceEnabled {
			seq = 30
		}
		start = time.Now()
		for i := range seq {
			c, err := pod.dial(ctx, echo)
			if err != nil {
				t.Fatalf("sequential conn %d: %v", i, err)
			}
			c.Close()
		}
		took = time.Since(start)
		t.Logf("%d sequential connects in %v (%.0f conn/s)", seq, took, float64(seq)/took.Seconds())
		if s := n.Stats(); s.ConnsTotal != uint64(conns+seq) {
			t.Errorf("ConnsTotal %d, want %d", s.ConnsTotal, conns+seq)
		}
		wantPath(t, n, packetPath, uint64(conns+seq))
	})
}

// TestTCPIdleTimeout: an established connection idle for TCPEstablished
// is torn down with a RST to the pod, and its entry removed.
func TestTCPIdleTimeout(t *testing.T) {
	tcpPaths(t, Config{TCPEstablished: time.Second}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		echo := netip.AddrPortFrom(remoteAddr, 9)
		c, err := pod.dial(ctx, echo)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, err = c.Read(make([]byte, 1))
		if err == nil || !strings.Contains(err.Error(), "reset") {
			t.Errorf("read on an idle connection: %v, want connection reset", err)
		}
		t.Logf("reset after %v idle", time.Since(start))
		if _, ok := findEntry(n, "tcp", echo); ok {
			t.Errorf("entry still present: %+v", n.Entries())
		}
	})
}

// TestTCPHalfClose: the pod's FIN reaches the remote while data keeps
// flowing back, then the remote's FIN reaches the pod.
func TestTCPHalfClose(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 9))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		msg := bytes.Repeat([]byte("half-close "), 20000)
		// The echo server sends while we are still writing; read
		// concurrently so neither side's window fills.
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(c)
			got <- b
		}()
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		// ReadAll returns at the remote's FIN, which the echo server only
		// sends after it saw ours.
		if b := <-got; !bytes.Equal(b, msg) {
			t.Fatalf("echoed %d bytes, want %d", len(b), len(msg))
		}
		e, _ := findEntry(n, "tcp", netip.AddrPortFrom(remoteAddr, 9))
		if e.BytesOut != uint64(len(msg)) || e.BytesIn != uint64(len(msg)) {
			t.Errorf("entry %+v: want %d bytes each way", e, len(msg))
		}
		if !waitFor(5*time.Second, func() bool {
			e, _ := findEntry(n, "tcp", netip.AddrPortFrom(remoteAddr, 9))
			return e.State == "closed"
		}) {
			t.Errorf("entry not closed: %+v", n.Entries())
		}
	})
}

// TestTCPRemoteReset: a RST from the remote reaches the pod as a RST.
func TestTCPRemoteReset(t *testing.T) {
	tcpPaths(t, Config{}, func(t *testing.T, cfg Config, packetPath bool) {
		tp := newTopo(t)
		n, d := newNAT(t, tp, cfg)
		pod := newPodStack(t, n, d)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The server resets right after accepting, so the RST may reach the
		// pod before its handshake completes (the dial fails, as refused if
		// the RST overtook the SYN-ACK being built) or after (the read
		// fails); either way it must be a RST, not a timeout or EOF.
		c, err := pod.dial(ctx, netip.AddrPortFrom(remoteAddr, 12))
		if err == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
		}
		if err == nil || !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "refused") {
			t.Errorf("got %v, want connection reset (or refused)", err)
		}
	})
}

// The host socket of a TCP flow has no Nagle delay (the pod's stack has
// already decided when to send) and sends keep-alive probes after 15 s
// idle, every 15 s, 9 of them (Go's defaults for a net.TCPConn, which
// net.FileConn applies). Those probes are the only ones that can find a
// remote that went away: the pod's own end at the netstack, which answers
// them. The test finds the socket among its own process's descriptors by
// its peer address.
func TestTCPHostSocketOptions(t *testing.T) {
	tp := newTopo(t)
	n, d := newNAT(t, tp, Config{})
	pod := newPodStack(t, n, d)
	echo := netip.AddrPortFrom(remoteAddr, 9)
	c, err := pod.dial(context.Background(), echo)
	if err != nil {
		t.Fatalf("dial %v: %v", echo, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("echo: %v", err)
	}

	fd := hostSocketTo(t, echo)
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		got, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil || got != o.want {
			t.Errorf("host socket %s: got %d, %v; want %d", o.name, got, err, o.want)
		}
	}
}

// hostSocketTo returns the descriptor of this process's one TCP socket
// connected to remote. It stays open while the flow does.
func hostSocketTo(t *testing.T, remote netip.AddrPort) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	found := -1
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getpeername(fd)
		a, ok := sa.(*unix.SockaddrInet4)
		if err != nil || !ok || netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)) != remote {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue
		}
		if found >= 0 {
			t.Fatalf("two sockets connected to %v: descriptors %d and %d", remote, found, fd)
		}
		found = fd
	}
	if found < 0 {
		t.Fatalf("no socket of this process is connected to %v", remote)
	}
	return found
}
