package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"time"

	"podnet/internal/netnsutil"
)

// masquerade turns on the kernel's source NAT for the pods on node ns
// and takes away the outside host's route back to them.
func masquerade(ctx context.Context, node, ext string) error {
	for _, rule := range []string{
		"add table ip podnetbench",
		"add chain ip podnetbench post { type nat hook postrouting priority 100 ; }",
		"add rule ip podnetbench post ip saddr 10.210.0.0/16 oifname eth0 masquerade",
	} {
		if o, err := exec.CommandContext(ctx, "ip", "netns", "exec", node, "sh", "-c", "nft '"+rule+"'").CombinedOutput(); err != nil {
			return fmt.Errorf("nft %s: %w\n%s", rule, err, o)
		}
	}
	if o, err := exec.CommandContext(ctx, "ip", "-n", ext, "route", "del", "10.210.0.0/16").CombinedOutput(); err != nil {
		return fmt.Errorf("remove route back: %w\n%s", err, o)
	}
	return nil
}

// connRate returns how many TCP connections per second a client process
// in netns from (podnet bench connect-loop, run from binary) opens and
// closes one after another, for secs seconds, to addr:connPort, a
// listener of this process in netns to.
//
// The client is a process of its own in the pod's namespace, as any pod's
// client is. Dialling from this process instead takes a setns on a
// locked thread per connection, and a locked thread that waits for the
// handshake gets its goroutine back only through a wake-up. On the
// kernel's paths the handshake completes inside connect(), so that cost,
// not the path, set their rate: about 4,600 connections per second
// through MASQUERADE against 10,000 with a client process.
func connRate(ctx context.Context, binary, from, to, addr string, secs int) (float64, error) {
	res, err := connLoop(ctx, binary, from, to, addr, secs)
	if err != nil {
		return 0, err
	}
	return float64(res.Connections) / res.Seconds, nil
}

// connLoop runs the client for connRate and returns what it did.
func connLoop(ctx context.Context, binary, from, to, addr string, secs int) (ConnectLoopResult, error) {
	var ln net.Listener
	if err := netnsutil.Do(nsPath(to), func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", connPort))
		return err
	}); err != nil {
		return ConnectLoopResult{}, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if binary == "" {
		var err error
		if binary, err = os.Executable(); err != nil {
			return ConnectLoopResult{}, err
		}
	}
	// The client closes first, so each connection leaves its port in
	// TIME_WAIT for a minute: at the kernel's 10,000 a second, two rounds
	// took more than the 28,232 ephemeral ports there are, and connect
	// crawled through the port space at 200 a second. Reusing a port
	// whose TIME_WAIT is over a second old (the timestamps tell the
	// remote the segments apart) keeps every round alike. The namespace
	// is one the suite made; /proc/sys/net is the calling thread's
	// namespace's.
	if err := netnsutil.Do(nsPath(from), func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0o644)
	}); err != nil {
		return ConnectLoopResult{}, fmt.Errorf("tcp_tw_reuse in %s: %w", from, err)
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr(addr), connPort)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", from, binary, "bench", "connect-loop",
		"--to", dst.String(), "--seconds", strconv.Itoa(secs))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ConnectLoopResult{}, fmt.Errorf("connect-loop in %s: %w: %s", from, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var res ConnectLoopResult
	if err := json.Unmarshal(out, &res); err != nil {
		return ConnectLoopResult{}, fmt.Errorf("connect-loop in %s: %w (output %q)", from, err, out)
	}
	if res.Seconds <= 0 {
		return ConnectLoopResult{}, fmt.Errorf("connect-loop in %s: ran for %v s", from, res.Seconds)
	}
	return res, nil
}

// ConnectLoopResult is what ConnectLoop did: podnet bench connect-loop
// prints it as JSON.
type ConnectLoopResult struct {
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"`
}

// ConnectLoop opens a TCP connection to dst and closes it, one after
// another, for d (or until ctx ends), in the calling process's network
// namespace. A connection that fails ends the loop with its error.
func ConnectLoop(ctx context.Context, dst netip.AddrPort, d time.Duration) (ConnectLoopResult, error) {
	var dialer net.Dialer
	dialer.Timeout = 5 * time.Second
	start := time.Now()
	deadline := start.Add(d)
	n := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c, err := dialer.DialContext(ctx, "tcp4", dst.String())
		if err != nil {
			return ConnectLoopResult{}, fmt.Errorf("connection %d: %w", n, err)
		}
		c.Close()
		n++
	}
	return ConnectLoopResult{Connections: n, Seconds: time.Since(start).Seconds()}, ctx.Err()
}
