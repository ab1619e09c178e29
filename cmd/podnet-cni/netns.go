package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// checkNetns looks inside the pod's namespace (through a netlink socket
// opened there; the plugin's thread never moves): eth0 is up with ip/32
// and the MTU, and the default route goes through the gateway.
func checkNetns(path string, ip net.IP, mtu int) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in netns: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(podIfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", podIfName, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("%s is down", podIfName)
	}
	if mtu != 0 && l.Attrs().MTU != mtu {
		return fmt.Errorf("%s has MTU %d, want %d", podIfName, l.Attrs().MTU, mtu)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", podIfName, err)
	}
	hasIP := false
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		hasIP = hasIP || a.IP.Equal(ip) && ones == 32
	}
	if !hasIP {
		return fmt.Errorf("%s does not have %s/32", podIfName, ip)
	}
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("routes of %s: %w", podIfName, err)
	}
	for _, r := range routes {
		if (r.Dst == nil || isDefault(r.Dst)) && r.Gw.Equal(gateway) {
			return nil
		}
	}
	return fmt.Errorf("no default route via %s on %s", gateway, podIfName)
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
