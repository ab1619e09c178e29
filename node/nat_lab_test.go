package node_test

// NAT outgoing in a lab: pods reach the external host (outside the
// cluster, no route to any pool) through their node's address.
//
//	test-1 (worker1)  test-2 (worker2)   podnet daemons with NAT outgoing
//	      \                /
//	   <lab>-fabric br0 10.77.0.1/24 ── <lab>-external 10.77.0.100 (http :80, udp echo :7)

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nat"
	"podnet/nodeapi"
)

var external = lab.ExternalAddress.Addr()

// dialFrom opens a TCP connection from inside netns ns.
func dialFrom(ns string, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netnsutil.Do(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	})
	return c, err
}

// httpGet does GET path on the external host from netns ns and returns
// the body.
func httpGet(ns, path string) (string, error) {
	c, err := dialFrom(ns, netip.AddrPortFrom(external, 80), 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: external\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestNATOutgoing(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 4, DaemonArgs: []string{
		"--nat-udp-timeout", "2s", "--nat-tcp-closing-timeout", "2s", "--nat-icmp-timeout", "2s"}})
	ctx := context.Background()
	nodeOf := map[string]string{"test-1": "worker1", "test-2": "worker2", "test-3": "worker1", "test-4": "worker2"}

	t.Run("every pod gets the page, seen as its node", func(t *testing.T) {
		for pod, node := range nodeOf {
			body, err := httpGet(nsPath(t, l, pod), "/")
			if err != nil || !strings.Contains(body, "pod external") {
				t.Fatalf("%s: GET /: %v %q", pod, err, body)
			}
			who, err := httpGet(nsPath(t, l, pod), "/whoami")
			if err != nil {
				t.Fatalf("%s: GET /whoami: %v", pod, err)
			}
			client, err := netip.ParseAddrPort(strings.TrimSpace(who))
			if err != nil || client.Addr() != l.NodeAddr(node) {
				t.Fatalf("%s: external saw client %q, want %s (its node)", pod, who, l.NodeAddr(node))
			}
		}
	})
	t.Run("50 MB download checked", func(t *testing.T) {
		const n = 50 << 20
		c := dialExternalHTTP(t, l, "test-2", external)
		fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.1\r\nHost: external\r\nConnection: close\r\n\r\n", n)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 1<<16)
		got := make([]byte, 1<<16)
		var off int64
		for {
			k, err := io.ReadFull(resp.Body, got)
			if k > 0 {
				lab.FillPattern(want[:k], off)
				if string(got[:k]) != string(want[:k]) {
					t.Fatalf("download differs from the pattern near byte %d", off)
				}
				off += int64(k)
			}
			if err != nil {
				break
			}
		}
		if off != n {
			t.Fatalf("downloaded %d bytes, want %d", off, n)
		}
	})
	// Uploads leave a pod as TSO superframes, which NAT's netstack takes
	// whole with their partial checksums: the bytes must arrive intact.
	t.Run("50 MB upload checked", func(t *testing.T) {
		const n = 50 << 20
		c := dialExternalHTTP(t, l, "test-2", external)
		fmt.Fprintf(c, "POST /check HTTP/1.1\r\nHost: external\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", n)
		buf := make([]byte, 1<<16)
		for off := int64(0); off < n; off += int64(len(buf)) {
			lab.FillPattern(buf, off)
			if _, err := c.Write(buf); err != nil {
				t.Fatalf("upload after %d bytes: %v", off, err)
			}
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if got := strings.TrimSpace(string(body)); got != fmt.Sprintf("ok %d", n) {
			t.Fatalf("external host checked the upload: %q, want \"ok %d\"", got, n)
		}
		node := ""
		for _, p := range l.Status().Pods {
			if p.Name == "test-2" {
				node = p.Node
			}
		}
		if gso := portStats(t, nodeClient(t, l, node), "test-2").GSOFrames; gso == 0 {
			t.Errorf("test-2 sent no superframes: the upload did not exercise NAT's superframe path")
		}
	})
	t.Run("udp echo and ping", func(t *testing.T) {
		var c net.Conn
		if err := netnsutil.Do(nsPath(t, l, "test-1"), func() (err error) {
			c, err = net.Dial("udp4", netip.AddrPortFrom(external, 7).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hello through NAT")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		k, err := c.Read(buf)
		if err != nil || string(buf[:k]) != "hello through NAT" {
			t.Fatalf("udp echo: %v %q", err, buf[:k])
		}
		ping(t, l, "test-3", external)
	})
	t.Run("nat list shows the flows, which expire", func(t *testing.T) {
		out, err := l.Output(ctx, "worker1", "podnet", "nat", "list", "-o", "wide")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"udp", "icmp", "10.77.0.100:7", l.PodIP("test-1").String()} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("nat list lacks %q:\n%s", want, out)
			}
		}
		waitFor(t, 15*time.Second, "NAT entries expire", func() string {
			var es []nat.Entry
			err := nodeClient(t, l, "worker1").Get(nodeapi.PathNATEntries, &es)
			if err != nil {
				return err.Error()
			}
			if len(es) != 0 {
				return fmt.Sprintf("%d entries left: %+v", len(es), es)
			}
			return ""
		})
	})
	t.Run("refused at once", func(t *testing.T) {
		start := time.Now()
		_, err := dialFrom(nsPath(t, l, "test-1"), netip.AddrPortFrom(external, 81), 10*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial a closed port outside: got %v, want connection refused", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("refusal took %s: the pod waited instead of getting a RST", took)
		}
	})
	t.Run("500 concurrent connections", func(t *testing.T) {
		ns := nsPath(t, l, "test-4")
		var wg sync.WaitGroup
		errs := make(chan error, 500)
		for i := 0; i < 500; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, err := httpGet(ns, "/")
				if err == nil && !strings.Contains(body, "pod external") {
					err = fmt.Errorf("body %q", body)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		n := 0
		var first error
		for err := range errs {
			if first == nil {
				first = err
			}
			n++
		}
		if n > 0 {
			t.Fatalf("%d of 500 connections failed, first: %v", n, first)
		}
	})
	t.Run("TCP took the packet path", func(t *testing.T) {
		// At least the connections above: worker1's pods made two GETs
		// each and a refused dial, worker2's 500 more.
		for node, least := range map[string]uint64{"worker1": 5, "worker2": 500} {
			var s nat.Stats
			if err := nodeClient(t, l, node).Get(nodeapi.PathNATStats, &s); err != nil {
				t.Fatal(err)
			}
			if s.TCPPath != "packet" || s.PacketConnsTotal < least {
				t.Errorf("%s: TCP path %q, %d connections on it; want the packet path, at least %d", node, s.TCPPath, s.PacketConnsTotal, least)
			}
			out, err := l.Output(ctx, node, "podnet", "nat", "stats")
			if err != nil || !strings.Contains(string(out), "tcp:     packet; packet-path connections since start: ") {
				t.Errorf("%s: podnet nat stats: %v\n%s", node, err, out)
			}
		}
	})
	t.Run("pool without natOutgoing is refused", func(t *testing.T) {
		run := func(stdin string, args ...string) string {
			t.Helper()
			var out strings.Builder
			if err := l.Exec(ctx, "worker1", strings.NewReader(stdin), &out, &out, append([]string{"podnet"}, args...)...); err != nil {
				t.Fatalf("podnet %v: %v\n%s", args, err, out.String())
			}
			return out.String()
		}
		run("apiVersion: podnet.io/v1\nkind: IPPool\nmetadata:\n  name: no-nat\nspec:\n  cidr: 10.30.0.0/16\n  ipipMode: Always\n", "apply", "-f", "-")
		pod := "nonat" + l.Name()
		t.Cleanup(func() { removeNetns(l.HandPodNetns("worker1", pod)) })
		run("", "pod", "add", pod, "--new", "--pool", "no-nat")
		out, _ := exec_(ctx, "ip", "netns", "exec", l.HandPodNetns("worker1", pod), "ping", "-c", "1", "-W", "2", external.String())
		if !strings.Contains(out, "Packet filtered") {
			t.Fatalf("ping outside from a pool without natOutgoing: want ICMP admin prohibited (Packet filtered), got:\n%s", out)
		}
		// Pod to pod still works once worker2 has learned the new block.
		waitFor(t, 15*time.Second, "pod-to-pod from the no-nat pool", func() string {
			if out, err := exec_(ctx, "ip", "netns", "exec", l.HandPodNetns("worker1", pod), "ping", "-c", "1", "-W", "1", l.PodIP("test-2").String()); err != nil {
				return out
			}
			return ""
		})
		run("", "pod", "del", pod)
	})
}

func exec_(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// dialExternalHTTP connects from pod to the outside host's HTTP port
// through NAT, with two minutes for the whole exchange; the test closes it.
func dialExternalHTTP(t *testing.T, l *lab.Lab, pod string, external netip.Addr) net.Conn {
	t.Helper()
	c, err := dialFrom(nsPath(t, l, pod), netip.AddrPortFrom(external, 80), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	return c
}
