package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"podnet/bench/udpgen"
)

// Config configures a bench run: the whole suite or part of it.
type Config struct {
	// Binary is the podnet binary for the labs; "" = os.Executable().
	Binary string
	// Scenarios to run, of ScenarioSameNode, ScenarioCrossNode and
	// ScenarioNAT; nil = all three.
	Scenarios []string
	// Paths, when set, keeps only the paths whose name it matches.
	Paths *regexp.Regexp
	// Rounds is how often every path is measured; 0 = 3 (1 with Quick).
	Rounds int
	// Quick shortens every measurement and measures one UDP payload size.
	Quick bool
	// Seconds per TCP (iperf3) run; 0 = 4 (2 with Quick).
	Seconds int
	// Streams lists the parallel TCP stream counts; nil = {1}.
	Streams []int
	// Payloads are the UDP payload sizes searched; nil = 18 (a 64-byte
	// Ethernet frame), 64 and 1400 bytes (18 with Quick). iperf3 runs
	// beside the generator with the first size on kernel paths.
	Payloads []int
	// NoUDP leaves out the UDP rate searches.
	NoUDP bool
	// Progress receives a line per measurement; nil discards.
	Progress io.Writer
	// Command is recorded in the report's metadata.
	Command string
	// LabPrefix starts the names of the suite's labs and namespaces;
	// "" = DefaultLabPrefix. At most 5 characters, [a-z][a-z0-9]*.
	LabPrefix string
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,4}$`)

func (cfg *Config) defaults() error {
	if cfg.LabPrefix == "" {
		cfg.LabPrefix = DefaultLabPrefix
	}
	if !prefixRE.MatchString(cfg.LabPrefix) {
		return fmt.Errorf("bench: lab prefix %q: must match %s", cfg.LabPrefix, prefixRE)
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 3
		if cfg.Quick {
			cfg.Rounds = 1
		}
	}
	if cfg.Rounds < 1 || cfg.Rounds > 50 {
		return fmt.Errorf("bench: rounds %d: must be 1..50", cfg.Rounds)
	}
	if cfg.Seconds == 0 {
		cfg.Seconds = 4
		if cfg.Quick {
			cfg.Seconds = 2
		}
	}
	if cfg.Seconds < 1 || cfg.Seconds > 600 {
		return fmt.Errorf("bench: seconds %d: must be 1..600", cfg.Seconds)
	}
	if len(cfg.Streams) == 0 {
		cfg.Streams = []int{1}
	}
	for _, s := range cfg.Streams {
		if s < 1 || s > 128 {
			return fmt.Errorf("bench: streams %d: must be 1..128", s)
		}
	}
	if len(cfg.Payloads) == 0 {
		cfg.Payloads = []int{18, 64, 1400}
		if cfg.Quick {
			cfg.Payloads = []int{18}
		}
	}
	for _, p := range cfg.Payloads {
		if p < 18 || p > udpgen.MaxPayload {
			return fmt.Errorf("bench: UDP payload %d: must be 18..%d bytes", p, udpgen.MaxPayload)
		}
	}
	if cfg.NoUDP {
		cfg.Payloads = nil
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = []string{ScenarioSameNode, ScenarioCrossNode, ScenarioNAT}
	}
	for _, s := range cfg.Scenarios {
		switch s {
		case ScenarioSameNode, ScenarioCrossNode, ScenarioNAT:
		default:
			return fmt.Errorf("bench: scenario %q: want %s, %s or %s", s, ScenarioSameNode, ScenarioCrossNode, ScenarioNAT)
		}
	}
	return nil
}

// durations of the parts of one measurement of one path.
func (cfg *Config) pingCount() int {
	if cfg.Quick {
		return 30
	}
	return 100
}

func (cfg *Config) rrDuration() time.Duration {
	if cfg.Quick {
		return 500 * time.Millisecond
	}
	return time.Second
}

func (cfg *Config) search() udpgen.SearchConfig {
	if cfg.Quick {
		return udpgen.SearchConfig{Trial: 250 * time.Millisecond, Trials: 5, Drain: 50 * time.Millisecond}
	}
	return udpgen.SearchConfig{Trial: 300 * time.Millisecond, Trials: 7, Drain: 60 * time.Millisecond}
}

// omit is iperf3's -O: seconds of slow start left out of the figure.
func (cfg *Config) omit() int {
	if cfg.Quick {
		return 0
	}
	return 1
}

// Ports the measurements listen on in the server pod.
const (
	iperfPort    = "5299"
	connPort     = 5300
	connSeconds  = 2 // per round, of new TCP connections
	rrPort       = 5320
	udpSinkPort  = 5400
	udpSinkSocks = 2
	udpSendSocks = 2
)

// target is a built path: pods to measure between and how to account
// for the CPU spent forwarding.
type target struct {
	client, server string // netns names
	addr           netip.Addr
	cpu            func() float64
	// iperfUDP also runs iperf3 -u next to the generator.
	iperfUDP bool
	// conns also counts new TCP connections per second.
	conns bool
	// download also measures one TCP stream from server to client.
	download bool
}

// pathSpec is a path the suite can build.
type pathSpec struct {
	Path
	build func(ctx context.Context, cfg *Config) (*target, func(), error)
}

// samples are one path's per-round raw values; NaN = that round failed.
type samples struct {
	tcpGbps, tcpRetrans, tcpCPU map[int][]float64
	downGbps, downRetrans       []float64 // one stream, server to client
	downCPU                     []float64
	udpRate, udpLoss, udpCPU    map[int][]float64
	udpGenBound                 map[int]bool
	iperfRate, iperfLoss        []float64
	ping, rr                    [3][]float64
	conns                       []float64
	errs                        []string
}

func newSamples(rounds int) *samples {
	nan := func() []float64 {
		v := make([]float64, rounds)
		for i := range v {
			v[i] = math.NaN()
		}
		return v
	}
	s := &samples{tcpGbps: map[int][]float64{}, tcpRetrans: map[int][]float64{}, tcpCPU: map[int][]float64{},
		udpRate: map[int][]float64{}, udpLoss: map[int][]float64{}, udpCPU: map[int][]float64{}, udpGenBound: map[int]bool{},
		iperfRate: nan(), iperfLoss: nan(), conns: nan(),
		downGbps: nan(), downRetrans: nan(), downCPU: nan()}
	for i := range s.ping {
		s.ping[i], s.rr[i] = nan(), nan()
	}
	return s
}

// series returns m[k], creating it full of NaN.
func series(m map[int][]float64, k, rounds int) []float64 {
	if v, ok := m[k]; ok {
		return v
	}
	v := make([]float64, rounds)
	for i := range v {
		v[i] = math.NaN()
	}
	m[k] = v
	return v
}

// progress prints one line per measurement with an estimate of the time
// left, from the average measurement so far.
type progress struct {
	w     io.Writer
	start time.Time
	total int
	done  int
}

func (p *progress) step(round, rounds int, path, what, result string) {
	p.done++
	if p.w == nil {
		return
	}
	left := ""
	if p.done < p.total {
		per := time.Since(p.start) / time.Duration(p.done)
		left = fmt.Sprintf("  (about %s left)", (per * time.Duration(p.total-p.done)).Round(time.Second))
	}
	fmt.Fprintf(p.w, "[%3d/%d] round %d/%d  %-32s %-12s %s%s\n", p.done, p.total, round+1, rounds, path, what, result, left)
}

func (p *progress) say(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

// measurements is how many progress steps one round of path makes.
func (cfg *Config) measurements(p pathSpec) int {
	n := len(cfg.Streams) + 2 + len(cfg.Payloads)
	if p.Kind == KindKernel && len(cfg.Payloads) > 0 {
		n++ // iperf3 -u
	}
	if p.Scenario == ScenarioNAT {
		n += 2 // new connections, download: every NAT target sets conns and download
	}
	return n
}

var runSeq atomic.Uint32

// Run measures the configured paths, every path once per round, and
// returns the report. A path that cannot be built or measured is
// reported with its errors; Run fails only when nothing could be done.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &Report{Schema: SchemaVersion, Meta: NewMeta(cfg), Paths: []Path{}, Skipped: []Skipped{}}
	var plan [][]pathSpec
	total := 0
	for _, sc := range cfg.Scenarios {
		specs, skipped := scenarioPaths(&cfg, sc)
		var keep []pathSpec
		for _, p := range specs {
			if cfg.Paths == nil || cfg.Paths.MatchString(p.Name) {
				keep = append(keep, p)
				total += cfg.Rounds * cfg.measurements(p)
			}
		}
		for _, s := range skipped {
			if cfg.Paths == nil || cfg.Paths.MatchString(s.Name) {
				rep.Skipped = append(rep.Skipped, s)
			}
		}
		if len(keep) > 0 {
			plan = append(plan, keep)
		}
	}
	if len(plan) == 0 {
		return nil, errors.New("bench: no path to measure (check --paths)")
	}
	pr := &progress{w: cfg.Progress, start: start, total: total}
	for _, s := range rep.Skipped {
		pr.say("skipped: %s: %s", s.Name, s.Reason)
	}
	for _, specs := range plan {
		paths, err := runScenario(ctx, &cfg, specs, pr, rep)
		rep.Paths = append(rep.Paths, paths...)
		if err != nil {
			return rep, err
		}
	}
	rep.Meta.DurationSeconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// runScenario builds every path of one scenario, measures them round by
// round (kernel and podnet interleaved in each round, so that ratios
// compare figures taken minutes, not rounds, apart) and tears them down.
func runScenario(ctx context.Context, cfg *Config, specs []pathSpec, pr *progress, rep *Report) ([]Path, error) {
	targets := make([]*target, len(specs))
	data := make([]*samples, len(specs))
	var downs []func()
	defer func() {
		for i := len(downs) - 1; i >= 0; i-- {
			downs[i]()
		}
	}()
	for i, sp := range specs {
		data[i] = newSamples(cfg.Rounds)
		pr.say("building %s ...", sp.Name)
		t0 := time.Now()
		t, down, err := sp.build(ctx, cfg)
		if down != nil {
			downs = append(downs, down)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			data[i].errs = append(data[i].errs, fmt.Sprintf("build: %v", err))
			pr.say("building %s failed: %v", sp.Name, err)
			pr.done += cfg.Rounds * cfg.measurements(sp)
			continue
		}
		if rep.Meta.UnderlayMTUBytes == 0 && sp.Scenario == ScenarioCrossNode {
			rep.Meta.UnderlayMTUBytes = linkMTU(ctx, underlayOf(t), "eth0")
		}
		pr.say("built %s in %.1fs", sp.Name, time.Since(t0).Seconds())
		targets[i] = t
	}
	for r := 0; r < cfg.Rounds; r++ {
		for i, sp := range specs {
			if targets[i] == nil {
				continue
			}
			measure(ctx, cfg, r, sp, targets[i], data[i], pr)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	out := make([]Path, len(specs))
	for i, sp := range specs {
		p := sp.Path
		if targets[i] != nil {
			p.PodMTUBytes = linkMTU(ctx, targets[i].client, "eth0")
		}
		summarise(cfg, &p, data[i])
		out[i] = p
	}
	addRatios(cfg, out, data, specs)
	return out, nil
}

// underlayOf guesses a node namespace from a lab pod's name
// (NAME-test-1 -> NAME-worker1).
func underlayOf(t *target) string {
	if i := strings.LastIndex(t.client, "-test-"); i > 0 {
		return t.client[:i] + "-worker1"
	}
	return t.client
}

// measure runs every measurement of one path for round r.
func measure(ctx context.Context, cfg *Config, r int, sp pathSpec, t *target, d *samples, pr *progress) {
	fail := func(what string, err error) string {
		d.errs = append(d.errs, fmt.Sprintf("round %d: %s: %v", r+1, what, err))
		return "FAILED: " + firstLine(err.Error())
	}
	addr := t.addr.String()
	bulk := func(what string, streams int, reverse bool, gbps, retrans, cpuPerGbit []float64) {
		c0 := t.cpu()
		res, err := iperf3(ctx, t.client, t.server, addr, cfg.Seconds, streams, cfg.omit(), reverse)
		cpu := t.cpu() - c0
		line := ""
		if err != nil {
			line = fail(what, err)
		} else {
			gbps[r], retrans[r] = res.Gbps, float64(res.Retrans)
			if gbit := res.Gbps * float64(cfg.Seconds+cfg.omit()); gbit > 0 {
				cpuPerGbit[r] = cpu / gbit
			}
			line = fmt.Sprintf("%.2f Gbit/s, %d retransmits", res.Gbps, res.Retrans)
		}
		pr.step(r, cfg.Rounds, sp.Name, what, line)
	}
	for _, st := range cfg.Streams {
		bulk(fmt.Sprintf("tcp x%d", st), st, false,
			series(d.tcpGbps, st, cfg.Rounds), series(d.tcpRetrans, st, cfg.Rounds), series(d.tcpCPU, st, cfg.Rounds))
	}
	if t.download {
		bulk("tcp x1 down", 1, true, d.downGbps, d.downRetrans, d.downCPU)
	}

	if rtts, err := pingRTTs(ctx, t.client, addr, cfg.pingCount()); err != nil {
		pr.step(r, cfg.Rounds, sp.Name, "ping", fail("ping", err))
	} else {
		for i, q := range []float64{0.5, 0.9, 0.99} {
			d.ping[i][r] = percentile(rtts, q)
		}
		pr.step(r, cfg.Rounds, sp.Name, "ping", fmt.Sprintf("p50 %.0f µs, p99 %.0f µs", d.ping[0][r], d.ping[2][r]))
	}

	rrLine := ""
	if srv, err := startRRServer(t.server, rrPort); err != nil {
		rrLine = fail("tcp request/response", err)
	} else {
		rtts, err := requestResponse(ctx, nsPath(t.client), netip.AddrPortFrom(t.addr, rrPort), cfg.rrDuration())
		srv.Close()
		if err != nil {
			rrLine = fail("tcp request/response", err)
		} else {
			for i, q := range []float64{0.5, 0.9, 0.99} {
				d.rr[i][r] = percentile(rtts, q)
			}
			rrLine = fmt.Sprintf("p50 %.0f µs, p99 %.0f µs (%d round trips)", d.rr[0][r], d.rr[2][r], len(rtts))
		}
	}
	pr.step(r, cfg.Rounds, sp.Name, "tcp rr", rrLine)

	if len(cfg.Payloads) > 0 {
		measureUDP(ctx, cfg, r, sp, t, d, pr, fail)
	}

	if t.conns {
		line := ""
		if n, err := connRate(ctx, cfg.Binary, t.client, t.server, addr, connSeconds); err != nil {
			line = fail("new connections", err)
		} else {
			d.conns[r] = n
			line = fmt.Sprintf("%.0f connections/s", n)
		}
		pr.step(r, cfg.Rounds, sp.Name, "tcp conns", line)
	}
}

func measureUDP(ctx context.Context, cfg *Config, r int, sp pathSpec, t *target, d *samples, pr *progress, fail func(string, error) string) {
	sink, err := udpgen.Listen(nsPath(t.server), udpSinkPort, udpSinkSocks)
	if err != nil {
		for _, pl := range cfg.Payloads {
			pr.step(r, cfg.Rounds, sp.Name, fmt.Sprintf("udp %dB", pl), fail("udp sink", err))
		}
	} else {
		for _, pl := range cfg.Payloads {
			what := fmt.Sprintf("udp %dB", pl)
			sc := cfg.search()
			sc.Send = udpgen.SendConfig{Netns: nsPath(t.client), Dst: netip.AddrPortFrom(t.addr, udpSinkPort), Payload: pl, Sockets: udpSendSocks}
			sc.CPU = t.cpu
			res, err := udpgen.Search(ctx, sink, sc, runSeq.Add(16)*16)
			switch {
			case err != nil:
				pr.step(r, cfg.Rounds, sp.Name, what, fail(what, err))
			case res.Best.Sent == 0:
				last := res.Trials[len(res.Trials)-1]
				pr.step(r, cfg.Rounds, sp.Name, what, fail(what, fmt.Errorf("no rate with under %.0f%% loss (last: %.0f pps offered, %.1f%% lost)",
					udpgen.MaxLossPct, last.OfferedPPS, last.LossPct)))
			default:
				b := res.Best
				series(d.udpRate, pl, cfg.Rounds)[r] = b.RecvPPS
				series(d.udpLoss, pl, cfg.Rounds)[r] = b.LossPct
				if b.Recv > 0 {
					series(d.udpCPU, pl, cfg.Rounds)[r] = b.CPUSeconds / (float64(b.Recv) / 1e6)
				}
				if res.GeneratorBound {
					d.udpGenBound[pl] = true
				}
				bound := ""
				if res.GeneratorBound {
					bound = " (generator-bound)"
				}
				pr.step(r, cfg.Rounds, sp.Name, what, fmt.Sprintf("%.0f pps at %.2f%% loss%s, %d trials", b.RecvPPS, b.LossPct, bound, len(res.Trials)))
			}
		}
		sink.Close()
	}
	if t.iperfUDP {
		secs := 2
		if cfg.Quick {
			secs = 1
		}
		res, err := iperf3UDP(ctx, t.client, t.server, t.addr.String(), secs, cfg.Payloads[0])
		line := ""
		if err != nil {
			line = fail("iperf3 udp", err)
		} else {
			d.iperfRate[r], d.iperfLoss[r] = res.PPS, res.LossPct
			line = fmt.Sprintf("%.0f pps received, %.1f%% lost", res.PPS, res.LossPct)
		}
		pr.step(r, cfg.Rounds, sp.Name, fmt.Sprintf("iperf3 %dB", cfg.Payloads[0]), line)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// summarise turns a path's samples into its report figures.
func summarise(cfg *Config, p *Path, d *samples) {
	p.TCP, p.UDP, p.Errors = []TCP{}, []UDP{}, d.errs
	if p.Errors == nil {
		p.Errors = []string{}
	}
	for _, st := range cfg.Streams {
		if v, ok := d.tcpGbps[st]; ok {
			p.TCP = append(p.TCP, TCP{Streams: st, ThroughputGbitPerS: NewStat(v),
				Retransmits: NewStat(d.tcpRetrans[st]), CPUSecondsPerGbit: NewStat(series(d.tcpCPU, st, cfg.Rounds))})
		}
	}
	if s := NewStat(d.downGbps); s.Valid() {
		p.TCP = append(p.TCP, TCP{Streams: 1, Download: true, ThroughputGbitPerS: s,
			Retransmits: NewStat(d.downRetrans), CPUSecondsPerGbit: NewStat(d.downCPU)})
	}
	for _, pl := range cfg.Payloads {
		v, ok := d.udpRate[pl]
		if !ok {
			continue
		}
		u := UDP{PayloadBytes: pl, RatePps: NewStat(v), LossPercent: NewStat(d.udpLoss[pl]),
			CPUSecondsPerMillionPackets: NewStat(series(d.udpCPU, pl, cfg.Rounds)), GeneratorBound: d.udpGenBound[pl]}
		if pl == cfg.Payloads[0] {
			if s := NewStat(d.iperfRate); s.Valid() {
				l := NewStat(d.iperfLoss)
				u.Iperf3RatePps, u.Iperf3LossPercent = &s, &l
			}
		}
		p.UDP = append(p.UDP, u)
	}
	if NewStat(d.ping[0]).Valid() || NewStat(d.rr[0]).Valid() {
		p.Latency = &Latency{
			PingRttUs:            Percentiles{NewStat(d.ping[0]), NewStat(d.ping[1]), NewStat(d.ping[2])},
			TCPRequestResponseUs: Percentiles{NewStat(d.rr[0]), NewStat(d.rr[1]), NewStat(d.rr[2])},
		}
	}
	if s := NewStat(d.conns); s.Valid() {
		p.NewConnectionsPerSecond = &s
	}
}

// addRatios sets each podnet path's ratios to its reference, round by
// round.
func addRatios(cfg *Config, paths []Path, data []*samples, specs []pathSpec) {
	index := map[string]int{}
	for i, p := range paths {
		index[p.Name] = i
	}
	ratio := func(a, b []float64) *Stat {
		v := make([]float64, len(a))
		for i := range a {
			v[i] = a[i] / b[i] // NaN when either round failed
		}
		s := NewStat(v)
		if !s.Valid() {
			return nil
		}
		return &s
	}
	for i := range paths {
		ref, ok := index[specs[i].Reference]
		if !ok || specs[i].Reference == "" {
			continue
		}
		me, them := data[i], data[ref]
		for j := range paths[i].TCP {
			t := &paths[i].TCP[j]
			if t.Download {
				t.RatioToReference = ratio(me.downGbps, them.downGbps)
				continue
			}
			t.RatioToReference = ratio(series(me.tcpGbps, t.Streams, cfg.Rounds), series(them.tcpGbps, t.Streams, cfg.Rounds))
		}
		for j := range paths[i].UDP {
			pl := paths[i].UDP[j].PayloadBytes
			paths[i].UDP[j].RatioToReference = ratio(series(me.udpRate, pl, cfg.Rounds), series(them.udpRate, pl, cfg.Rounds))
		}
		if paths[i].Latency != nil {
			paths[i].Latency.TCPRequestResponseP50Ratio = ratio(me.rr[0], them.rr[0])
		}
	}
}
