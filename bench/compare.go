package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Difference is one figure of one path in two reports.
type Difference struct {
	Path, Metric string
	A, B         Stat
	// ChangePercent is B's median over A's, minus one, in percent.
	ChangePercent float64
	// Beyond says the two ranges over the rounds do not overlap: the
	// change is larger than the spread either run measured.
	Beyond bool
}

// metrics are the figures Compare looks at, by name.
func metrics(p Path) map[string]Stat {
	m := map[string]Stat{}
	for _, t := range p.TCP {
		name := fmt.Sprintf("tcp x%d", t.Streams)
		if t.Download {
			name += " down"
		}
		m[name+" Gbit/s"] = t.ThroughputGbitPerS
		m[name+" CPU s/Gbit"] = t.CPUSecondsPerGbit
	}
	for _, u := range p.UDP {
		m[fmt.Sprintf("udp %dB pps", u.PayloadBytes)] = u.RatePps
	}
	if l := p.Latency; l != nil {
		m["ping p50 µs"] = l.PingRttUs.P50
		m["tcp rr p50 µs"] = l.TCPRequestResponseUs.P50
		m["tcp rr p99 µs"] = l.TCPRequestResponseUs.P99
	}
	if p.NewConnectionsPerSecond != nil {
		m["new conns/s"] = *p.NewConnectionsPerSecond
	}
	return m
}

// metricOrder keeps the output stable.
var metricOrder = []string{"tcp x1 Gbit/s", "tcp x4 Gbit/s", "tcp x1 CPU s/Gbit", "tcp x4 CPU s/Gbit",
	"udp 18B pps", "udp 64B pps", "udp 1400B pps", "ping p50 µs", "tcp rr p50 µs", "tcp rr p99 µs", "new conns/s"}

// Compare lists every figure that both reports have for a path of the
// same name, A then B.
func Compare(a, b *Report) []Difference {
	var out []Difference
	bp := map[string]Path{}
	for _, p := range b.Paths {
		bp[p.Name] = p
	}
	for _, pa := range a.Paths {
		pb, ok := bp[pa.Name]
		if !ok {
			continue
		}
		ma, mb := metrics(pa), metrics(pb)
		seen := map[string]bool{}
		names := append([]string{}, metricOrder...)
		for k := range ma {
			names = append(names, k)
		}
		for _, k := range names {
			if seen[k] {
				continue
			}
			seen[k] = true
			sa, ok1 := ma[k]
			sb, ok2 := mb[k]
			if !ok1 || !ok2 || !sa.Valid() || !sb.Valid() {
				continue
			}
			d := Difference{Path: pa.Name, Metric: k, A: sa, B: sb, Beyond: sb.Min > sa.Max || sb.Max < sa.Min}
			if sa.Median != 0 {
				d.ChangePercent = 100 * (sb.Median/sa.Median - 1)
			}
			out = append(out, d)
		}
	}
	return out
}

// WriteComparison prints Compare's differences, marking with "!" those
// beyond the measured spread.
func WriteComparison(w io.Writer, a, b *Report, an, bn string) int {
	fmt.Fprintf(w, "A: %s (%s, %s, %d rounds)\nB: %s (%s, %s, %d rounds)\n",
		an, short(a.Meta.Commit), a.Meta.Date, a.Meta.Rounds, bn, short(b.Meta.Commit), b.Meta.Date, b.Meta.Rounds)
	if a.Meta.Rounds < 2 || b.Meta.Rounds < 2 {
		fmt.Fprintln(w, "note: a run of one round has no spread, so every change is beyond it")
	}
	g := &grid{title: "", head: []string{"PATH", "METRIC", "A", "B", "CHANGE", ""}}
	flagged := 0
	for _, d := range Compare(a, b) {
		mark := ""
		if d.Beyond {
			mark = "! beyond spread"
			flagged++
		}
		f := "%.3g"
		if d.A.Max >= 1000 || d.B.Max >= 1000 {
			f = "%.0f"
		}
		g.rows = append(g.rows, []string{d.Path, d.Metric, spread(d.A, f), spread(d.B, f), fmt.Sprintf("%+.1f %%", d.ChangePercent), mark})
	}
	g.text(w)
	fmt.Fprintf(w, "%d of %d figures changed beyond the spread of the rounds\n", flagged, len(g.rows))
	return flagged
}

// ReadReport loads a results.json, checking its schema version.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("read %s: schema %q, want %q", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}
