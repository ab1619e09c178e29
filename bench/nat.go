package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
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

// connRate opens and closes TCP connections one after another from netns
// from to addr:5300 (a listener of this process in netns to) for
// secs seconds and returns connections per second.
func connRate(ctx context.Context, from, to, addr string, secs int) (float64, error) {
	var ln net.Listener
	if err := netnsutil.Do("/run/netns/"+to, func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", connPort))
		return err
	}); err != nil {
		return 0, err
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
	dst := netip.AddrPortFrom(netip.MustParseAddr(addr), connPort).String()
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	n := 0
	start := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var c net.Conn
		err := netnsutil.Do(from, func() (err error) {
			c, err = net.DialTimeout("tcp4", dst, 5*time.Second)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("connection %d: %w", n, err)
		}
		c.Close()
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
