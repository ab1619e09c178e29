package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
)

// NATResult is pod-to-outside throughput and connection rate.
type NATResult struct {
	Results          []Result `json:"results"`
	ConnsPerSec      float64  `json:"podnetNewConnsPerSecond"`
	KernelConnsS     float64  `json:"kernelNewConnsPerSecond"`
	KernelMasqConnsS float64  `json:"kernelMasqueradeNewConnsPerSecond,omitempty"`
}

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

// NAT measures a pod reaching a host outside the cluster: first the
// kernel routing the pod's own address (the outside host has a route
// back; no translation), then through podnet's NAT outgoing. It also
// counts sequential new TCP connections per second both ways.
func NAT(ctx context.Context, binary string, secs int, progress io.Writer) (NATResult, error) {
	say := func(f string, a ...any) {
		if progress != nil {
			fmt.Fprintf(progress, f+"\n", a...)
		}
	}
	var out NATResult
	ext := lab.ExternalAddress.Addr().String()

	say("kernel routing to the outside host ...")
	k, err := lab.Up(ctx, lab.Config{Name: "pnbenchn", Nodes: 1, NoDaemon: true, Binary: binary})
	if err != nil {
		return out, err
	}
	w1, _ := k.Netns("worker1")
	fab, _ := k.Netns("fabric")
	pod, extNS := k.Name()+"-test-1", k.Name()+"-external"
	steps := [][]string{
		{"netns", "add", pod}, {"netns", "add", extNS},
		{"-n", w1, "link", "add", "pod1", "type", "veth", "peer", "name", "eth0", "netns", pod},
		{"-n", w1, "addr", "add", "10.210.1.1/24", "dev", "pod1"}, {"-n", w1, "link", "set", "pod1", "up"},
		{"-n", pod, "addr", "add", "10.210.1.2/24", "dev", "eth0"}, {"-n", pod, "link", "set", "eth0", "up"},
		{"-n", pod, "link", "set", "lo", "up"}, {"-n", pod, "route", "add", "default", "via", "10.210.1.1"},
		{"-n", fab, "link", "add", "wx", "type", "veth", "peer", "name", "eth0", "netns", extNS},
		{"-n", fab, "link", "set", "wx", "master", "br0"}, {"-n", fab, "link", "set", "wx", "up"},
		{"-n", extNS, "addr", "add", lab.ExternalAddress.String(), "dev", "eth0"}, {"-n", extNS, "link", "set", "eth0", "up"},
		{"-n", extNS, "link", "set", "lo", "up"},
		{"-n", extNS, "route", "add", "10.210.0.0/16", "via", k.NodeAddr("worker1").String()},
	}
	for _, s := range steps {
		if o, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			k.Down()
			return out, fmt.Errorf("ip %v: %w\n%s", s, err, o)
		}
	}
	r, err := iperf3(ctx, pod, extNS, ext, secs, 1)
	if err == nil {
		r.Path = "kernel routing (no translation)"
		out.Results = append(out.Results, r)
		out.KernelConnsS, err = connRate(ctx, "/run/netns/"+pod, extNS, ext, secs)
	}
	if err == nil {
		// The kernel's own NAT: nftables masquerade on the node, and the
		// outside host loses its route back to the pods.
		if _, lerr := exec.LookPath("nft"); lerr != nil {
			say("kernel MASQUERADE skipped: nft is not installed")
		} else {
			say("kernel MASQUERADE (nftables) ...")
			err = masquerade(ctx, w1, extNS)
			if err == nil {
				r, err = iperf3(ctx, pod, extNS, ext, secs, 1)
			}
			if err == nil {
				r.Path = "kernel MASQUERADE (nftables)"
				out.Results = append(out.Results, r)
				out.KernelMasqConnsS, err = connRate(ctx, "/run/netns/"+pod, extNS, ext, secs)
			}
		}
	}
	k.Down()
	if err != nil {
		return out, err
	}

	say("podnet NAT outgoing ...")
	l, err := lab.Up(ctx, lab.Config{Name: "pnbenchn", Nodes: 1, Pods: 1, Binary: binary, HTTPServer: lab.HTTPBuiltin})
	if err != nil {
		return out, err
	}
	defer l.Down()
	pns, _ := l.Netns("test-1")
	ens, _ := l.Netns("external")
	r, err = iperf3(ctx, pns, ens, ext, secs, 1)
	if err != nil {
		return out, err
	}
	r.Path = "podnet NAT outgoing"
	out.Results = append(out.Results, r)
	out.ConnsPerSec, err = connRate(ctx, "/run/netns/"+pns, ens, ext, secs)
	return out, err
}

// connRate opens and closes TCP connections one after another from netns
// from to addr:5201 (an iperf3-free listener started in netns to) for
// secs seconds and returns connections per second.
func connRate(ctx context.Context, from, to, addr string, secs int) (float64, error) {
	var ln net.Listener
	if err := netnsutil.Do("/run/netns/"+to, func() (err error) {
		ln, err = net.Listen("tcp4", ":5300")
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
	dst := netip.AddrPortFrom(netip.MustParseAddr(addr), 5300).String()
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
