package soak

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/nodeapi"
)

// rss makes churn samples with the given RSS values.
func rss(kib ...int64) []Sample {
	s := make([]Sample, len(kib))
	for i, k := range kib {
		s[i] = Sample{At: time.Duration(i) * time.Second, RSSKiB: k}
	}
	return s
}

func TestRSSGrowth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []Sample
		want    float64
		ok      bool
	}{
		{"too few", rss(1, 2, 3, 4, 5, 6, 7), 0, false},
		{"flat", rss(100, 100, 100, 100, 100, 100, 100, 100), 0, true},
		// Quarters of 8: [50 60] [100 100] [..] [110 130]: medians 100, 120.
		{"warm-up ignored", rss(50, 60, 100, 100, 105, 105, 110, 130), 0.2, true},
		// A GC peak in the last quarter is outvoted by the median.
		{"sawtooth", rss(100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 400), 0, true},
		{"leak", rss(100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210), (200 - 140) / 140.0, true},
		{"shrink", rss(100, 100, 200, 200, 150, 150, 100, 100), -0.5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := RSSGrowth(tc.samples)
			if ok != tc.ok || (ok && (got < tc.want-1e-9 || got > tc.want+1e-9)) {
				t.Errorf("RSSGrowth = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// passing is a report that breaks no rule; each case below breaks one.
func passing() Report {
	flat := rss(100, 100, 100, 100, 100, 100, 100, 100)
	return Report{
		Lab: "soak", Nodes: 2, Duration: time.Minute, Interval: time.Second,
		Daemons: []DaemonSeries{
			{Node: "worker1", PID: 10, Start: Sample{RSSKiB: 100, Goroutines: 70, FDs: 30}, End: Sample{RSSKiB: 100, Goroutines: 90, FDs: 40}, Churn: flat},
			{Node: "worker2", PID: 11, Start: Sample{RSSKiB: 100, Goroutines: 70, FDs: 30}, End: Sample{RSSKiB: 100, Goroutines: 60, FDs: 30}, Churn: flat},
		},
		Flows: []FlowResult{
			{Name: "ping a", Kind: "ping", Sent: 1000, Received: 990, LossPct: 1.0},
			{Name: "iperf tcp", Kind: "iperf3-tcp", Detail: "20 Mbit/s"},
			{Name: "iperf udp", Kind: "iperf3-udp", Sent: 100, Received: 100},
		},
		Probes: []ProbeResult{{Name: "http a", OK: 99, Failed: 1}},
		Churn:  ChurnResult{Added: 60, Removed: 60, AddTimes: []time.Duration{time.Second}},
		End:    EndCheck{Pods: 4},
	}
}

func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(*Report)
		rule    Rule
		want    string // "" = passes
	}{
		{"passing at every bound", func(*Report) {}, "", ""},
		{"goroutines grew", func(r *Report) { r.Daemons[0].End.Goroutines = 91 }, RuleGoroutines, "daemon worker1: goroutines 70 at the start, 91 at the end (bound start+20)"},
		{"fds grew", func(r *Report) { r.Daemons[1].End.FDs = 47 }, RuleFDs, "daemon worker2: open fds 30 at the start, 47 at the end (bound start+16)"},
		{"no end reading", func(r *Report) { r.Daemons[1].End = Sample{} }, RuleHarness, "daemon worker2: no start or end reading of goroutines"},
		{"rss grew", func(r *Report) { r.Daemons[0].Churn = rss(100, 100, 100, 100, 120, 120, 126, 126) },
			RuleRSS, "daemon worker1: RSS grew 26% from the second to the last quarter (bound 25%)"},
		{"rss unjudged", func(r *Report) { r.Daemons[0].Churn = rss(100, 100) }, RuleRSS, "daemon worker1: RSS not judged: 2 samples, need 8"},
		{"reading failed", func(r *Report) { r.Daemons[0].Errors = []string{"end reading: gone"} }, RuleHarness, "daemon worker1: end reading: gone"},
		{"ping loss", func(r *Report) { r.Flows[0].Received, r.Flows[0].LossPct = 989, 1.1 }, RuleLoss, "flow ping a: 1.10% lost (bound 1.0%)"},
		{"ping answered nothing", func(r *Report) { r.Flows[0] = FlowResult{Name: "ping a", Kind: "ping", Sent: 9} }, RuleFlow, "flow ping a: nothing came back (9 sent)"},
		{"iperf died", func(r *Report) { r.Flows[1].Err = "iperf3: the server has terminated" }, RuleFlow, "flow iperf tcp: iperf3: the server has terminated"},
		{"http failures", func(r *Report) { r.Probes[0].Failed, r.Probes[0].LastErr = 2, "timeout" },
			RuleLoss, "http http a: 2 of 101 requests failed (bound 1.0%; last: timeout)"},
		{"http never answered", func(r *Report) { r.Probes[0] = ProbeResult{Name: "http a", Failed: 3, LastErr: "refused"} }, RuleFlow,
			"http http a: no request answered (3 failed; last: refused)"},
		{"no churn", func(r *Report) { r.Churn.Added = 0 }, RuleChurn, "churn: no pod was added"},
		{"add failed", func(r *Report) { r.Churn.AddFailed = 1 }, RuleChurn, "churn: 1 pod adds and 0 deletes failed"},
		{"unreachable", func(r *Report) { r.Churn.Unreachable = 2 }, RuleChurn, "churn: 2 added pods did not answer HTTP"},
		{"duplicate", func(r *Report) {
			r.Churn.Duplicates = []string{"192.168.1.5 given to churn-9 while held by [test-1 churn-9]"}
		},
			RuleChurn, "churn: duplicate address: 192.168.1.5 given to churn-9 while held by [test-1 churn-9]"},
		{"leak", func(r *Report) { r.End.IPAMErr = "exit status 3: 1 leaked" }, RuleIPAM, "ipam check: exit status 3: 1 leaked"},
		{"pods", func(r *Report) {
			r.End.PodProblems = []string{"churn-3 (192.168.1.9 on worker1) is on a daemon but not in the lab"}
		},
			RulePods, "pods: churn-3 (192.168.1.9 on worker1) is on a daemon but not in the lab"},
		{"harness", func(r *Report) { r.Errors = []string{"interrupted: context canceled"} }, RuleHarness, "interrupted: context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := passing()
			tc.breakIt(&r)
			got := r.Failures()
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("Failures() = %q, want none", got)
				}
				return
			}
			if len(got) != 1 || got[0] != (Failure{tc.rule, tc.want}) {
				t.Fatalf("Failures() = %+v, want [{%s %q}]", got, tc.rule, tc.want)
			}
		})
	}
}

func TestWriteVerdict(t *testing.T) {
	r := passing()
	var b bytes.Buffer
	r.Write(&b)
	out := b.String()
	for _, want := range []string{"\nPASS: ", "worker1", "ping a", "iperf tcp", "http a", "churn: 60 pods added, 60 removed (1.00 adds/s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	r.Churn.Unreachable = 1
	b.Reset()
	r.Write(&b)
	if out := b.String(); !strings.Contains(out, "\nFAIL: 1 problems\n  churn: 1 added pods did not answer HTTP\n") {
		t.Errorf("failing report:\n%s", out)
	}
}

func TestParsers(t *testing.T) {
	if n, err := parseVmRSS(strings.NewReader("Name:\tpodnet\nVmPeak:\t 9 kB\nVmRSS:\t   73456 kB\nThreads: 9\n")); err != nil || n != 73456 {
		t.Errorf("parseVmRSS = %d, %v; want 73456", n, err)
	}
	if _, err := parseVmRSS(strings.NewReader("Name:\tzombie\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
	if n, err := parseGoroutineTotal(strings.NewReader("goroutine profile: total 73\n5 @ 0x1\n")); err != nil || n != 73 {
		t.Errorf("parseGoroutineTotal = %d, %v; want 73", n, err)
	}
	if n, err := parseHeapInuse("heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# HeapIdle = 6160384\n# HeapInuse = 101089280\n"); err != nil || n != 98720 {
		t.Errorf("parseHeapInuse = %d, %v; want 98720", n, err)
	}
	if _, err := parseHeapInuse("heap profile: 0\n"); err == nil {
		t.Error("parseHeapInuse without MemStats: no error")
	}
	if _, err := parseGoroutineTotal(strings.NewReader("<html>404</html>\n")); err == nil {
		t.Error("parseGoroutineTotal of a wrong page: no error")
	}
	ping := "64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.1 ms\n\n--- 10.0.0.1 ping statistics ---\n" +
		"6012 packets transmitted, 6009 received, +2 errors, 0.0499% packet loss, time 1202s\n"
	if s, r, err := parsePingSummary(ping); err != nil || s != 6012 || r != 6009 {
		t.Errorf("parsePingSummary = %d, %d, %v; want 6012, 6009", s, r, err)
	}
	if _, _, err := parsePingSummary("ping: connect: Network is unreachable\n"); err == nil {
		t.Error("parsePingSummary without a summary: no error")
	}
	udp := `{"start":{},"end":{"sum":{"bits_per_second":5000000,"packets":1000,"lost_packets":3,"lost_percent":0.3}}}`
	if r, err := parseIperf([]byte("warning: x\n" + udp)); err != nil || r.End.Sum.LostPackets != 3 || r.End.Sum.Packets != 1000 {
		t.Errorf("parseIperf UDP = %+v, %v", r.End.Sum, err)
	}
	if r, err := parseIperf([]byte(`{"error":"unable to connect to server: Connection refused"}`)); err != nil || r.Error == "" {
		t.Errorf("parseIperf error report = %+v, %v", r, err)
	}
}

func TestComparePods(t *testing.T) {
	a := netip.MustParseAddr
	want := []lab.PodStatus{
		{Name: "test-1", Node: "worker1", IP: a("192.168.1.1")},
		{Name: "test-2", Node: "worker2", IP: a("192.168.2.1")},
		{Name: "test-3", Node: "worker1", IP: a("192.168.1.2")},
	}
	got := []nodeapi.PodInfo{
		{Name: "test-1", Node: "worker1", IP: "192.168.1.1", Attached: true},
		{Name: "test-2", Node: "worker2", IP: "192.168.2.9", Attached: true},
		{Name: "churn-7", Node: "worker1", IP: "192.168.1.1", Attached: false, Error: "tap gone"},
	}
	p := comparePods(want, got)
	wantP := []string{
		"192.168.1.1 is held by [churn-7 test-1]",
		"churn-7 (192.168.1.1 on worker1) is on a daemon but not in the lab",
		"churn-7 on worker1 is detached: tap gone",
		"test-2: lab has 192.168.2.1 on worker2, daemon 192.168.2.9 on worker2",
		"test-3 (192.168.1.2 on worker1) is on no daemon",
	}
	if !slices.Equal(p, wantP) {
		t.Errorf("comparePods =\n%s\nwant\n%s", strings.Join(p, "\n"), strings.Join(wantP, "\n"))
	}
	if p := comparePods(want[:1], got[:1]); len(p) != 0 {
		t.Errorf("comparePods of equal sets = %q", p)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil || c.Duration != 20*time.Minute || c.Nodes != 3 || c.Name != "soak" || c.Interval != 10*time.Second {
		t.Errorf("defaults = %+v, %v", c, err)
	}
	if c, _ := (Config{Duration: time.Minute}).withDefaults(); c.Interval != 1500*time.Millisecond {
		t.Errorf("1m soak samples every %v, want 1.5s", c.Interval)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Duration: 10 * time.Second}, "Duration 10s: must be at least 20s"},
		{Config{Nodes: 1}, "Nodes 1: must be 2..244"},
		{Config{Interval: time.Millisecond}, "Interval 1ms: must be at least 100ms"},
	} {
		if _, err := tc.cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("withDefaults(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if phaseCount(20*time.Minute) != 6 || phaseCount(time.Minute) != 3 {
		t.Errorf("phaseCount: 20m %d, 1m %d; want 6, 3", phaseCount(20*time.Minute), phaseCount(time.Minute))
	}
}
