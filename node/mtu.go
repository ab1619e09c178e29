package node

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	vswitch "podnet/switch"
)

// Pods' MTU follows the encapsulation the pools use: when a pool switches
// from IP-in-IP to VXLAN (or to Never) the control loop sets the new MTU
// on podnet0 and on every pod's eth0, live. The TAP's MTU only bounds
// what the pod's kernel sends: the switch reads frames of any size into
// buffers of the largest frame whatever the MTU is, so it is safe to
// change under traffic. The pod's TCP connections pick the new MTU up
// on their next segment (the kernel reads the route's device MTU); a
// packet already too big for a tunnel still gets ICMP
// fragmentation-needed from the switch.

// setPodMTU sets the MTU of the pod's eth0 inside its namespace.
func setPodMTU(netnsPath string, mtu int) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	l, err := h.LinkByName(vswitch.PodIfName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", vswitch.PodIfName, netnsPath, err)
	}
	if l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %s in %s: %w", mtu, vswitch.PodIfName, netnsPath, err)
	}
	return nil
}

// applyPodMTU brings podnet0 and the attached pods to the pods' MTU when
// it changed since it was last applied. It runs on the control loop: a
// few netlink calls, no datastore or network I/O.
func (n *Node) applyPodMTU(s *state) {
	mtu := s.podMTU(n.cfg.PodMTU)
	if mtu == s.appliedMTU {
		return
	}
	if l, err := netlink.LinkByIndex(n.hostIndex); err != nil {
		n.log.Warn("pod MTU on podnet0", "mtu", mtu, "err", err)
	} else if err := netlink.LinkSetMTU(l, mtu); err != nil {
		n.log.Warn("pod MTU on podnet0", "mtu", mtu, "err", err)
	}
	failed := 0
	for _, p := range s.listed() {
		if !p.attached {
			continue
		}
		if err := setPodMTU(p.rec.Netns, mtu); err != nil {
			failed++
			n.log.Warn("pod MTU", "pod", p.rec.Name, "mtu", mtu, "err", err)
		}
	}
	n.log.Info("pod MTU changed", "from", s.appliedMTU, "to", mtu, "pods", len(s.listed()), "failed", failed)
	s.appliedMTU = mtu
}
