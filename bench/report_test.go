package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// validate checks a report's JSON against schema.json.
func validate(t *testing.T, data []byte) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatalf("schema.json: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("file:///podnet-bench.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("file:///podnet-bench.schema.json")
	if err != nil {
		t.Fatalf("compile schema.json: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	return sch.Validate(inst)
}

func stat(v ...float64) Stat { return NewStat(v) }

func statp(v ...float64) *Stat { s := NewStat(v); return &s }

// fullReport has every optional part filled in and a path of every
// scenario and kind the suite measures.
func fullReport() *Report {
	r := &Report{Schema: SchemaVersion, Meta: Meta{Command: "podnet bench", Commit: "abc", Kernel: "6.1", CPUModel: "x", CPUs: 2,
		GoVersion: "go1", Date: "2026-11-26T12:00:00Z", DurationSeconds: 600, LoadAverage1m: 1.5, Rounds: 3, UnderlayMTUBytes: 1500},
		Skipped: []Skipped{{Name: "kernel Geneve (geneve device)", Reason: "no geneve"}}}
	names := []struct{ name, scenario, kind, ref string }{
		{pathVeth, ScenarioSameNode, KindKernel, ""},
		{pathTAPOffload, ScenarioSameNode, KindPodnet, pathVeth},
		{pathTAPPlain, ScenarioSameNode, KindPodnet, pathVeth},
		{pathDirect, ScenarioCrossNode, KindKernel, ""},
		{kernelTunnels[0].name, ScenarioCrossNode, KindKernel, ""},
		{pathPodnetVXLAN, ScenarioCrossNode, KindPodnet, kernelTunnels[0].name},
		{pathPodnetIPIP, ScenarioCrossNode, KindPodnet, pathDirect},
		{pathPodnetNone, ScenarioCrossNode, KindPodnet, pathDirect},
		{pathNATRouting, ScenarioNAT, KindKernel, ""},
		{pathNATMasq, ScenarioNAT, KindKernel, ""},
		{pathPodnetNAT, ScenarioNAT, KindPodnet, pathNATMasq},
	}
	for i, n := range names {
		k := float64(i + 1)
		p := Path{Name: n.name, Scenario: n.scenario, Kind: n.kind, Reference: n.ref, PodMTUBytes: 1500, CPUSource: CPUMachine,
			TCP: []TCP{{Streams: 1, ThroughputGbitPerS: stat(k, k+1, k+0.5), Retransmits: stat(0, 1, 2), CPUSecondsPerGbit: stat(0.1, 0.2, 0.15)}},
			UDP: []UDP{{PayloadBytes: 18, RatePps: stat(1e5*k, 1.1e5*k, 0.9e5*k), LossPercent: stat(0, 0.5, 0.2),
				CPUSecondsPerMillionPackets: stat(3, 4, 5), Iperf3RatePps: statp(5e4, 6e4, 7e4), Iperf3LossPercent: statp(30, 40, 20)}},
			Latency: &Latency{PingRttUs: Percentiles{stat(50), stat(60), stat(70)},
				TCPRequestResponseUs: Percentiles{stat(20*k, 25*k, 30*k), stat(40, 45, 46), stat(100, 300, 200)}},
			Errors: []string{}}
		if n.kind == KindPodnet {
			p.CPUSource = CPUDaemon
			p.TCP[0].RatioToReference = statp(0.5, 0.6, 0.55)
			p.UDP[0].RatioToReference = statp(0.3, 0.4, 0.35)
			p.Latency.TCPRequestResponseP50Ratio = statp(4, 5, 6)
		}
		if n.scenario == ScenarioNAT {
			p.NewConnectionsPerSecond = statp(1000, 1100, 1200)
			down := TCP{Streams: 1, Download: true, ThroughputGbitPerS: stat(k/2, k/2+1, k/2+0.5), Retransmits: stat(5, 6, 7),
				CPUSecondsPerGbit: stat(0.3, 0.4, 0.35)}
			if n.kind == KindPodnet {
				down.RatioToReference = statp(0.2, 0.3, 0.25)
			}
			p.TCP = append(p.TCP, down)
		}
		r.Paths = append(r.Paths, p)
	}
	r.Paths[2].Errors = []string{"round 2: tcp x1: iperf3 failed"}
	r.ControlPlane = &ControlPlane{Convergence: &ConvergenceResult{Runs: 3, Milliseconds: stat(5, 6, 7)},
		PodAdd: &PodAddResult{Pods: 50, TotalSeconds: 2, PodsPerSecond: 25, P50Ms: 30, P99Ms: 80, MaxMs: 90}}
	return r
}

func TestFullReportMatchesSchema(t *testing.T) {
	b, err := json.Marshal(fullReport())
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(t, b); err != nil {
		t.Fatalf("a report with every field does not match schema.json: %v", err)
	}
}

// TestSchemaRejects makes sure the schema is strict: reports that break
// it in one place must fail.
func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
	}{
		{"unknown key without a unit", func(m map[string]any) { m["paths"].([]any)[0].(map[string]any)["throughput"] = 3.0 }},
		{"missing meta", func(m map[string]any) { delete(m, "meta") }},
		{"wrong schema version", func(m map[string]any) { m["schema"] = "podnet-bench/0" }},
		{"bad kind", func(m map[string]any) { m["paths"].([]any)[0].(map[string]any)["kind"] = "ebpf" }},
		{"stat without rounds", func(m map[string]any) {
			tcp := m["paths"].([]any)[0].(map[string]any)["tcp"].([]any)[0].(map[string]any)
			delete(tcp["throughputGbitPerS"].(map[string]any), "rounds")
		}},
		{"date not a date", func(m map[string]any) { m["meta"].(map[string]any)["date"] = "yesterday" }},
		{"skipped without reason", func(m map[string]any) { m["skipped"] = []any{map[string]any{"name": "x"}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(fullReport())
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			b, _ = json.Marshal(m)
			if err := validate(t, b); err == nil {
				t.Errorf("schema accepted a report with %s", tc.name)
			}
		})
	}
}

func TestNewStat(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in               []float64
		median, min, max float64
		rounds           int
	}{
		{[]float64{3, 1, 2}, 2, 1, 3, 3},
		{[]float64{4, 1, 2, 3}, 2.5, 1, 4, 4},
		{[]float64{5, nan, 1}, 3, 1, 5, 2},
		{[]float64{7}, 7, 7, 7, 1},
		{[]float64{nan, math.Inf(1)}, 0, 0, 0, 0},
	} {
		s := NewStat(tc.in)
		if s.Median != tc.median || s.Min != tc.min || s.Max != tc.max || len(s.Rounds) != tc.rounds {
			t.Errorf("NewStat(%v) = %+v, want median %v min %v max %v with %d rounds", tc.in, s, tc.median, tc.min, tc.max, tc.rounds)
		}
	}
	if p := percentile([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9); p != 9 {
		t.Errorf("p90 of 1..10 = %v, want 9", p)
	}
	if p := percentile([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99); p != 10 {
		t.Errorf("p99 of 1..10 = %v, want 10", p)
	}
}

// checkCharts decodes every PNG and parses every SVG in dir, and looks
// for every path's name in the SVGs' text.
func checkCharts(t *testing.T, dir string, files []string, r *Report) {
	t.Helper()
	var pngs, svgs int
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		switch filepath.Ext(f) {
		case ".png":
			pngs++
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s is not a valid PNG: %v", f, err)
			}
			if sz := img.Bounds().Size(); sz.X < 500 || sz.Y < 400 {
				t.Errorf("%s is %v, too small to read", f, sz)
			}
		case ".svg":
			svgs++
			dec := xml.NewDecoder(bytes.NewReader(b))
			var text strings.Builder
			root := ""
			for {
				tok, err := dec.Token()
				if err != nil {
					if err.Error() != "EOF" {
						t.Fatalf("%s is not valid XML: %v", f, err)
					}
					break
				}
				switch tok := tok.(type) {
				case xml.StartElement:
					if root == "" {
						root = tok.Name.Local
					}
				case xml.CharData:
					text.Write(tok)
					text.WriteByte('\n')
				}
			}
			if root != "svg" {
				t.Errorf("%s: root element %q, want svg", f, root)
			}
			for _, p := range r.Paths {
				if !strings.Contains(text.String(), p.Name) {
					t.Errorf("%s has no label %q", f, p.Name)
				}
			}
		}
	}
	if pngs == 0 || pngs != svgs {
		t.Errorf("charts %v: %d PNG and %d SVG, want the same number, more than 0", files, pngs, svgs)
	}
}

func TestChartsHaveEveryPath(t *testing.T) {
	r := fullReport()
	dir := t.TempDir()
	files, err := WriteDir(r, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"results.json", "results.md", "throughput.png", "throughput.svg", "latency.png", "latency.svg", "packet-rate.png", "packet-rate.svg"} {
		if _, err := os.Stat(filepath.Join(dir, want)); err != nil {
			t.Errorf("WriteDir did not write %s: %v", want, err)
		}
	}
	checkCharts(t, dir, files, r)
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, p := range r.Paths {
		if !bytes.Contains(md, []byte(p.Name)) {
			t.Errorf("results.md has no row for %s", p.Name)
		}
	}
	back, err := ReadReport(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Paths) != len(r.Paths) {
		t.Errorf("results.json read back with %d paths, want %d", len(back.Paths), len(r.Paths))
	}
}

func TestCompareFlagsBeyondSpread(t *testing.T) {
	a, b := fullReport(), fullReport()
	// Inside the spread: B's range overlaps A's.
	b.Paths[0].TCP[0].ThroughputGbitPerS = stat(1.4, 2.2, 1.9)
	// Beyond: B's worst round is better than A's best.
	b.Paths[1].TCP[0].ThroughputGbitPerS = stat(5, 5.5, 6)
	// Beyond, the other way.
	b.Paths[3].Latency.TCPRequestResponseUs.P50 = stat(300, 310, 320)
	// A NAT download is its own figure, apart from the upload.
	nat := len(b.Paths) - 1
	b.Paths[nat].TCP[1].ThroughputGbitPerS = stat(50, 51, 52)
	got := map[string]bool{}
	for _, d := range Compare(a, b) {
		got[d.Path+"/"+d.Metric] = d.Beyond
	}
	for key, want := range map[string]bool{
		pathVeth + "/tcp x1 Gbit/s":           false,
		pathTAPOffload + "/tcp x1 Gbit/s":     true,
		pathDirect + "/tcp rr p50 µs":         true,
		pathDirect + "/tcp x1 Gbit/s":         false,
		pathPodnetNAT + "/tcp x1 Gbit/s":      false,
		pathPodnetNAT + "/tcp x1 down Gbit/s": true,
	} {
		if beyond, ok := got[key]; !ok || beyond != want {
			t.Errorf("%s: beyond = %v (present %v), want %v", key, beyond, ok, want)
		}
	}
	var out bytes.Buffer
	if n := WriteComparison(&out, a, b, "a.json", "b.json"); n != 3 {
		t.Errorf("WriteComparison flagged %d, want 3:\n%s", n, out.String())
	}
	out.Reset()
	WriteTable(&out, b)
	if !strings.Contains(out.String(), "1 down") {
		t.Errorf("the table has no download row:\n%s", out.String())
	}
}
