package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"podnet/api"
	"podnet/internal/netnsutil"
	"podnet/internal/packet"
	"podnet/ipam"
	"podnet/nodeapi"
	vswitch "podnet/switch"
	"podnet/switch/tap"
)

// Pod lifecycle. Each operation does its datastore and netns work outside
// the control loop and touches the state only in short steps on it:
// reserve the name, (allocate, create, record), commit.

// podNameRE is a DNS label, like Kubernetes pod names.
var podNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// portNames are the names capture and trace give the node's own ports; a
// pod of one of them could not be told from the port.
var portNames = map[string]bool{"host": true, vswitch.HostTUNName: true, "underlay": true, "ipip": true, "vxlan": true}

// userError is an error caused by the request, not the node. code is
// its HTTP status; 0 means 400 Bad Request.
type userError struct {
	msg  string
	code int
	// field is the request's field at fault (nodeapi.FieldPool), if one is.
	field string
}

func (e *userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...)}
}

// badPool: the request's pool does not exist or gives no addresses (400
// naming the field, so that a CNI plugin can say its configuration is
// wrong).
func badPool(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), field: nodeapi.FieldPool}
}

// notFound: the request names a pod the node does not have (404).
func notFound(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), code: http.StatusNotFound}
}

// busyPod: the pod is being added; ask again later (409).
func busyPod(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), code: http.StatusConflict}
}

// gonePod: the pod is being deleted: it is off the node already and the
// daemon finishes the rest (410).
func gonePod(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), code: http.StatusGone}
}

// AddPod creates the pod's port and records it. It either succeeds or
// leaves nothing behind: no TAP, no record, no route, no address. The
// record of the add (an intent, PodRecord.State "adding") is on disk
// before the address is allocated, so that a daemon that dies half-way
// rolls the add back when it starts again (restorePods).
func (n *Node) AddPod(req nodeapi.AddPodRequest) (nodeapi.PodInfo, error) {
	if !podNameRE.MatchString(req.Name) {
		return nodeapi.PodInfo{}, badRequest("invalid pod name %q: want a DNS label (lowercase letters, digits, '-', at most 63)", req.Name)
	}
	if portNames[req.Name] {
		return nodeapi.PodInfo{}, badRequest("pod name %q is taken by the node's own port of that name (capture and trace name ports so): choose another", req.Name)
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
	// Whatever is in the namespace before the add is not the add's: a
	// rollback deletes the namespace (--new) or its eth0, so neither may
	// be there already.
	nsPath, nsName := req.Netns, ""
	var nsID netnsID
	if req.New {
		prefix := n.cfg.PodNetnsPrefix
		if prefix == "" {
			prefix = n.cfg.Name + "-"
		}
		nsName = prefix + req.Name
		nsPath = filepath.Join("/run/netns", nsName)
		if _, err := os.Stat(nsPath); err == nil {
			return nodeapi.PodInfo{}, badRequest("pod %s: netns %s already exists", req.Name, nsName)
		}
	} else {
		// Saved as given and checked again at every start (pods.json):
		// a path that is not plainly absolute would stop the next start.
		switch {
		case !filepath.IsAbs(req.Netns):
			return nodeapi.PodInfo{}, badRequest("pod %s: --netns %q: must be an absolute path (/run/netns/NAME for a named namespace)", req.Name, req.Netns)
		case filepath.Clean(req.Netns) != req.Netns:
			return nodeapi.PodInfo{}, badRequest("pod %s: --netns %q: must be written plainly (no trailing /, no . or .. parts, no //): %s?", req.Name, req.Netns, filepath.Clean(req.Netns))
		}
		if _, err := os.Stat(req.Netns); err != nil {
			return nodeapi.PodInfo{}, badRequest("pod %s: netns %s: %v", req.Name, req.Netns, errors.Unwrap(err))
		}
		if hasPodLink(req.Netns) {
			return nodeapi.PodInfo{}, badRequest("pod %s: netns %s already has an %s", req.Name, req.Netns, vswitch.PodIfName)
		}
		nsID = netnsIDOf(req.Netns)
	}
	// No address without etcd: say so now rather than after a timeout.
	if err := n.requireDatastore(); err != nil {
		return nodeapi.PodInfo{}, fmt.Errorf("pod %s: %w", req.Name, err)
	}

	// Reserve the name, the namespace (an add into it under way would
	// pass the check above, and its rollback would delete this add's
	// eth0) and the address asked for on the loop, and write the intent.
	rec := PodRecord{Name: req.Name, IP: wantIP, Netns: nsPath, OwnsNetns: req.New,
		Handle: n.podHandle(req.Name), Created: time.Now().UTC()}
	var mtu int
	err := n.do(func(s *state) error {
		if p, dup := s.pods[req.Name]; dup {
			switch p.phase {
			case podDeleting:
				return badRequest("pod %s is being deleted", req.Name)
			case podReleasing:
				return badRequest("pod %s is being deleted: the release of its address waits for the datastore (podnet status lists it); try again once it is done", req.Name)
			}
			return badRequest("pod %s already exists", req.Name)
		}
		if err := netnsTaken(s, req.Name, nsPath, nsID); err != nil {
			return err
		}
		if wantIP.IsValid() {
			if err := addrTaken(s, req.Name, wantIP); err != nil {
				return err
			}
		}
		s.pods[req.Name] = &pod{rec: rec, phase: podAdding, port: -1, netns: nsID}
		if err := n.save(s); err != nil {
			delete(s.pods, req.Name)
			return err
		}
		mtu = s.podMTU(n.cfg.PodMTU)
		return nil
	})
	if err != nil {
		return nodeapi.PodInfo{}, err
	}
	if !req.New && hasPodLink(req.Netns) {
		// Another pod got into the namespace between the first look and
		// the reservation (by another path to it, say): give the
		// reservation back without the rollback, which would delete
		// that pod's eth0.
		if err := n.do(func(s *state) error { delete(s.pods, req.Name); return n.save(s) }); err != nil {
			n.log.Warn("pod add refused; dropping its record", "pod", req.Name, "err", err)
		}
		return nodeapi.PodInfo{}, badRequest("pod %s: netns %s already has an %s", req.Name, req.Netns, vswitch.PodIfName)
	}
	crashPoint("add-intent")
	var dev *tap.Device
	fail := func(err error) (nodeapi.PodInfo, error) {
		if dev != nil {
			// Without persist the kernel deletes the TAP with its fd.
			dev.SetPersist(false)
			dev.Close()
		}
		if lerr := n.removeLocal(rec); lerr != nil {
			n.log.Warn("pod add failed; cleaning up", "pod", req.Name, "err", lerr)
		}
		if rerr := n.finishRemoval(rec); rerr != nil {
			err = fmt.Errorf("%w (its address is released in the background: %v)", err, rerr)
		}
		return nodeapi.PodInfo{}, err
	}

	// The slow part, off the loop: IPAM, the namespace, the link, the
	// WorkloadEndpoint.
	ctx, cancel := opContext()
	defer cancel()
	ip, err := n.allocate(ctx, req.Name, req.IP, req.Pool)
	if err != nil {
		return fail(err)
	}
	crashPoint("add-alloc")
	// IPAM's answer against what this node has: an address a local pod
	// uses means IPAM lost it (e.g. released as leaked); never give it
	// twice.
	err = n.do(func(s *state) error {
		if err := addrTaken(s, req.Name, ip); err != nil {
			return fmt.Errorf("IPAM gave pod %s %s, but %v: run podnet ipam check", req.Name, ip, err)
		}
		s.pods[req.Name].rec.IP = ip
		return nil
	})
	if err != nil {
		return fail(err)
	}
	rec.IP = ip
	if req.New {
		if err := createNamedNetns(nsName); err != nil {
			return fail(fmt.Errorf("pod %s: %w", req.Name, err))
		}
		nsID = netnsIDOf(nsPath)
	}
	var mac packet.MAC
	dev, mac, err = vswitch.CreatePodLink(vswitch.PodLinkConfig{
		Pod: req.Name, Netns: rec.Netns, IP: ip, MTU: mtu, Offload: n.cfg.TapOffload, QueueLen: n.cfg.PodQueueLen,
	})
	if err != nil {
		return fail(err)
	}
	crashPoint("add-link")
	rec.MAC = mac.String()
	if err := n.recordEndpoint(ctx, rec, true); err != nil {
		return fail(fmt.Errorf("pod %s: record workload endpoint: %w", req.Name, err))
	}
	crashPoint("add-wep")

	// Commit on the loop: port, routes, kernel route, pod records.
	var info nodeapi.PodInfo
	err = n.do(func(s *state) error {
		p := s.pods[req.Name]
		idx, err := n.sw.AddPodPort(vswitch.PodPort{Name: req.Name, IP: ip, MAC: mac, Dev: dev})
		if err != nil {
			return err
		}
		p.rec, p.port, p.attached, p.phase, p.netns = rec, idx, true, podReady, nsID
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
			// RemovePort closes the device; fail then only deletes
			// the link.
			p.phase, p.attached = podAdding, false
			n.sw.RemovePort(idx)
			n.publish(s)
			dev = nil
			return err
		}
		info = n.info(p)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	crashPoint("add-done")
	n.log.Info("pod added", "pod", req.Name, "ip", ip, "netns", rec.Netns, "port", info.Port)
	return info, nil
}

// addrTaken says why ip cannot go to pod name: the node's own address,
// or another pod's here (being added or deleted included).
func addrTaken(s *state, name string, ip netip.Addr) error {
	if slices.Contains(s.hostAddrs, ip) {
		return badRequest("address %s belongs to the node itself", ip)
	}
	for _, p := range s.pods {
		if p.rec.Name != name && p.rec.IP == ip {
			return badRequest("address %s is already used by pod %s", ip, p.rec.Name)
		}
	}
	return nil
}

// netnsTaken says why pod name cannot go into the namespace at path (id
// when known): another pod is being added there, has it, or is being
// deleted from it, and this add's rollback, or that pod's, would delete
// the other's eth0. A pod whose delete is done here (podReleasing) has
// left it. A ready pod counts by its path only: its namespace may be gone
// and its number taken by a new one (and one still there has an eth0,
// which AddPod refuses anyway).
func netnsTaken(s *state, name, path string, id netnsID) error {
	for _, p := range s.pods {
		if p.rec.Name == name || p.phase == podReleasing {
			continue
		}
		samePath := filepath.Clean(p.rec.Netns) == filepath.Clean(path)
		sameNetns := id != (netnsID{}) && p.netns == id && p.phase != podReady
		if !samePath && !sameNetns {
			continue
		}
		switch p.phase {
		case podAdding:
			return badRequest("pod %s: netns %s is taken by pod %s, being added there", name, path, p.rec.Name)
		case podDeleting:
			return badRequest("pod %s: netns %s is pod %s's, being deleted; try again once it is done", name, path, p.rec.Name)
		}
		return badRequest("pod %s: netns %s is pod %s's", name, path, p.rec.Name)
	}
	return nil
}

// netnsID is a network namespace whatever the path to it
// (/run/netns/x, /var/run/netns/x, /proc/PID/ns/net); zero when unknown.
type netnsID struct{ dev, ino uint64 }

func netnsIDOf(path string) netnsID {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return netnsID{}
	}
	return netnsID{st.Dev, st.Ino}
}

// DeletePod detaches a pod, deletes its eth0 (and its namespace if the
// daemon created it), releases its address and forgets it. The record
// says "deleting" from the start, so a restarted daemon finishes a
// delete it was killed in. When etcd does not answer, the pod is gone
// from the node and its address release is pending (podReleasing):
// the datastore goroutine retries it, status lists it.
func (n *Node) DeletePod(name string) error {
	var rec PodRecord
	var errs []error
	var err error
	for wait := time.Now().Add(opTimeout); ; {
		busy := false
		err = n.do(func(s *state) error {
			p, ok := s.pods[name]
			switch {
			case !ok:
				return notFound("pod %s not found", name)
			case p.phase == podAdding:
				return busyPod("pod %s is being added", name)
			case p.phase == podDeleting, p.phase == podReleasing:
				return gonePod("pod %s is being deleted", name)
			case p.busy:
				busy = true
				return nil
			}
			if p.attached {
				errs = append(errs, n.sw.RemovePort(p.port), n.podKernelRoute(p.rec.IP, false))
				p.attached = false
			}
			p.phase, rec = podDeleting, p.rec
			errs = append(errs, n.save(s), n.publish(s))
			return nil
		})
		if !busy || err != nil {
			break
		}
		if time.Now().After(wait) {
			return fmt.Errorf("pod %s: still being checked against the datastore after %v; try again", name, opTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	crashPoint("del-start")
	// End the pod's NAT flows before its address can go to another pod:
	// nothing of the old connections may reach the new one.
	if n.nat != nil {
		if k := n.nat.ForgetPod(rec.IP); k > 0 {
			n.log.Info("NAT flows of deleted pod reset", "pod", name, "flows", k)
		}
	}
	errs = append(errs, n.removeLocal(rec))
	crashPoint("del-local")
	if err := n.finishRemoval(rec); err != nil {
		// The pod is gone from the node; only the datastore lags.
		n.log.Info("pod deleted; address release pending", "pod", name, "ip", rec.IP)
		return errors.Join(errs...)
	}
	n.log.Info("pod deleted", "pod", name)
	return errors.Join(errs...)
}

// removeLocal undoes on this machine what an add of rec made: the TAP
// left in the node's namespace by an add cut short, the pod's eth0, and
// its namespace when the daemon created it. Each step is a no-op when
// there is nothing to undo.
func (n *Node) removeLocal(rec PodRecord) error {
	var errs []error
	if l, err := netlink.LinkByName(vswitch.TempTAPName(rec.Name)); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
		}
	}
	if rec.Netns != "" {
		errs = append(errs, vswitch.DeletePodLink(rec.Netns))
	}
	if rec.OwnsNetns {
		if err := netns.DeleteNamed(filepath.Base(rec.Netns)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", rec.Netns, err))
		}
	}
	return errors.Join(errs...)
}

// finishRemoval releases rec's WorkloadEndpoint and address in the
// datastore, then forgets the pod. When etcd is unreachable, or the
// release fails, the pod stays as podReleasing (recorded, name taken)
// and the datastore goroutine retries it (retryReleases); the error
// says why.
func (n *Node) finishRemoval(rec PodRecord) error {
	err := n.requireDatastore()
	if err == nil {
		ctx, cancel := opContext()
		err = n.releaseInDatastore(ctx, rec)
		cancel()
	}
	if err != nil {
		n.log.Warn("address release pending; retried when the datastore answers", "pod", rec.Name, "ip", rec.IP, "err", err)
		n.do(func(s *state) error {
			if p, ok := s.pods[rec.Name]; ok {
				p.phase, p.attached, p.port = podReleasing, false, -1
			}
			return n.save(s)
		})
		return err
	}
	return n.do(func(s *state) error {
		delete(s.pods, rec.Name)
		return n.save(s)
	})
}

// releaseInDatastore deletes rec's WorkloadEndpoint, then frees its
// address: in that order, an interruption leaves an address without
// endpoint (which ipam check reports), never an endpoint naming an
// address IPAM may give to another pod.
func (n *Node) releaseInDatastore(ctx context.Context, rec PodRecord) error {
	if err := n.recordEndpoint(ctx, rec, false); err != nil {
		return fmt.Errorf("delete workload endpoint of pod %s: %w", rec.Name, err)
	}
	if rec.Handle != "" {
		if err := n.ipam.ReleaseByHandle(ctx, rec.Handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) {
			return fmt.Errorf("release address of pod %s: %w", rec.Name, err)
		}
	}
	return nil
}

// retryReleases runs the pending releases (podReleasing) again. The
// datastore goroutine calls it after each reconcile; it returns how
// many are still pending.
func (n *Node) retryReleases(ctx context.Context) int {
	var pending []PodRecord
	n.do(func(s *state) error {
		for _, p := range s.pods {
			if p.phase == podReleasing {
				pending = append(pending, p.rec)
			}
		}
		return nil
	})
	left := 0
	for _, rec := range pending {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.releaseInDatastore(rctx, rec)
		cancel()
		if err != nil {
			left++
			if ctx.Err() == nil {
				n.log.Warn("pending address release", "pod", rec.Name, "ip", rec.IP, "err", err)
			}
			continue
		}
		err = n.do(func(s *state) error {
			if p, ok := s.pods[rec.Name]; ok && p.phase == podReleasing {
				delete(s.pods, rec.Name)
			}
			return n.save(s)
		})
		if err != nil {
			left++
			continue
		}
		n.log.Info("pending address release done", "pod", rec.Name, "ip", rec.IP)
	}
	return left
}

// pendingReleases names the pods whose release waits, for status.
func (s *state) pendingReleases() []string {
	var out []string
	for _, p := range s.pods {
		if p.phase == podReleasing {
			out = append(out, p.rec.Name)
		}
	}
	slices.Sort(out)
	return out
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

// save writes the records of the pods the node has, each with the state
// a restarted daemon must know: an add under way ("adding": roll it
// back), a delete under way or a release pending ("deleting": finish
// it), or none (the pod is here). It runs on the loop: a local file,
// no datastore.
func (n *Node) save(s *state) error {
	recs := make([]PodRecord, 0, len(s.pods))
	for _, p := range s.pods {
		rec := p.rec
		switch p.phase {
		case podAdding:
			rec.State = recAdding
		case podDeleting, podReleasing:
			rec.State = recDeleting
		default:
			rec.State = ""
		}
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b PodRecord) int { return strings.Compare(a.Name, b.Name) })
	return n.local.save(recs)
}

// restorePods attaches the persistent TAPs of recorded pods again. A pod
// whose namespace or TAP has gone stays listed, detached, with the reason,
// so nothing disappears silently. An add or delete the daemon died in is
// rolled back or finished here, on this machine; its address release
// waits for the datastore goroutine (podReleasing). Run calls it before
// the control loop starts, on the state it then hands to the loop.
func (n *Node) restorePods(s *state) error {
	recs, err := n.local.load()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.State == recAdding || rec.State == recDeleting {
			s.pods[rec.Name] = &pod{rec: rec, phase: podReleasing, port: -1}
			what := "interrupted pod delete finished"
			if rec.State == recAdding {
				what = "interrupted pod add rolled back"
			}
			if err := n.removeLocal(rec); err != nil {
				n.log.Warn(what, "pod", rec.Name, "err", err)
			} else {
				n.log.Info(what+"; its address is released next", "pod", rec.Name, "ip", rec.IP)
			}
			continue
		}
		p := &pod{rec: rec, phase: podReady, port: -1, netns: netnsIDOf(rec.Netns)}
		s.pods[rec.Name] = p
		dev, mac, err := vswitch.ReattachPodLink(rec.Netns, n.cfg.TapOffload)
		if err != nil {
			p.err = err.Error()
			n.log.Warn("pod not reattached", "pod", rec.Name, "err", err)
			continue
		}
		if n.cfg.PodQueueLen != 0 {
			// A setting the pod can work without: say so, and attach it.
			if err := vswitch.SetPodQueueLen(rec.Netns, n.cfg.PodQueueLen); err != nil {
				n.log.Warn("pod queue length", "pod", rec.Name, "err", err)
			}
		}
		idx, err := n.sw.AddPodPort(vswitch.PodPort{Name: rec.Name, IP: rec.IP, MAC: mac, Dev: dev})
		if err != nil {
			dev.Close()
			p.err = err.Error()
			continue
		}
		p.port, p.attached = idx, true
		// The pools' encapsulation may have changed while the daemon
		// was down; when etcd did not say, the pods keep their MTU.
		if s.overheadKnown {
			if err := setPodMTU(rec.Netns, s.podMTU(n.cfg.PodMTU)); err != nil {
				n.log.Warn("pod MTU", "pod", rec.Name, "err", err)
			}
		}
		if err := n.podKernelRoute(rec.IP, true); err != nil {
			n.log.Warn("pod kernel route", "pod", rec.Name, "err", err)
		}
		n.log.Info("pod reattached", "pod", rec.Name, "ip", rec.IP, "port", idx)
	}
	return n.publish(s)
}

// hasPodLink says whether the namespace at path has an eth0.
func hasPodLink(path string) bool {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return false
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return false
	}
	defer h.Close()
	_, err = h.LinkByName(vswitch.PodIfName)
	return err == nil
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
