package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PodSpec describes a pod added to a running lab.
type PodSpec struct {
	// Name is the pod's name, a DNS label (as the daemon wants it) that is
	// not a node's name, "fabric" or "external", and does not start with
	// a node's name and "-" (LAB-worker1-POD is the namespace of a pod
	// added by hand on worker1). Its namespace is LAB-Name, so two labs
	// never share one.
	Name string
	// Node is the node the pod goes to; "" = the node with the fewest
	// pods (the first of them on a tie), as a scheduler would spread them.
	Node string
	// Pool is the IP pool the pod's address comes from; "" = any enabled
	// pool, the daemon's choice.
	Pool string
}

// podNameRE is the daemon's rule for pod names: a DNS label.
var podNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// reservedRE matches the names of a lab's other members: a pod may not
// take them, or its namespace would be theirs.
var reservedRE = regexp.MustCompile(`^(fabric|external|worker[0-9]+)$`)

// handPodRE matches the pod names whose namespace NAME-worker<K>-... is
// where node worker<K>'s daemon puts pods added by hand (`podnet pod add
// --new`, HandPodNetnsPrefix).
var handPodRE = regexp.MustCompile(`^(worker[0-9]+)-`)

// checkPodName says why name cannot be a new pod of the lab, or nil.
// Caller holds l.mu.
func (l *Lab) checkPodName(name string) error {
	switch {
	case !podNameRE.MatchString(name):
		return fmt.Errorf("pod name %q: must be a DNS label (%s)", name, podNameRE)
	case reservedRE.MatchString(name):
		return fmt.Errorf("pod name %q: taken by the lab's %s namespace; pick another", name, name)
	case handPodRE.MatchString(name):
		node := handPodRE.FindStringSubmatch(name)[1]
		return fmt.Errorf("pod name %q: namespaces %s-%s-* belong to the pods added by hand on %s (podnet pod add --new); pick a name not starting with %s-",
			name, l.st.Name, node, node, node)
	case l.st.pod(name) != nil:
		return fmt.Errorf("lab %s already has a pod %s (on %s)", l.st.Name, name, l.st.pod(name).Node)
	}
	return nil
}

// AddPod adds a pod to the running lab: its namespace (lo up), an eth0
// from the node's daemon with an address from IPAM, and its HTTP server.
// It returns once every other node routes to it. The pod is recorded in
// the lab's state, so Exec, Status and Down see it. On failure nothing of
// the pod is left behind.
func (l *Lab) AddPod(ctx context.Context, spec PodSpec) (PodStatus, error) {
	unlock, err := l.lockState()
	if err != nil {
		return PodStatus{}, err
	}
	defer unlock()
	if err := l.addPodSpec(ctx, spec); err != nil {
		return PodStatus{}, err
	}
	if err := l.waitRoutes(ctx); err != nil {
		return PodStatus{}, err
	}
	return l.podStatus(spec.Name), nil
}

// addPodSpec checks spec, picks the node and adds the pod, undoing it on
// failure. Caller holds the state lock.
func (l *Lab) addPodSpec(ctx context.Context, spec PodSpec) error {
	l.mu.Lock()
	err := l.checkPodName(spec.Name)
	if err == nil && l.st.NoDaemon {
		err = fmt.Errorf("lab %s has no daemons (--no-daemon): pods need one", l.st.Name)
	}
	if err == nil && spec.Node == "" {
		spec.Node = l.st.leastLoaded()
	}
	if err == nil && l.st.node(spec.Node) == nil {
		err = l.unknownNodeLocked(spec.Node)
	}
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.addPod(ctx, spec.Name, spec.Node, spec.Pool); err != nil {
		if derr := l.removePod(context.WithoutCancel(ctx), spec.Name); derr != nil {
			err = errors.Join(err, fmt.Errorf("undo pod %s: %w", spec.Name, derr))
		}
		return err
	}
	return nil
}

// leastLoaded returns the node with the fewest pods, the first on a tie.
func (s *state) leastLoaded() string {
	best, bestN := "", -1
	for _, n := range s.Nodes {
		c := 0
		for _, p := range s.Pods {
			if p.Node == n.Name {
				c++
			}
		}
		if bestN < 0 || c < bestN {
			best, bestN = n.Name, c
		}
	}
	return best
}

// DeletePod removes a pod of the lab: its HTTP server, its eth0 and
// address (through its node's daemon), its namespace and its directory.
func (l *Lab) DeletePod(ctx context.Context, name string) error {
	unlock, err := l.lockState()
	if err != nil {
		return err
	}
	defer unlock()
	l.mu.Lock()
	p := l.st.pod(name)
	var pods []string
	for _, p := range l.st.Pods {
		pods = append(pods, p.Name)
	}
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("lab %s has no pod %q (pods: %s)", l.Name(), name, strings.Join(pods, ", "))
	}
	return l.removePod(ctx, name)
}

// removePod undoes addPod as far as it got. Caller holds the state lock.
func (l *Lab) removePod(ctx context.Context, name string) error {
	l.mu.Lock()
	var p podState
	if pp := l.st.pod(name); pp != nil {
		p = *pp
	}
	var n nodeState
	if nn := l.st.node(p.Node); nn != nil {
		n = *nn
	}
	bin := l.st.Binary
	ns := netnsOf(l.st.Name, name)
	// Only a namespace the lab made (addNetns records it): when the add
	// failed at `ip netns add`, the namespace there is someone else's.
	ours := slices.Contains(l.st.Namespaces, ns)
	l.mu.Unlock()
	l.r.progressf("removing pod %s from %s", name, p.Node)
	var errs []error
	if p.HTTP.PID != 0 {
		if err := stopAll([]procID{p.HTTP}, unix.SIGTERM, killGrace); err != nil {
			errs = append(errs, fmt.Errorf("stop http of pod %s: %w", name, err))
		}
		l.reap(p.HTTP.PID)
	}
	if p.IP.IsValid() && n.Socket != "" {
		if _, err := l.r.runEnv(ctx, []string{"PODNET_SOCKET=" + n.Socket},
			"ip", "netns", "exec", n.Netns, bin, "pod", "del", name); err != nil {
			errs = append(errs, fmt.Errorf("detach pod %s from %s: %w", name, p.Node, err))
		}
	}
	if _, err := os.Stat(NetnsPath(ns)); err == nil && ours {
		if _, err := l.r.run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
	}
	if p.Dir != "" {
		if err := os.RemoveAll(p.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove dir of pod %s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the pod recorded: Down still knows what to clean.
		return err
	}
	return l.update(func(st *state) {
		st.Pods = slices.DeleteFunc(st.Pods, func(p podState) bool { return p.Name == name })
		st.Namespaces = slices.DeleteFunc(st.Namespaces, func(s string) bool { return s == ns })
	})
}

// Scale makes deployment have replicas pods, named DEPLOYMENT-1,
// DEPLOYMENT-2, ...: it adds the lowest missing numbers, each on the node
// with the fewest pods, or removes the highest ones, like a Kubernetes
// deployment's replica count. It returns the pods it added and removed.
func (l *Lab) Scale(ctx context.Context, deployment string, replicas int) (added, removed []string, err error) {
	if !podNameRE.MatchString(deployment+"-1") || strings.HasSuffix(deployment, "-") {
		return nil, nil, fmt.Errorf("deployment name %q: DEPLOYMENT-N must be a DNS label", deployment)
	}
	if replicas < 0 {
		return nil, nil, fmt.Errorf("deployment %s: replicas %d: must be 0 or more", deployment, replicas)
	}
	unlock, err := l.lockState()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	l.mu.Lock()
	max := len(l.st.Nodes) * MaxPodsPerNode
	have := l.st.replicas(deployment)
	l.mu.Unlock()
	if replicas > max {
		return nil, nil, fmt.Errorf("deployment %s: replicas %d: at most %d in this lab (%d per node)", deployment, replicas, max, MaxPodsPerNode)
	}
	for j := 1; len(have) < replicas; j++ {
		if slices.Contains(have, j) {
			continue
		}
		name := deployment + "-" + strconv.Itoa(j)
		if err := l.addPodSpec(ctx, PodSpec{Name: name}); err != nil {
			return added, removed, err
		}
		added = append(added, name)
		have = append(have, j)
		sort.Ints(have)
	}
	for len(have) > replicas {
		j := have[len(have)-1]
		name := deployment + "-" + strconv.Itoa(j)
		if err := l.removePod(ctx, name); err != nil {
			return added, removed, err
		}
		removed = append(removed, name)
		have = have[:len(have)-1]
	}
	if len(added) > 0 {
		err = l.waitRoutes(ctx)
	}
	return added, removed, err
}

// replicas returns the numbers N of the pods DEPLOYMENT-N, sorted.
func (s *state) replicas(deployment string) []int {
	var have []int
	for _, p := range s.Pods {
		rest, ok := strings.CutPrefix(p.Name, deployment+"-")
		if !ok {
			continue
		}
		if j, err := strconv.Atoi(rest); err == nil && j > 0 && strconv.Itoa(j) == rest {
			have = append(have, j)
		}
	}
	sort.Ints(have)
	return have
}

// podStatus returns the status row of pod name.
func (l *Lab) podStatus(name string) PodStatus {
	for _, p := range l.Status().Pods {
		if p.Name == name {
			return p
		}
	}
	return PodStatus{}
}

// lockState takes the lab's lock file, so two commands changing one lab
// (two `podnet lab pod add` at once) take turns, and reloads the state,
// which the other may have changed. unlock releases it.
func (l *Lab) lockState() (unlock func(), err error) {
	path := filepath.Join(l.RunDir(), "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock lab %s: %w", l.Name(), err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock lab %s: %w", l.Name(), err)
	}
	st, err := loadState(l.stFile)
	if err != nil {
		f.Close()
		return nil, err
	}
	l.mu.Lock()
	l.st = *st
	l.mu.Unlock()
	return func() { f.Close() }, nil
}
