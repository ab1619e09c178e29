package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
	"podnet/lab/labtest"
)

// testPrefix is a unique lab prefix per test, so that tests never meet
// a real bench run's labs or each other's.
func testPrefix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 2)
	rand.Read(b)
	p := "t" + hex.EncodeToString(b)
	t.Cleanup(func() {
		// The suite tears down what it built; this catches what a
		// failed or interrupted run left.
		for _, name := range LabNames(p) {
			lab.Down(name)
		}
		for _, ns := range []string{p + "-vetha", p + "-vethb", p + "-probe"} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	return p
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"iperf3", "ping", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

// TestSuiteReportMatchesSchema runs the suite for real on two same-node
// paths, the kernel veth pair and podnet with TAP offload, two rounds
// each, and checks the report against schema.json, its figures and
// ratios, and the charts drawn from it.
func TestSuiteReportMatchesSchema(t *testing.T) {
	needRoot(t)
	var progress bytes.Buffer
	cfg := Config{Binary: labtest.Binary(t), Scenarios: []string{ScenarioSameNode}, LabPrefix: testPrefix(t),
		Paths: regexp.MustCompile(`^(kernel veth pair|podnet TAP offload \(TSO\))$`), Quick: true, Rounds: 2, Seconds: 1,
		Payloads: []int{18}, Progress: &progress, Command: "go test"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	t.Logf("progress:\n%s", progress.String())
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(t, b); err != nil {
		t.Fatalf("report does not match schema.json: %v\n%s", err, b)
	}
	if len(rep.Paths) != 2 {
		t.Fatalf("%d paths, want 2", len(rep.Paths))
	}
	m := rep.Meta
	if m.Kernel == "" || m.CPUModel == "" || m.CPUs < 1 || m.Rounds != 2 || m.Commit == "" {
		t.Errorf("meta incomplete: %+v", m)
	}
	for _, p := range rep.Paths {
		if len(p.Errors) > 0 {
			t.Errorf("%s: errors %v", p.Name, p.Errors)
		}
		if len(p.TCP) != 1 || len(p.TCP[0].ThroughputGbitPerS.Rounds) != 2 || p.TCP[0].ThroughputGbitPerS.Median <= 0 {
			t.Errorf("%s: TCP %+v, want one stream count with 2 positive rounds", p.Name, p.TCP)
		}
		if p.Latency == nil || p.Latency.PingRttUs.P50.Median <= 0 || p.Latency.TCPRequestResponseUs.P50.Median <= 0 ||
			p.Latency.TCPRequestResponseUs.P99.Median < p.Latency.TCPRequestResponseUs.P50.Median {
			t.Errorf("%s: latency %+v", p.Name, p.Latency)
		}
		if len(p.UDP) != 1 || p.UDP[0].RatePps.Median <= 0 || p.UDP[0].LossPercent.Max >= 1 {
			t.Errorf("%s: UDP %+v, want a rate under 1 %% loss", p.Name, p.UDP)
		}
		if p.PodMTUBytes == 0 {
			t.Errorf("%s: pod MTU not read", p.Name)
		}
	}
	k, pn := rep.Paths[0], rep.Paths[1]
	if k.Kind != KindKernel || k.CPUSource != CPUMachine || k.UDP[0].Iperf3RatePps == nil {
		t.Errorf("kernel path %s: kind %s, cpu %s, iperf3 %v", k.Name, k.Kind, k.CPUSource, k.UDP[0].Iperf3RatePps)
	}
	// How the generator compares with iperf3 is a measurement, reported
	// here and in the bench output, not asserted: on a shared machine
	// either can win a round.
	if ip := k.UDP[0].Iperf3RatePps; ip != nil {
		t.Logf("kernel veth pair, 18-byte payloads: generator %.0f pps (under 1 %% loss), iperf3 -b 0 %.0f pps received",
			k.UDP[0].RatePps.Median, ip.Median)
	}
	if pn.Kind != KindPodnet || pn.CPUSource != CPUDaemon || pn.Reference != k.Name {
		t.Errorf("podnet path: kind %s, cpu %s, reference %q", pn.Kind, pn.CPUSource, pn.Reference)
	}
	// Ratios are per round: podnet's round i over the kernel's round i.
	r := pn.TCP[0].RatioToReference
	if r == nil || len(r.Rounds) != 2 {
		t.Fatalf("podnet TCP ratio %+v, want 2 rounds", r)
	}
	for i := range 2 {
		want := pn.TCP[0].ThroughputGbitPerS.Rounds[i] / k.TCP[0].ThroughputGbitPerS.Rounds[i]
		// Stat rounds keep the order they were measured in.
		if got := r.Rounds[i]; fmt.Sprintf("%.9f", got) != fmt.Sprintf("%.9f", want) {
			t.Errorf("round %d ratio %v, want %v", i+1, got, want)
		}
	}
	if pn.TCP[0].CPUSecondsPerGbit.Median <= 0 {
		t.Errorf("podnet daemon CPU per Gbit %v, want > 0", pn.TCP[0].CPUSecondsPerGbit)
	}
	if !strings.Contains(progress.String(), "round 2/2") || !strings.Contains(progress.String(), "left)") {
		t.Errorf("progress lacks round or time-left lines:\n%s", progress.String())
	}
	dir := t.TempDir()
	files, err := WriteDir(rep, dir)
	if err != nil {
		t.Fatal(err)
	}
	checkCharts(t, dir, files, rep)
	if in := labsInTheWay(cfg.LabPrefix); len(in) > 0 {
		t.Errorf("left behind: %v", in)
	}
}

// TestPreflight: every missing tool and a lab in the way each get their
// own sentence, before anything is built.
func TestPreflight(t *testing.T) {
	needRoot(t)
	p := testPrefix(t)
	if out, err := exec.Command("ip", "netns", "add", p+"-vetha").CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	ipPath, _ := exec.LookPath("ip")
	// Only ip on PATH: iperf3, ping and nft are missing.
	dir := t.TempDir()
	if err := os.Symlink(ipPath, dir+"/ip"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	err := Preflight(Config{LabPrefix: p})
	if err == nil {
		t.Fatal("Preflight passed with tools missing and a namespace in the way")
	}
	msg := err.Error()
	for _, want := range []string{"iperf3 is not installed", "ping is not installed", "nft is not installed", p + "-vetha"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Preflight error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "ip is not installed") || strings.Contains(msg, "root") {
		t.Errorf("Preflight complains about what is fine:\n%s", msg)
	}
	if n := strings.Count(msg, "\n") + 1; n != 4 {
		t.Errorf("Preflight gave %d lines, want one sentence for each of 4 problems:\n%s", n, msg)
	}
	// Without NAT, nft is not needed.
	if err := Preflight(Config{LabPrefix: p, Scenarios: []string{ScenarioSameNode}}); err == nil || strings.Contains(err.Error(), "nft") {
		t.Errorf("Preflight for same-node only: %v", err)
	}
}

// TestPair runs both ends of `podnet bench pair` between two namespaces
// on a veth, as two pods on two hosts would.
func TestPair(t *testing.T) {
	needRoot(t)
	p := testPrefix(t)
	a, b := p+"-vetha", p+"-vethb"
	if err := ipSteps(context.Background(), [][]string{
		{"netns", "add", a}, {"netns", "add", b},
		{"-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b},
		{"-n", a, "addr", "add", "10.252.0.1/24", "dev", "eth0"}, {"-n", b, "addr", "add", "10.252.0.2/24", "dev", "eth0"},
		{"-n", a, "link", "set", "eth0", "up"}, {"-n", b, "link", "set", "eth0", "up"},
		{"-n", a, "link", "set", "lo", "up"}, {"-n", b, "link", "set", "lo", "up"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := waitPing(context.Background(), a, "10.252.0.2"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServePair(ctx, b, nil) }()
	defer func() {
		// A client that keeps its control connection open must not
		// keep the server from stopping.
		var idle net.Conn
		if err := netnsutil.Do(nsPath(a), func() (err error) {
			idle, err = net.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("10.252.0.2"), PairControlPort).String())
			return err
		}); err != nil {
			t.Errorf("idle control connection: %v", err)
		} else {
			defer idle.Close()
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("ServePair: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ServePair did not stop within 10s of its context ending")
		}
	}()
	var rep *Report
	var err error
	for try := 0; try < 50; try++ { // the server needs a moment to listen
		rep, err = RunPair(context.Background(), PairConfig{Server: netip.MustParseAddr("10.252.0.2"), Netns: a,
			Rounds: 2, Seconds: 1, Payloads: []int{64}, Quick: true})
		if err == nil || !strings.Contains(err.Error(), "connect to the server") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(rep)
	if err := validate(t, js); err != nil {
		t.Fatalf("pair report does not match schema.json: %v\n%s", err, js)
	}
	if len(rep.Paths) != 1 {
		t.Fatalf("%d paths, want 1", len(rep.Paths))
	}
	pp := rep.Paths[0]
	if len(pp.Errors) > 0 {
		t.Errorf("errors: %v", pp.Errors)
	}
	if pp.Scenario != ScenarioPair || len(pp.TCP) != 1 || len(pp.TCP[0].ThroughputGbitPerS.Rounds) != 2 || pp.TCP[0].ThroughputGbitPerS.Min <= 0.01 {
		t.Errorf("bulk TCP %+v, want 2 rounds above 10 Mbit/s", pp.TCP)
	}
	if pp.Latency == nil || pp.Latency.TCPRequestResponseUs.P50.Median <= 0 || pp.Latency.PingRttUs.P50.Median <= 0 {
		t.Errorf("latency %+v", pp.Latency)
	}
	if len(pp.UDP) != 1 || pp.UDP[0].RatePps.Median < 1000 || pp.UDP[0].LossPercent.Max >= 1 {
		t.Errorf("UDP %+v, want a rate above 1 kpps with under 1 %% loss", pp.UDP)
	}
	if pp.PodMTUBytes != 1500 {
		t.Errorf("pod MTU %d, want the veth's 1500", pp.PodMTUBytes)
	}
}
