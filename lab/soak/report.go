package soak

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The bounds a soak is judged by. Each says why it is where it is; a run
// passes only when every one holds.
const (
	// GoroutineSlack: the daemon's goroutines at the end may exceed those
	// at the start by at most this many. Both counts are taken at quiet
	// points with the same pods and flows (start: traffic running, no
	// churn yet; end: churn stopped and its pods deleted), so a goroutine
	// left behind per added pod shows up as hundreds; 20 leaves room for
	// the ones that come and go on their own (an API request being served,
	// the datastore client's and BGP's keepalive and retry goroutines).
	GoroutineSlack = 20
	// FDSlack is the same rule for the daemon's open file descriptors (a
	// TAP or socket leaked per pod would add one per added pod). It leaves
	// room for an encapsulation the churn switched away from, whose
	// descriptors stay open for its grace period: VXLAN's are 11 (its
	// socket, 8 sender sockets, the superframe TAP and the /proc file its
	// forwarding watch reads).
	FDSlack = 16
	// RSSGrowthMax: the median RSS of the last quarter of the churn
	// samples may exceed the median of the second quarter by at most this
	// fraction. The first quarter is skipped because the heap is still
	// growing to its working size then; medians ignore the garbage
	// collector's sawtooth; a leak per pod grows with the number of pods
	// added, so it lifts the last quarter well above the second, while
	// Go's heap target (GOGC=100: up to twice the live heap) moves a
	// steady daemon's RSS by less than this.
	RSSGrowthMax = 0.25
	// MinRSSSamples is the fewest churn samples the RSS rule is judged
	// on: two per quarter. Fewer fails the run rather than passing it
	// unjudged.
	MinRSSSamples = 8
	// MaxLossPct bounds each stable ping flow's loss (and iperf3 UDP's)
	// over the whole run: the encapsulation switches reprogram every
	// node's routes and tunnel addresses, which may drop the few packets
	// in flight at that instant; anything more is a real failure.
	MaxLossPct = 1.0
	// MaxProbeFailPct bounds each HTTP probe path's failed requests, for
	// the same reason (a request is a new TCP connection every time).
	MaxProbeFailPct = 1.0
)

// Sample is one reading of a daemon's resources.
type Sample struct {
	// At is the time since the soak started.
	At time.Duration
	// RSSKiB is VmRSS from /proc/PID/status.
	RSSKiB int64
	// Goroutines is the total of the daemon's goroutine profile.
	Goroutines int
	// FDs is the number of entries in /proc/PID/fd.
	FDs int
	// HeapInuseKiB is the Go heap's in-use spans (runtime.MemStats
	// HeapInuse): not judged, shown beside RSS to tell a growing heap
	// from memory the runtime keeps.
	HeapInuseKiB int64
}

// DaemonSeries is what was read from one node's daemon.
type DaemonSeries struct {
	Node string
	PID  int
	// Start is read after the traffic started and before the churn;
	// End after the churn stopped and its pods were deleted. Both see
	// the same pods and flows.
	Start, End Sample
	// Churn are the periodic samples taken while pods came and went.
	Churn []Sample
	// Errors are failed readings (the daemon gone, its API silent).
	Errors []string
}

// FlowResult is one long-running flow: a ping or an iperf3 run.
type FlowResult struct {
	// Name says what it measures: "ping pod→pod same node (test-1→test-4)".
	Name string
	// Kind is "ping", "iperf3-tcp" or "iperf3-udp".
	Kind string
	// Sent and Received count echo requests and replies (ping) or
	// datagrams (iperf3 UDP); zero for iperf3 TCP.
	Sent, Received int
	// LossPct is ping's or iperf3 UDP's packet loss.
	LossPct float64
	// Detail is a short human summary (rate, retransmits).
	Detail string
	// Err is set when the flow did not run to its end: the tool exited
	// non-zero or its output could not be read.
	Err string
}

// ProbeResult counts one path's periodic HTTP requests.
type ProbeResult struct {
	Name   string
	OK     int
	Failed int
	// LastErr is the most recent failure, for the report.
	LastErr string
}

// ChurnResult is what the churner did.
type ChurnResult struct {
	Added, Removed int
	// AddFailed and DelFailed count pod add/del calls that failed.
	AddFailed, DelFailed int
	// Unreachable counts added pods that did not answer HTTP from a
	// stable pod right after their add returned.
	Unreachable int
	// Duplicates lists every address handed to a new pod while another
	// live pod held it.
	Duplicates []string
	// AddTimes are how long each successful add took (pod ready and
	// routed on every node).
	AddTimes []time.Duration
	// Errors are the first few failures, verbatim.
	Errors []string
	// EncapSwitches counts the pool patches that changed encapsulation;
	// Phases names them in order ("ipip 0s", "vxlan 3m20s", ...).
	EncapSwitches int
	Phases        []string
}

// EndCheck is the state of the cluster after the soak.
type EndCheck struct {
	// IPAMCheck is `podnet ipam check`'s output; IPAMErr is set when it
	// did not exit 0.
	IPAMCheck string
	IPAMErr   string
	// PodProblems lists disagreements between the lab's pods and what
	// the daemons report: a missing or extra pod, an address on two pods.
	PodProblems []string
	// Pods is how many pods the daemons reported at the end.
	Pods int
}

// Report is a whole soak's outcome.
type Report struct {
	Lab      string
	Nodes    int
	Duration time.Duration
	// Interval is the sampling period.
	Interval time.Duration
	Daemons  []DaemonSeries
	Flows    []FlowResult
	Probes   []ProbeResult
	Churn    ChurnResult
	End      EndCheck
	// Errors are failures of the harness itself (a flow that could not
	// start, a sample that could not be taken at a quiet point).
	Errors []string
}

// RSSGrowth returns the growth of the median of the last quarter of
// samples over the median of the second quarter (0.10 = 10 %), and false
// when there are fewer than MinRSSSamples.
func RSSGrowth(samples []Sample) (float64, bool) {
	n := len(samples)
	if n < MinRSSSamples {
		return 0, false
	}
	q := n / 4
	second := rssMedian(samples[q : 2*q])
	last := rssMedian(samples[n-q:])
	if second <= 0 {
		return 0, false
	}
	return float64(last-second) / float64(second), true
}

func rssMedian(s []Sample) int64 {
	v := make([]int64, len(s))
	for i, x := range s {
		v[i] = x.RSSKiB
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Rule names the kind of rule a Failure broke.
type Rule string

// The rules of a soak.
const (
	// RuleGoroutines, RuleFDs and RuleRSS: a daemon grew.
	RuleGoroutines Rule = "goroutines"
	RuleFDs        Rule = "fds"
	RuleRSS        Rule = "rss"
	// RuleLoss: a flow lost more than MaxLossPct, or a path's HTTP
	// requests failed more than MaxProbeFailPct.
	RuleLoss Rule = "loss"
	// RuleFlow: a flow did not run to its end, or carried nothing.
	RuleFlow Rule = "flow"
	// RuleChurn: a pod add or delete failed, a new pod did not answer,
	// or an address was handed out twice.
	RuleChurn Rule = "churn"
	// RuleIPAM and RulePods: the end checks.
	RuleIPAM Rule = "ipam"
	RulePods Rule = "pods"
	// RuleHarness: a reading failed, or the soak was interrupted.
	RuleHarness Rule = "harness"
)

// Failure is one broken rule.
type Failure struct {
	Rule Rule
	Msg  string
}

func (f Failure) String() string { return f.Msg }

// Failures returns every broken rule; none means the soak passed.
func (r *Report) Failures() []Failure {
	var f []Failure
	add := func(rule Rule, format string, args ...any) {
		f = append(f, Failure{rule, fmt.Sprintf(format, args...)})
	}
	for _, d := range r.Daemons {
		f = append(f, d.failures()...)
	}
	for _, fl := range r.Flows {
		switch {
		case fl.Err != "":
			add(RuleFlow, "flow %s: %s", fl.Name, fl.Err)
		case fl.Kind != "iperf3-tcp" && fl.Received == 0:
			add(RuleFlow, "flow %s: nothing came back (%d sent)", fl.Name, fl.Sent)
		case fl.LossPct > MaxLossPct:
			add(RuleLoss, "flow %s: %.2f%% lost (bound %.1f%%)", fl.Name, fl.LossPct, MaxLossPct)
		}
	}
	for _, p := range r.Probes {
		total := p.OK + p.Failed
		switch {
		case p.OK == 0:
			add(RuleFlow, "http %s: no request answered (%d failed; last: %s)", p.Name, p.Failed, p.LastErr)
		case pct(p.Failed, total) > MaxProbeFailPct:
			add(RuleLoss, "http %s: %d of %d requests failed (bound %.1f%%; last: %s)", p.Name, p.Failed, total, MaxProbeFailPct, p.LastErr)
		}
	}
	c := r.Churn
	if c.Added == 0 {
		add(RuleChurn, "churn: no pod was added")
	}
	if c.AddFailed > 0 || c.DelFailed > 0 {
		add(RuleChurn, "churn: %d pod adds and %d deletes failed", c.AddFailed, c.DelFailed)
	}
	if c.Unreachable > 0 {
		add(RuleChurn, "churn: %d added pods did not answer HTTP", c.Unreachable)
	}
	for _, d := range c.Duplicates {
		add(RuleChurn, "churn: duplicate address: %s", d)
	}
	if r.End.IPAMErr != "" {
		add(RuleIPAM, "ipam check: %s", r.End.IPAMErr)
	}
	for _, p := range r.End.PodProblems {
		add(RulePods, "pods: %s", p)
	}
	for _, e := range r.Errors {
		add(RuleHarness, "%s", e)
	}
	return f
}

// failures applies the goroutine, fd and RSS rules to one daemon.
func (d DaemonSeries) failures() []Failure {
	var f []Failure
	add := func(rule Rule, format string, args ...any) {
		f = append(f, Failure{rule, fmt.Sprintf("daemon %s: ", d.Node) + fmt.Sprintf(format, args...)})
	}
	for _, e := range d.Errors {
		add(RuleHarness, "%s", e)
	}
	if d.Start.Goroutines == 0 || d.End.Goroutines == 0 {
		add(RuleHarness, "no start or end reading of goroutines")
		return f
	}
	if d.End.Goroutines > d.Start.Goroutines+GoroutineSlack {
		add(RuleGoroutines, "goroutines %d at the start, %d at the end (bound start+%d)", d.Start.Goroutines, d.End.Goroutines, GoroutineSlack)
	}
	if d.End.FDs > d.Start.FDs+FDSlack {
		add(RuleFDs, "open fds %d at the start, %d at the end (bound start+%d)", d.Start.FDs, d.End.FDs, FDSlack)
	}
	g, ok := RSSGrowth(d.Churn)
	switch {
	case !ok:
		add(RuleRSS, "RSS not judged: %d samples, need %d", len(d.Churn), MinRSSSamples)
	case g > RSSGrowthMax:
		add(RuleRSS, "RSS grew %.0f%% from the second to the last quarter (bound %.0f%%)", 100*g, 100*RSSGrowthMax)
	}
	return f
}

func pct(part, total int) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(part) / float64(total)
}

// maxOf returns the largest reading of field over start, churn and end.
func (d DaemonSeries) maxOf(field func(Sample) int64) int64 {
	m := max(field(d.Start), field(d.End))
	for _, s := range d.Churn {
		m = max(m, field(s))
	}
	return m
}

// Write prints the summary tables and the verdict.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "soak of lab %s: %d nodes, %v of churn, a sample every %v\n\n", r.Lab, r.Nodes, r.Duration, r.Interval)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DAEMON\tPID\tRSS START\tRSS END\tRSS MAX\tRSS GROWTH Q2→Q4\tHEAP START\tEND\tGOROUTINES START\tEND\tMAX\tFDS START\tEND\tMAX")
	for _, d := range r.Daemons {
		growth := "n/a"
		if g, ok := RSSGrowth(d.Churn); ok {
			growth = fmt.Sprintf("%+.1f%%", 100*g)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", d.Node, d.PID,
			mib(d.Start.RSSKiB), mib(d.End.RSSKiB), mib(d.maxOf(func(s Sample) int64 { return s.RSSKiB })), growth,
			mib(d.Start.HeapInuseKiB), mib(d.End.HeapInuseKiB),
			d.Start.Goroutines, d.End.Goroutines, d.maxOf(func(s Sample) int64 { return int64(s.Goroutines) }),
			d.Start.FDs, d.End.FDs, d.maxOf(func(s Sample) int64 { return int64(s.FDs) }))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "FLOW\tSENT\tRECEIVED\tLOSS\tDETAIL")
	for _, fl := range r.Flows {
		detail := fl.Detail
		if fl.Err != "" {
			detail = "FAILED: " + fl.Err
		}
		if fl.Kind == "iperf3-tcp" {
			// TCP retransmits what it loses: its count is in detail.
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", fl.Name, detail)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f%%\t%s\n", fl.Name, fl.Sent, fl.Received, fl.LossPct, detail)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "HTTP PROBE\tOK\tFAILED")
	for _, p := range r.Probes {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", p.Name, p.OK, p.Failed)
	}
	tw.Flush()
	c := r.Churn
	fmt.Fprintf(w, "\nchurn: %d pods added, %d removed (%.2f adds/s); %d adds and %d deletes failed; %d added pods unreachable; %d duplicate addresses\n",
		c.Added, c.Removed, float64(c.Added)/max(r.Duration.Seconds(), 1), c.AddFailed, c.DelFailed, c.Unreachable, len(c.Duplicates))
	if len(c.AddTimes) > 0 {
		t := slices.Clone(c.AddTimes)
		slices.Sort(t)
		fmt.Fprintf(w, "pod add (ready and routed everywhere): median %v, p95 %v, max %v\n",
			t[len(t)/2].Round(time.Millisecond), t[len(t)*95/100].Round(time.Millisecond), t[len(t)-1].Round(time.Millisecond))
	}
	fmt.Fprintf(w, "encapsulation: %d live switches: %s\n", c.EncapSwitches, strings.Join(c.Phases, ", "))
	for _, e := range c.Errors {
		fmt.Fprintf(w, "  churn error: %s\n", e)
	}
	ipam := "clean"
	if r.End.IPAMErr != "" {
		ipam = "FAILED: " + r.End.IPAMErr
	}
	fmt.Fprintf(w, "end: %d pods on the daemons, %d problems; ipam check %s\n", r.End.Pods, len(r.End.PodProblems), ipam)
	fails := r.Failures()
	if len(fails) == 0 {
		fmt.Fprintf(w, "\nPASS: goroutines ≤ start+%d, fds ≤ start+%d, RSS Q2→Q4 ≤ %.0f%%, loss ≤ %.1f%%, no leak, no duplicate\n",
			GoroutineSlack, FDSlack, 100*RSSGrowthMax, MaxLossPct)
		return
	}
	fmt.Fprintf(w, "\nFAIL: %d problems\n", len(fails))
	for _, f := range fails {
		fmt.Fprintf(w, "  %s\n", f)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1fMiB", float64(kib)/1024) }
