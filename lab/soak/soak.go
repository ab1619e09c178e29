// Package soak runs a long traffic-and-churn test against a podnet lab
// and judges whether the daemons leak: it builds a lab, keeps traffic
// on every path (pod to pod on one node and across nodes, node to pod,
// pod to the outside through NAT), adds and deletes a pod every second
// on rotating nodes while the default pool's encapsulation is switched
// live between IP-in-IP, VXLAN and plain routing, samples each daemon's
// RSS, goroutines and open fds, and at the end checks IPAM and the pods.
// It backs `podnet lab soak` and `make soak`; docs/soak.md explains the
// rules it judges by.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"podnet/lab"
	"podnet/nodeapi"
)

// Defaults of a soak.
const (
	// DefaultDuration is the churn time of `make soak`.
	DefaultDuration = 20 * time.Minute
	// MinDuration is the shortest soak: below it there are too few
	// samples per quarter and too few encapsulation phases to mean
	// anything.
	MinDuration = 20 * time.Second
	// DefaultNodes: three nodes, so "across nodes" has more than one
	// pair and the churner rotates over more than two daemons.
	DefaultNodes = 3
	// DefaultName is the lab a soak builds.
	DefaultName = "soak"
	// churnLive is how many churned pods live at once: each tick adds one
	// and deletes the oldest beyond this many.
	churnLive = 2
	// churnEvery is the churner's tick.
	churnEvery = time.Second
	// settle is the pause after the churn before the end reading, so
	// the deleted pods' goroutines and the last API requests are gone.
	settle = 5 * time.Second
	// warmup is the pause after the traffic starts before the start
	// reading, so the flows' own goroutines and sockets are counted in it.
	warmup = 5 * time.Second
	// iperfGrace is how long past its planned end an iperf3 client may
	// take to finish and report.
	iperfGrace = 30 * time.Second
)

// Config describes a soak. The zero value is `make soak`: 20 minutes,
// three nodes, lab "soak".
type Config struct {
	// Duration is how long pods are churned while traffic runs. 0 =
	// DefaultDuration; at least MinDuration.
	Duration time.Duration
	// Nodes is the lab's node count, 2..lab.MaxNodes. 0 = DefaultNodes.
	Nodes int
	// Name is the lab's name. "" = DefaultName.
	Name string
	// Binary is the podnet binary the lab runs. "" = this executable.
	Binary string
	// Interval is how often the daemons are sampled during the churn.
	// 0 = Duration/40 within 1s..10s, so even a short run has enough
	// samples per quarter for the RSS rule.
	Interval time.Duration
	// Progress receives a line per step and a status line per minute.
	// nil = none.
	Progress io.Writer
	// ProfileDir, when set, receives each daemon's heap profile and
	// goroutine stacks at the start and end readings
	// (NODE-start.heap.pb.gz, NODE-end.goroutines.txt, ...): the evidence
	// behind a broken rule. It is created if missing. "" = none.
	ProfileDir string
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Duration == 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.Duration < MinDuration {
		return cfg, fmt.Errorf("soak config: Duration %v: must be at least %v", cfg.Duration, MinDuration)
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.Nodes < 2 || cfg.Nodes > lab.MaxNodes {
		return cfg, fmt.Errorf("soak config: Nodes %d: must be 2..%d (cross-node paths need two)", cfg.Nodes, lab.MaxNodes)
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Interval == 0 {
		cfg.Interval = min(max(cfg.Duration/40, time.Second), 10*time.Second)
	}
	if cfg.Interval < 100*time.Millisecond {
		return cfg, fmt.Errorf("soak config: Interval %v: must be at least 100ms", cfg.Interval)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return cfg, fmt.Errorf("soak config: ProfileDir: %w", err)
		}
	}
	return cfg, nil
}

// soak is one run in progress.
type soak struct {
	cfg   Config
	l     *lab.Lab
	start time.Time
	// roles are the stable pods by part (see pickRoles).
	roles roles
	// probes reads every daemon by node name.
	probes map[string]*daemonProbe
	// nodes are the node names in order.
	nodes []string
	// churnMu guards ChurnResult.Errors, which the churner and the
	// encapsulation switcher both append to. Each other field of the
	// ChurnResult has one writer and is read after both have stopped.
	churnMu sync.Mutex
	// churnLeft are the churned pods alive when the churn stopped.
	churnLeft []string
}

// Run builds the lab, soaks it and removes it, also when ctx is
// cancelled (Ctrl-C) or anything fails. The report is returned whenever
// the lab came up; its Failures say whether the soak passed. The error is
// for a soak that could not run (bad config, lab up failed, lab down
// failed).
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &soak{cfg: cfg, start: time.Now()}
	if cfg.ProfileDir != "" {
		s.logf("profiles of the start and end readings go to %s", cfg.ProfileDir)
	}
	s.logf("building lab %s: %d nodes, %d stable pods, IP-in-IP", cfg.Name, cfg.Nodes, 2*cfg.Nodes)
	l, err := lab.Up(ctx, lab.Config{Name: cfg.Name, Nodes: cfg.Nodes, Pods: 2 * cfg.Nodes,
		Encap: lab.EncapIPIP, Binary: cfg.Binary, HTTPServer: lab.HTTPBuiltin})
	if err != nil {
		return nil, fmt.Errorf("soak: lab up: %w", err)
	}
	s.l = l
	defer func() {
		s.logf("removing lab %s", cfg.Name)
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("soak: lab down %s: %w", cfg.Name, derr))
		}
	}()
	rep = &Report{Lab: cfg.Name, Nodes: cfg.Nodes, Duration: cfg.Duration, Interval: cfg.Interval}
	s.run(ctx, rep)
	if ctx.Err() != nil {
		rep.Errors = append(rep.Errors, "interrupted: "+ctx.Err().Error())
	}
	return rep, nil
}

// logf prints a progress line stamped with the time since the start.
func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(s.cfg.Progress, "[%7s] %s\n", time.Since(s.start).Round(time.Second), fmt.Sprintf(format, args...))
}

// roles are the stable pods the flows run between: two on the first
// node (A1, A2), two on the second (B1, B2), one on the last (C1; B2
// when there are only two nodes).
type roles struct {
	a1, a2, b1, b2, c1 lab.PodStatus
	node1, node2       lab.NodeStatus
}

func pickRoles(st lab.Status) (roles, error) {
	var r roles
	if len(st.Nodes) < 2 {
		return r, fmt.Errorf("pick pods: lab has %d nodes", len(st.Nodes))
	}
	on := func(node string) []lab.PodStatus {
		var ps []lab.PodStatus
		for _, p := range st.Pods {
			if p.Node == node {
				ps = append(ps, p)
			}
		}
		return ps
	}
	n1, n2, nl := on(st.Nodes[0].Name), on(st.Nodes[1].Name), on(st.Nodes[len(st.Nodes)-1].Name)
	if len(n1) < 2 || len(n2) < 2 || len(nl) < 1 {
		return r, fmt.Errorf("pick pods: want two pods on each of %s and %s", st.Nodes[0].Name, st.Nodes[1].Name)
	}
	r.a1, r.a2, r.b1, r.b2 = n1[0], n1[1], n2[0], n2[1]
	r.c1 = nl[0]
	if len(st.Nodes) == 2 {
		r.c1 = r.b2
	}
	r.node1, r.node2 = st.Nodes[0], st.Nodes[1]
	return r, nil
}

// run does everything between lab up and lab down.
func (s *soak) run(ctx context.Context, rep *Report) {
	st := s.l.Status()
	var err error
	if s.roles, err = pickRoles(st); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return
	}
	s.probes = map[string]*daemonProbe{}
	for _, n := range st.Nodes {
		s.nodes = append(s.nodes, n.Name)
		s.probes[n.Name] = newDaemonProbe(n.Name, n.PID, n.Socket)
		rep.Daemons = append(rep.Daemons, DaemonSeries{Node: n.Name, PID: n.PID})
	}
	if st.External == nil {
		rep.Errors = append(rep.Errors, "lab has no external host: NAT outgoing is not exercised")
		return
	}
	r := s.roles
	ext := st.External.Address.Addr().String()

	// Traffic on every path, for the whole soak.
	flowCtx, stopFlows := context.WithCancel(ctx)
	defer stopFlows()
	var pings []*pingFlow
	for _, p := range []struct{ name, ns, dst string }{
		{fmt.Sprintf("ping pod→pod same node (%s→%s)", r.a1.Name, r.a2.Name), r.a1.Netns, r.a2.IP.String()},
		{fmt.Sprintf("ping pod→pod across nodes (%s→%s)", r.a1.Name, r.b1.Name), r.a1.Netns, r.b1.IP.String()},
		{fmt.Sprintf("ping node→local pod (%s→%s)", r.node1.Name, r.a1.Name), r.node1.Netns, r.a1.IP.String()},
		{fmt.Sprintf("ping node→remote pod (%s→%s)", r.node1.Name, r.b2.Name), r.node1.Netns, r.b2.IP.String()},
		{fmt.Sprintf("ping pod→external NAT (%s→%s)", r.b2.Name, ext), r.b2.Netns, ext},
	} {
		f, err := startPing(p.name, p.ns, p.dst)
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		pings = append(pings, f)
	}
	defer func() {
		// Stopped and read however run ends, so none outlives the soak.
		for _, f := range pings {
			rep.Flows = append(rep.Flows, f.stop())
		}
	}()
	iperfFor := warmup + s.cfg.Duration
	var iperfs []*iperfFlow
	for i, p := range []struct {
		name     string
		udp      bool
		src, dst lab.PodStatus
	}{
		{fmt.Sprintf("iperf3 TCP %s across nodes (%s→%s)", iperfTCPRate, r.b1.Name, r.a2.Name), false, r.b1, r.a2},
		{fmt.Sprintf("iperf3 UDP %s across nodes (%s→%s)", iperfUDPRate, r.a1.Name, r.c1.Name), true, r.a1, r.c1},
	} {
		f, err := startIperf(ctx, p.name, p.udp, p.src.Netns, p.dst.Netns, p.dst.IP.String(), 5201+i, iperfFor)
		if err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		iperfs = append(iperfs, f)
	}
	iperfEnd := time.Now().Add(iperfFor)
	defer func() {
		for _, f := range iperfs {
			rep.Flows = append(rep.Flows, f.wait(time.Until(iperfEnd)+iperfGrace, ctx.Done()))
		}
	}()
	probes := []*probe{
		newProbe(fmt.Sprintf("pod→pod same node (%s→%s)", r.a2.Name, r.a1.Name), r.a2.Netns, podURL(r.a1.IP), "pod "+r.a1.Name+" "),
		newProbe(fmt.Sprintf("pod→pod across nodes (%s→%s)", r.c1.Name, r.b1.Name), r.c1.Netns, podURL(r.b1.IP), "pod "+r.b1.Name+" "),
		newProbe(fmt.Sprintf("node→remote pod (%s→%s)", r.node2.Name, r.a1.Name), r.node2.Netns, podURL(r.a1.IP), "pod "+r.a1.Name+" "),
		// The external host sees the node's address: NAT outgoing.
		newProbe(fmt.Sprintf("pod→external NAT (%s→%s)", r.a1.Name, ext), r.a1.Netns,
			fmt.Sprintf("http://%s:%d/whoami", ext, lab.ExternalHTTPPort), r.node1.Address.Addr().String()+":"),
	}
	var probeWG sync.WaitGroup
	for _, p := range probes {
		probeWG.Add(1)
		go func() { defer probeWG.Done(); p.run(flowCtx) }()
	}
	defer func() {
		stopFlows()
		probeWG.Wait()
		for _, p := range probes {
			rep.Probes = append(rep.Probes, p.result())
		}
	}()

	s.logf("traffic on every path; start reading in %v", warmup)
	if !sleep(ctx, warmup) {
		return
	}
	s.readAll(rep, func(d *DaemonSeries, smp Sample) { d.Start = smp }, "start")

	// The churn, the encapsulation switches and the sampling.
	churnStop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.churn(ctx, churnStop, &rep.Churn) }()
	go func() { defer wg.Done(); s.sample(ctx, churnStop, rep) }()
	go func() { defer wg.Done(); s.switchEncap(ctx, churnStop, &rep.Churn) }()
	s.logf("churning for %v: a pod added and one removed every %v, sampling every %v", s.cfg.Duration, churnEvery, s.cfg.Interval)
	sleep(ctx, s.cfg.Duration)
	close(churnStop)
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	s.cleanChurn(ctx, &rep.Churn)
	s.logf("churn over: %d pods added, %d removed; end reading in %v", rep.Churn.Added, rep.Churn.Removed, settle)
	if !sleep(ctx, settle) {
		return
	}
	s.readAll(rep, func(d *DaemonSeries, smp Sample) { d.End = smp }, "end")
	rep.End = s.endCheck(ctx)
}

func podURL(ip netip.Addr) string { return "http://" + ip.String() + "/" }

// sleep waits d or until ctx is done; false when ctx ended it.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// readAll takes one reading of every daemon and hands it to set; a
// failed reading at a quiet point is a failure of the soak.
func (s *soak) readAll(rep *Report, set func(*DaemonSeries, Sample), what string) {
	for i := range rep.Daemons {
		d := &rep.Daemons[i]
		smp, err := s.probes[d.Node].read(time.Since(s.start))
		if err != nil {
			d.Errors = append(d.Errors, fmt.Sprintf("%s reading: %v", what, err))
			continue
		}
		set(d, smp)
		s.logf("%s reading %s: RSS %s, heap %s, %d goroutines, %d fds", what, d.Node, mib(smp.RSSKiB), mib(smp.HeapInuseKiB), smp.Goroutines, smp.FDs)
		if s.cfg.ProfileDir != "" {
			if err := s.probes[d.Node].saveProfiles(s.cfg.ProfileDir, what); err != nil {
				d.Errors = append(d.Errors, err.Error())
			}
		}
	}
}

// sample reads every daemon each Interval until stop, and prints a
// status line about once a minute.
func (s *soak) sample(ctx context.Context, stop <-chan struct{}, rep *Report) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		for i := range rep.Daemons {
			d := &rep.Daemons[i]
			smp, err := s.probes[d.Node].read(time.Since(s.start))
			if err != nil {
				d.Errors = append(d.Errors, fmt.Sprintf("reading at %v: %v", time.Since(s.start).Round(time.Second), err))
				continue
			}
			d.Churn = append(d.Churn, smp)
		}
		if time.Since(lastLog) >= time.Minute {
			lastLog = time.Now()
			line := ""
			for _, d := range rep.Daemons {
				if n := len(d.Churn); n > 0 {
					last := d.Churn[n-1]
					line += fmt.Sprintf("; %s rss %s heap %s %dg %dfd", d.Node, mib(last.RSSKiB), mib(last.HeapInuseKiB), last.Goroutines, last.FDs)
				}
			}
			s.logf("status%s", line)
		}
	}
}

// encapPhases are the default pool's modes the soak cycles through; the
// lab starts in the first.
var encapPhases = []struct{ name, patch string }{
	{"ipip", `{"spec":{"ipipMode":"Always","vxlanMode":"Never"}}`},
	{"vxlan", `{"spec":{"ipipMode":"Never","vxlanMode":"Always"}}`},
	{"none", `{"spec":{"ipipMode":"Never","vxlanMode":"Never"}}`},
}

// phaseCount is how many encapsulation phases a soak of d has: each
// encapsulation twice in a long soak, once in a short one.
func phaseCount(d time.Duration) int {
	if d >= 3*time.Minute {
		return 2 * len(encapPhases)
	}
	return len(encapPhases)
}

// switchEncap patches the default pool into the next encapsulation at
// equal intervals of the churn, while traffic and churn go on.
func (s *soak) switchEncap(ctx context.Context, stop <-chan struct{}, c *ChurnResult) {
	n := phaseCount(s.cfg.Duration)
	every := s.cfg.Duration / time.Duration(n)
	started := time.Now()
	c.Phases = append(c.Phases, encapPhases[0].name+" 0s")
	for i := 1; i < n; i++ {
		t := time.NewTimer(time.Until(started.Add(time.Duration(i) * every)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		ph := encapPhases[i%len(encapPhases)]
		out, err := s.l.Output(ctx, "fabric", "podnet", "patch", "ippool", "default-ipv4-ippool", "-p", ph.patch)
		if err != nil {
			s.churnErrorf(c, "switch to %s: %v: %s", ph.name, err, tail(string(out), 200))
			continue
		}
		c.EncapSwitches++
		c.Phases = append(c.Phases, fmt.Sprintf("%s %v", ph.name, time.Since(started).Round(time.Second)))
		s.logf("default pool switched to %s", ph.name)
	}
}

// maxChurnErrors is how many churn errors the report quotes.
const maxChurnErrors = 10

// churnErrorf records a churn or switch failure in c.
func (s *soak) churnErrorf(c *ChurnResult, format string, args ...any) {
	s.churnMu.Lock()
	defer s.churnMu.Unlock()
	if len(c.Errors) < maxChurnErrors {
		c.Errors = append(c.Errors, fmt.Sprintf(format, args...))
	}
}

// churnPrefix names the churned pods: churn-1, churn-2, ...
const churnPrefix = "churn-"

// churn adds a pod every tick on the next node in turn, checks that its
// address is no other live pod's and that it answers HTTP from a stable
// pod on another node, and deletes the oldest churned pod beyond
// churnLive. A tick that finds the previous one still busy is skipped
// (the ticker drops it), so the report's rate is what the cluster did.
func (s *soak) churn(ctx context.Context, stop <-chan struct{}, c *ChurnResult) {
	t := time.NewTicker(churnEvery)
	defer t.Stop()
	var live []string
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			s.churnLeft = live
			return
		case <-t.C:
		}
		node := s.nodes[(i-1)%len(s.nodes)]
		name := fmt.Sprintf("%s%d", churnPrefix, i)
		t0 := time.Now()
		p, err := s.l.AddPod(ctx, lab.PodSpec{Name: name, Node: node})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.AddFailed++
			s.churnErrorf(c, "add %s on %s: %v", name, node, err)
		} else {
			took := time.Since(t0)
			c.Added++
			c.AddTimes = append(c.AddTimes, took)
			live = append(live, name)
			if holders := s.holders(p.IP); len(holders) > 1 {
				c.Duplicates = append(c.Duplicates, fmt.Sprintf("%s given to %s while held by %v", p.IP, name, holders))
			}
			checker := s.roles.a1
			if node == s.roles.node1.Name {
				checker = s.roles.b1
			}
			if err := httpGetOnce(ctx, checker.Netns, podURL(p.IP)); err != nil && ctx.Err() == nil {
				c.Unreachable++
				s.churnErrorf(c, "%s (%s on %s) from %s: %v", name, p.IP, node, checker.Name, err)
			}
		}
		for len(live) > churnLive {
			if err := s.l.DeletePod(ctx, live[0]); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.DelFailed++
				s.churnErrorf(c, "delete %s: %v", live[0], err)
			} else {
				c.Removed++
			}
			live = live[1:]
		}
	}
}

// holders lists the lab's pods with address ip.
func (s *soak) holders(ip netip.Addr) []string {
	var names []string
	for _, p := range s.l.Status().Pods {
		if p.IP == ip {
			names = append(names, p.Name)
		}
	}
	return names
}

// cleanChurn deletes the churned pods still alive, so the end reading
// sees the same pods as the start one.
func (s *soak) cleanChurn(ctx context.Context, c *ChurnResult) {
	for _, name := range s.churnLeft {
		if err := s.l.DeletePod(ctx, name); err != nil {
			c.DelFailed++
			s.churnErrorf(c, "delete %s after the churn: %v", name, err)
			continue
		}
		c.Removed++
	}
	s.churnLeft = nil
}

// endCheck asks IPAM for leaks and compares the daemons' pods with the
// lab's.
func (s *soak) endCheck(ctx context.Context) EndCheck {
	var e EndCheck
	out, err := s.l.Output(ctx, "fabric", "podnet", "ipam", "check")
	e.IPAMCheck = string(out)
	if err != nil {
		e.IPAMErr = fmt.Sprintf("%v: %s", err, tail(string(out), 400))
	}
	st := s.l.Status()
	var daemonPods []nodeapi.PodInfo
	for _, n := range st.Nodes {
		pods, err := nodeapi.NewClient(n.Socket).Pods()
		if err != nil {
			e.PodProblems = append(e.PodProblems, fmt.Sprintf("list pods of %s: %v", n.Name, err))
			continue
		}
		daemonPods = append(daemonPods, pods...)
	}
	e.Pods = len(daemonPods)
	e.PodProblems = append(e.PodProblems, comparePods(st.Pods, daemonPods)...)
	return e
}

// comparePods lists every disagreement between the pods the lab made and
// those the daemons report: missing, extra, on another node or address,
// detached, and any address on two pods.
func comparePods(want []lab.PodStatus, got []nodeapi.PodInfo) []string {
	var problems []string
	byName := map[string]nodeapi.PodInfo{}
	byIP := map[string][]string{}
	for _, p := range got {
		byName[p.Name] = p
		byIP[p.IP] = append(byIP[p.IP], p.Name)
		if !p.Attached {
			problems = append(problems, fmt.Sprintf("%s on %s is detached: %s", p.Name, p.Node, p.Error))
		}
	}
	for _, w := range want {
		g, ok := byName[w.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s (%s on %s) is on no daemon", w.Name, w.IP, w.Node))
		case g.Node != w.Node || g.IP != w.IP.String():
			problems = append(problems, fmt.Sprintf("%s: lab has %s on %s, daemon %s on %s", w.Name, w.IP, w.Node, g.IP, g.Node))
		}
		delete(byName, w.Name)
	}
	for name, g := range byName {
		problems = append(problems, fmt.Sprintf("%s (%s on %s) is on a daemon but not in the lab", name, g.IP, g.Node))
	}
	for ip, names := range byIP {
		if len(names) > 1 {
			slices.Sort(names)
			problems = append(problems, fmt.Sprintf("%s is held by %v", ip, names))
		}
	}
	slices.Sort(problems)
	return problems
}
