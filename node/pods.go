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

	"podnet/ipam"
	vswitch "podnet/switch"
)

// AddPodRequest asks for a pod to be attached.
type AddPodRequest struct {
	Name string `json:"name"`
	// Netns is the path of an existing network namespace; or set New.
	Netns string `json:"netns,omitempty"`
	// New makes the daemon create a named namespace for the pod
	// (/run/netns/<node>-<name>), which it deletes with the pod.
	New bool `json:"new,omitempty"`
	// IP asks for this address; "" lets IPAM pick one.
	IP string `json:"ip,omitempty"`
	// Pool names the pool IPAM picks from; "" means any enabled pool.
	Pool string `json:"pool,omitempty"`
}

// PodInfo is a pod as the API shows it.
type PodInfo struct {
	Name     string `json:"name"`
	IP       string `json:"ip"`
	Netns    string `json:"netns"`
	Tap      string `json:"tap"`
	MAC      string `json:"mac"`
	Node     string `json:"node"`
	Port     int    `json:"port"`
	Attached bool   `json:"attached"`
	Error    string `json:"error,omitempty"`
	Created  string `json:"created"`
}

// podNameRE is a DNS label, like Kubernetes pod names.
var podNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// userError is an error caused by the request, not the node.
type userError struct{ msg string }

func (e *userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &userError{fmt.Sprintf(format, args...)}
}

// AddPod creates the pod's port and records it. It either succeeds or
// leaves nothing behind: no TAP, no record, no route.
func (n *Node) AddPod(req AddPodRequest) (PodInfo, error) {
	if !podNameRE.MatchString(req.Name) {
		return PodInfo{}, badRequest("invalid pod name %q: want a DNS label (lowercase letters, digits, '-', at most 63)", req.Name)
	}
	if req.IP != "" && req.Pool != "" {
		return PodInfo{}, badRequest("pod %s: give --ip or --pool, not both", req.Name)
	}
	if req.IP != "" {
		ip, err := netip.ParseAddr(req.IP)
		if err != nil || !ip.Is4() {
			return PodInfo{}, badRequest("pod %s: invalid IPv4 address %q", req.Name, req.IP)
		}
		if ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return PodInfo{}, badRequest("pod %s: address %s cannot be a pod address", req.Name, ip)
		}
	}
	if (req.Netns == "") == !req.New {
		return PodInfo{}, badRequest("pod %s: give exactly one of --netns PATH or --new", req.Name)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if _, dup := n.pods[req.Name]; dup {
		return PodInfo{}, badRequest("pod %s already exists", req.Name)
	}
	// hostAddrs follows the node's addresses (routineWatchAddrs): read it
	// under the lock.
	for _, a := range n.hostAddrs {
		if req.IP != "" && a.String() == req.IP {
			return PodInfo{}, badRequest("address %s belongs to the node itself", req.IP)
		}
	}
	for _, p := range n.pods {
		if req.IP != "" && p.rec.IP.String() == req.IP {
			return PodInfo{}, badRequest("address %s is already used by pod %s", req.IP, p.rec.Name)
		}
	}
	if !req.New {
		if _, err := os.Stat(req.Netns); err != nil {
			return PodInfo{}, badRequest("pod %s: netns %s: %v", req.Name, req.Netns, errors.Unwrap(err))
		}
	}

	ctx, cancel := opContext()
	defer cancel()
	var undo []func()
	fail := func(err error) (PodInfo, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return PodInfo{}, err
	}
	ip, err := n.allocate(ctx, req.Name, req.IP, req.Pool)
	if err != nil {
		return fail(err)
	}
	handle := n.podHandle(req.Name)
	undo = append(undo, func() { n.ipam.ReleaseByHandle(context.Background(), handle) })
	rec := PodRecord{Name: req.Name, IP: ip, Netns: req.Netns, Handle: handle, Created: time.Now().UTC()}
	if req.New {
		nsName := n.cfg.Name + "-" + req.Name
		if err := createNamedNetns(nsName); err != nil {
			return fail(fmt.Errorf("pod %s: %w", req.Name, err))
		}
		rec.Netns, rec.OwnsNetns = filepath.Join("/run/netns", nsName), true
		undo = append(undo, func() { netns.DeleteNamed(nsName) })
	}

	dev, mac, err := vswitch.CreatePodLink(vswitch.PodLinkConfig{
		Pod: req.Name, Netns: rec.Netns, IP: ip, MTU: n.podMTU(), Offload: n.cfg.TapOffload,
	})
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { dev.SetPersist(false); dev.Close(); vswitch.DeletePodLink(rec.Netns) })
	rec.MAC = mac.String()

	idx, err := n.sw.AddPodPort(vswitch.PodPort{Name: req.Name, IP: ip, MAC: mac, Dev: dev})
	if err != nil {
		return fail(err)
	}
	// RemovePort closes the device; the undo above then only deletes the link.
	undo = append(undo, func() { n.sw.RemovePort(idx) })
	p := &pod{rec: rec, port: idx, attached: true}
	n.pods[req.Name] = p
	undo = append(undo, func() { delete(n.pods, req.Name); n.rebuildRoutes() })
	if err := n.rebuildRoutes(); err != nil {
		return fail(err)
	}
	if err := n.kernelRoute(ip, true); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { n.kernelRoute(ip, false) })
	if err := n.saveLocked(); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { delete(n.pods, req.Name); n.saveLocked() })
	if err := n.recordEndpoint(ctx, rec, true); err != nil {
		return fail(fmt.Errorf("pod %s: record workload endpoint: %w", req.Name, err))
	}
	n.log.Info("pod added", "pod", req.Name, "ip", ip, "netns", rec.Netns, "port", idx)
	return n.info(p), nil
}

// DeletePod detaches a pod, deletes its eth0 (and its namespace if the
// daemon created it) and forgets it.
func (n *Node) DeletePod(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.pods[name]
	if !ok {
		return badRequest("pod %s not found", name)
	}
	var errs []error
	if p.attached {
		errs = append(errs, n.sw.RemovePort(p.port))
		errs = append(errs, n.kernelRoute(p.rec.IP, false))
	}
	errs = append(errs, vswitch.DeletePodLink(p.rec.Netns))
	if p.rec.OwnsNetns {
		if err := netns.DeleteNamed(filepath.Base(p.rec.Netns)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", p.rec.Netns, err))
		}
	}
	ctx, cancel := opContext()
	defer cancel()
	errs = append(errs, n.recordEndpoint(ctx, p.rec, false))
	if p.rec.Handle != "" {
		if err := n.ipam.ReleaseByHandle(ctx, p.rec.Handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) {
			errs = append(errs, fmt.Errorf("release address of pod %s: %w", name, err))
		}
	}
	delete(n.pods, name)
	errs = append(errs, n.rebuildRoutes(), n.saveLocked())
	n.log.Info("pod deleted", "pod", name)
	return errors.Join(errs...)
}

// Pods lists the pods, sorted by name.
func (n *Node) Pods() []PodInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]PodInfo, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, n.info(p))
	}
	slices.SortFunc(out, func(a, b PodInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (n *Node) info(p *pod) PodInfo {
	return PodInfo{
		Name: p.rec.Name, IP: p.rec.IP.String(), Netns: p.rec.Netns, Tap: vswitch.PodIfName + "@" + filepath.Base(p.rec.Netns),
		MAC: p.rec.MAC, Node: n.cfg.Name, Port: p.port, Attached: p.attached, Error: p.err,
		Created: p.rec.Created.Format(time.RFC3339),
	}
}

func (n *Node) saveLocked() error {
	recs := make([]PodRecord, 0, len(n.pods))
	for _, p := range n.pods {
		recs = append(recs, p.rec)
	}
	slices.SortFunc(recs, func(a, b PodRecord) int { return strings.Compare(a.Name, b.Name) })
	return n.local.save(recs)
}

// restorePods attaches the persistent TAPs of recorded pods again. A pod
// whose namespace or TAP has gone stays listed, detached, with the reason,
// so nothing disappears silently.
func (n *Node) restorePods() error {
	recs, err := n.local.load()
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, rec := range recs {
		p := &pod{rec: rec, port: -1}
		n.pods[rec.Name] = p
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
		if err := n.kernelRoute(rec.IP, true); err != nil {
			n.log.Warn("pod kernel route", "pod", rec.Name, "err", err)
		}
		n.log.Info("pod reattached", "pod", rec.Name, "ip", rec.IP, "port", idx)
	}
	return n.rebuildRoutes()
}

// createNamedNetns makes /run/netns/NAME like `ip netns add` without
// moving the calling thread into it.
func createNamedNetns(name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		return fmt.Errorf("netns %s already exists", name)
	}
	return runOnLockedThread(func() error {
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		h.Close()
		return nil
	})
}
