package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"podnet/api"
	"podnet/internal/netnsutil"
	"podnet/ipam"
	"podnet/nodeapi"
	vswitch "podnet/switch"
)

// Pod lifecycle. Each operation does its datastore and netns work outside
// the control loop and touches the state only in short steps on it:
// reserve the name, (allocate, create, record), commit.

// podNameRE is a DNS label, like Kubernetes pod names.
var podNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// userError is an error caused by the request, not the node.
type userError struct{ msg string }

func (e *userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &userError{fmt.Sprintf(format, args...)}
}

// AddPod creates the pod's port and records it. It either succeeds or
// leaves nothing behind: no TAP, no record, no route, no address.
func (n *Node) AddPod(req nodeapi.AddPodRequest) (nodeapi.PodInfo, error) {
	if !podNameRE.MatchString(req.Name) {
		return nodeapi.PodInfo{}, badRequest("invalid pod name %q: want a DNS label (lowercase letters, digits, '-', at most 63)", req.Name)
	}
	if req.IP != "" && req.Pool != "" {
		return nodeapi.PodInfo{}, badRequest("pod %s: give --ip or --pool, not both", req.Name)
	}
	var wantIP netip.Addr
	if req.IP != "" {
		ip, err := netip.ParseAddr(req.IP)
		if err != nil || !ip.Is4() {
			return nodeapi.PodInfo{}, badRequest("pod %s: invalid IPv4 address %q", req.Name, req.IP)
		}
		// The same address rules as pools (api.ValidatePodIPv4): no
		// loopback, link-local, multicast, reserved or 0/8 addresses.
		if err := api.ValidatePodIPv4(ip); err != nil {
			return nodeapi.PodInfo{}, badRequest("pod %s: --ip: %v", req.Name, err)
		}
		wantIP = ip
	}
	if (req.Netns == "") == !req.New {
		return nodeapi.PodInfo{}, badRequest("pod %s: give exactly one of --netns PATH or --new", req.Name)
	}

	// Reserve the name (and the address asked for) on the loop.
	var mtu int
	err := n.do(func(s *state) error {
		if p, dup := s.pods[req.Name]; dup {
			if p.phase == podDeleting {
				return badRequest("pod %s is being deleted", req.Name)
			}
			return badRequest("pod %s already exists", req.Name)
		}
		if wantIP.IsValid() {
			if slices.Contains(s.hostAddrs, wantIP) {
				return badRequest("address %s belongs to the node itself", wantIP)
			}
			for _, p := range s.pods {
				if p.rec.IP == wantIP {
					return badRequest("address %s is already used by pod %s", wantIP, p.rec.Name)
				}
			}
		}
		s.pods[req.Name] = &pod{rec: PodRecord{Name: req.Name, IP: wantIP}, phase: podAdding, port: -1}
		mtu = s.podMTU(n.cfg.PodMTU)
		return nil
	})
	if err != nil {
		return nodeapi.PodInfo{}, err
	}
	undo := []func(){func() {
		n.do(func(s *state) error { delete(s.pods, req.Name); return nil })
	}}
	fail := func(err error) (nodeapi.PodInfo, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nodeapi.PodInfo{}, err
	}
	if !req.New {
		if _, err := os.Stat(req.Netns); err != nil {
			return fail(badRequest("pod %s: netns %s: %v", req.Name, req.Netns, errors.Unwrap(err)))
		}
	}

	// The slow part, off the loop: IPAM, the namespace, the link, the
	// WorkloadEndpoint.
	ctx, cancel := opContext()
	defer cancel()
	ip, err := n.allocate(ctx, req.Name, req.IP, req.Pool)
	if err != nil {
		return fail(err)
	}
	handle := n.podHandle(req.Name)
	undo = append(undo, func() { n.ipam.ReleaseByHandle(context.Background(), handle) })
	rec := PodRecord{Name: req.Name, IP: ip, Netns: req.Netns, Handle: handle, Created: time.Now().UTC()}
	if req.New {
		prefix := n.cfg.PodNetnsPrefix
		if prefix == "" {
			prefix = n.cfg.Name + "-"
		}
		nsName := prefix + req.Name
		if err := createNamedNetns(nsName); err != nil {
			return fail(fmt.Errorf("pod %s: %w", req.Name, err))
		}
		rec.Netns, rec.OwnsNetns = filepath.Join("/run/netns", nsName), true
		undo = append(undo, func() { netns.DeleteNamed(nsName) })
	}
	dev, mac, err := vswitch.CreatePodLink(vswitch.PodLinkConfig{
		Pod: req.Name, Netns: rec.Netns, IP: ip, MTU: mtu, Offload: n.cfg.TapOffload,
	})
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { dev.SetPersist(false); dev.Close(); vswitch.DeletePodLink(rec.Netns) })
	rec.MAC = mac.String()
	if err := n.recordEndpoint(ctx, rec, true); err != nil {
		return fail(fmt.Errorf("pod %s: record workload endpoint: %w", req.Name, err))
	}
	undo = append(undo, func() {
		ctx, cancel := opContext()
		defer cancel()
		n.recordEndpoint(ctx, rec, false)
	})

	// Commit on the loop: port, routes, kernel route, pod records.
	var info nodeapi.PodInfo
	err = n.do(func(s *state) error {
		p := s.pods[req.Name]
		idx, err := n.sw.AddPodPort(vswitch.PodPort{Name: req.Name, IP: ip, MAC: mac, Dev: dev})
		if err != nil {
			return err
		}
		p.rec, p.port, p.attached, p.phase = rec, idx, true, podReady
		// The pools' encapsulation changed while the link was made.
		if now := s.podMTU(n.cfg.PodMTU); now != mtu {
			if err := setPodMTU(rec.Netns, now); err != nil {
				n.log.Warn("pod MTU", "pod", req.Name, "mtu", now, "err", err)
			}
		}
		if err = n.publish(s); err == nil {
			if err = n.podKernelRoute(ip, true); err == nil {
				if err = n.save(s); err != nil {
					n.podKernelRoute(ip, false)
				}
			}
		}
		if err != nil {
			// RemovePort closes the device; the undo above then only
			// deletes the link.
			p.phase, p.attached = podAdding, false
			n.sw.RemovePort(idx)
			n.publish(s)
			return err
		}
		info = n.info(p)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	n.log.Info("pod added", "pod", req.Name, "ip", ip, "netns", rec.Netns, "port", info.Port)
	return info, nil
}

// DeletePod detaches a pod, deletes its eth0 (and its namespace if the
// daemon created it), releases its address and forgets it.
func (n *Node) DeletePod(name string) error {
	var rec PodRecord
	var errs []error
	err := n.do(func(s *state) error {
		p, ok := s.pods[name]
		switch {
		case !ok:
			return badRequest("pod %s not found", name)
		case p.phase == podAdding:
			return badRequest("pod %s is being added", name)
		case p.phase == podDeleting:
			return badRequest("pod %s is being deleted", name)
		}
		if p.attached {
			errs = append(errs, n.sw.RemovePort(p.port), n.podKernelRoute(p.rec.IP, false))
			p.attached = false
		}
		p.phase, rec = podDeleting, p.rec
		errs = append(errs, n.publish(s))
		return nil
	})
	if err != nil {
		return err
	}
	// End the pod's NAT flows before its address can go to another pod:
	// nothing of the old connections may reach the new one.
	if n.nat != nil {
		if k := n.nat.ForgetPod(rec.IP); k > 0 {
			n.log.Info("NAT flows of deleted pod reset", "pod", name, "flows", k)
		}
	}
	errs = append(errs, vswitch.DeletePodLink(rec.Netns))
	if rec.OwnsNetns {
		if err := netns.DeleteNamed(filepath.Base(rec.Netns)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", rec.Netns, err))
		}
	}
	ctx, cancel := opContext()
	defer cancel()
	errs = append(errs, n.recordEndpoint(ctx, rec, false))
	if rec.Handle != "" {
		if err := n.ipam.ReleaseByHandle(ctx, rec.Handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) {
			errs = append(errs, fmt.Errorf("release address of pod %s: %w", name, err))
		}
	}
	errs = append(errs, n.do(func(s *state) error {
		delete(s.pods, name)
		return n.save(s)
	}))
	n.log.Info("pod deleted", "pod", name)
	return errors.Join(errs...)
}

// Pods lists the pods, sorted by name.
func (n *Node) Pods() []nodeapi.PodInfo {
	var out []nodeapi.PodInfo
	n.do(func(s *state) error {
		for _, p := range s.listed() {
			out = append(out, n.info(p))
		}
		return nil
	})
	if out == nil {
		out = []nodeapi.PodInfo{}
	}
	return out
}

func (n *Node) info(p *pod) nodeapi.PodInfo {
	return nodeapi.PodInfo{
		Name: p.rec.Name, IP: p.rec.IP.String(), Netns: p.rec.Netns, Tap: vswitch.PodIfName + "@" + filepath.Base(p.rec.Netns),
		MAC: p.rec.MAC, Node: n.cfg.Name, Port: p.port, Attached: p.attached, Error: p.err,
		Created: p.rec.Created.Format(time.RFC3339),
	}
}

// save writes the records of the pods the node has (being deleted
// included: until their address is released, a restarted daemon must
// still know them).
func (n *Node) save(s *state) error {
	recs := make([]PodRecord, 0, len(s.pods))
	for _, p := range s.pods {
		if p.phase != podAdding {
			recs = append(recs, p.rec)
		}
	}
	slices.SortFunc(recs, func(a, b PodRecord) int { return strings.Compare(a.Name, b.Name) })
	return n.local.save(recs)
}

// restorePods attaches the persistent TAPs of recorded pods again. A pod
// whose namespace or TAP has gone stays listed, detached, with the reason,
// so nothing disappears silently. Run calls it before the control loop
// starts, on the state it then hands to the loop.
func (n *Node) restorePods(s *state) error {
	recs, err := n.local.load()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		p := &pod{rec: rec, phase: podReady, port: -1}
		s.pods[rec.Name] = p
		dev, mac, err := vswitch.ReattachPodLink(rec.Netns, n.cfg.TapOffload)
		if err != nil {
			p.err = err.Error()
			n.log.Warn("pod not reattached", "pod", rec.Name, "err", err)
			continue
		}
		idx, err := n.sw.AddPodPort(vswitch.PodPort{Name: rec.Name, IP: rec.IP, MAC: mac, Dev: dev})
		if err != nil {
			dev.Close()
			p.err = err.Error()
			continue
		}
		p.port, p.attached = idx, true
		// The pools' encapsulation may have changed while the daemon
		// was down.
		if err := setPodMTU(rec.Netns, s.podMTU(n.cfg.PodMTU)); err != nil {
			n.log.Warn("pod MTU", "pod", rec.Name, "err", err)
		}
		if err := n.podKernelRoute(rec.IP, true); err != nil {
			n.log.Warn("pod kernel route", "pod", rec.Name, "err", err)
		}
		n.log.Info("pod reattached", "pod", rec.Name, "ip", rec.IP, "port", idx)
	}
	return n.publish(s)
}

// createNamedNetns makes /run/netns/NAME like `ip netns add`.
// netns.NewNamed moves its thread into the new namespace, so it runs on a
// thread that netnsutil returns to the daemon's own namespace afterwards.
func createNamedNetns(name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		return fmt.Errorf("netns %s already exists", name)
	}
	return netnsutil.Do("/proc/self/ns/net", func() error {
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		h.Close()
		return nil
	})
}
