package bench

import (
	"fmt"
	"io"
	"strings"
)

// grid is a table as rows of cells, rendered as aligned text or as
// Markdown.
type grid struct {
	title string
	head  []string
	rows  [][]string
}

func (g *grid) text(w io.Writer) {
	width := make([]int, len(g.head))
	for _, r := range append([][]string{g.head}, g.rows...) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	fmt.Fprintf(w, "%s\n", g.title)
	for _, r := range append([][]string{g.head}, g.rows...) {
		var b strings.Builder
		for i, c := range r {
			pad := width[i] - len([]rune(c))
			if i == 0 {
				b.WriteString(c + strings.Repeat(" ", pad))
			} else {
				b.WriteString("  " + strings.Repeat(" ", pad) + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func (g *grid) markdown(w io.Writer) {
	fmt.Fprintf(w, "### %s\n\n| %s |\n|%s\n", g.title, strings.Join(g.head, " | "), strings.Repeat("---|", len(g.head)))
	for _, r := range g.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

// spread formats a Stat as "median [min–max]" with format f, or "-".
func spread(s Stat, f string) string {
	if !s.Valid() {
		return "-"
	}
	if len(s.Rounds) == 1 {
		return fmt.Sprintf(f, s.Median)
	}
	return fmt.Sprintf(f+" ["+f+"–"+f+"]", s.Median, s.Min, s.Max)
}

func pct(s *Stat) string {
	if s == nil || !s.Valid() {
		return "-"
	}
	s2 := Stat{Median: 100 * s.Median, Min: 100 * s.Min, Max: 100 * s.Max, Rounds: s.Rounds}
	return spread(s2, "%.0f") + " %"
}

func scaled(s Stat, k float64) Stat {
	out := Stat{Median: s.Median * k, Min: s.Min * k, Max: s.Max * k, Rounds: make([]float64, len(s.Rounds))}
	for i, v := range s.Rounds {
		out.Rounds[i] = v * k
	}
	return out
}

func (r *Report) grids() []*grid {
	tcp := &grid{title: "Bulk TCP (iperf3) and latency; median [min–max] over the rounds, % of the reference path in the same round",
		head: []string{"PATH", "SCENARIO", "STREAMS", "GBIT/S", "% REF", "CPU S/GBIT", "PING P50 µS", "TCP RR P50 µS", "RR P99 µS", "RR P50 % REF"}}
	udp := &grid{title: "UDP: highest rate with under 1 % loss (bench/udpgen: sendmmsg/recvmmsg, 2 flows; ≥: the generator's limit)",
		head: []string{"PATH", "PAYLOAD", "KPPS", "% REF", "LOSS %", "CPU S/MPKT", "IPERF3 KPPS (-b 0)"}}
	for _, p := range r.Paths {
		lat := func(f func(*Latency) Stat) string {
			if p.Latency == nil {
				return "-"
			}
			return spread(f(p.Latency), "%.0f")
		}
		rrRef := "-"
		if p.Latency != nil {
			rrRef = pct(p.Latency.TCPRequestResponseP50Ratio)
		}
		if len(p.TCP) == 0 {
			tcp.rows = append(tcp.rows, []string{p.Name, p.Scenario, "-", "-", "-", "-",
				lat(func(l *Latency) Stat { return l.PingRttUs.P50 }), lat(func(l *Latency) Stat { return l.TCPRequestResponseUs.P50 }),
				lat(func(l *Latency) Stat { return l.TCPRequestResponseUs.P99 }), rrRef})
		}
		for _, t := range p.TCP {
			streams := fmt.Sprint(t.Streams)
			if t.Download {
				streams += " down"
			}
			tcp.rows = append(tcp.rows, []string{p.Name, p.Scenario, streams,
				spread(t.ThroughputGbitPerS, "%.2f"), pct(t.RatioToReference), spread(t.CPUSecondsPerGbit, "%.3f"),
				lat(func(l *Latency) Stat { return l.PingRttUs.P50 }), lat(func(l *Latency) Stat { return l.TCPRequestResponseUs.P50 }),
				lat(func(l *Latency) Stat { return l.TCPRequestResponseUs.P99 }), rrRef})
		}
		for _, u := range p.UDP {
			ip := "-"
			if u.Iperf3RatePps != nil {
				ip = spread(scaled(*u.Iperf3RatePps, 1e-3), "%.0f")
				if u.Iperf3LossPercent != nil {
					ip += fmt.Sprintf(" (%.0f %% lost)", u.Iperf3LossPercent.Median)
				}
			}
			rate := spread(scaled(u.RatePps, 1e-3), "%.0f")
			if u.GeneratorBound {
				rate = "≥ " + rate
			}
			udp.rows = append(udp.rows, []string{p.Name, fmt.Sprintf("%d B", u.PayloadBytes), rate, pct(u.RatioToReference),
				spread(u.LossPercent, "%.2f"), spread(u.CPUSecondsPerMillionPackets, "%.2f"), ip})
		}
	}
	gs := []*grid{tcp}
	if len(udp.rows) > 0 {
		gs = append(gs, udp)
	}
	conns := &grid{title: "New TCP connections per second (sequential connect+close, pod to outside host)", head: []string{"PATH", "CONNS/S"}}
	for _, p := range r.Paths {
		if p.NewConnectionsPerSecond != nil {
			conns.rows = append(conns.rows, []string{p.Name, spread(*p.NewConnectionsPerSecond, "%.0f")})
		}
	}
	if len(conns.rows) > 0 {
		gs = append(gs, conns)
	}
	return gs
}

func (r *Report) notes() []string {
	var out []string
	for _, p := range r.Paths {
		if p.Reference != "" {
			out = append(out, fmt.Sprintf("%s is compared with %s.", p.Name, p.Reference))
		}
	}
	for _, s := range r.Skipped {
		out = append(out, fmt.Sprintf("skipped %s: %s", s.Name, s.Reason))
	}
	for _, p := range r.Paths {
		for _, e := range p.Errors {
			out = append(out, fmt.Sprintf("error on %s: %s", p.Name, firstLine(e)))
		}
	}
	return out
}

// WriteTable prints the report as aligned text tables.
func WriteTable(w io.Writer, r *Report) {
	m := r.Meta
	fmt.Fprintf(w, "podnet %s, kernel %s, %d × %s, %d round(s), load %.1f at start, %s\n\n",
		short(m.Commit), m.Kernel, m.CPUs, m.CPUModel, m.Rounds, m.LoadAverage1m, m.Date)
	for _, g := range r.grids() {
		g.text(w)
		fmt.Fprintln(w)
	}
	for _, n := range r.notes() {
		fmt.Fprintln(w, n)
	}
	if cp := r.ControlPlane; cp != nil {
		if cp.Convergence != nil {
			fmt.Fprintln(w, cp.Convergence)
		}
		if cp.PodAdd != nil {
			fmt.Fprintln(w, cp.PodAdd)
		}
	}
}

// WriteMarkdown writes the report as results.md: metadata, the tables,
// the notes and the charts beside it.
func WriteMarkdown(w io.Writer, r *Report, charts []string) {
	m := r.Meta
	fmt.Fprintf(w, "# podnet bench results\n\n")
	fmt.Fprintf(w, "- command: `%s`\n- commit: %s\n- kernel: %s\n- CPU: %d × %s\n- date: %s (%.0f s, load %.1f at start)\n- rounds: %d%s\n- underlay MTU: %d bytes\n\n",
		m.Command, m.Commit, m.Kernel, m.CPUs, m.CPUModel, m.Date, m.DurationSeconds, m.LoadAverage1m, m.Rounds,
		map[bool]string{true: " (quick)", false: ""}[m.Quick], m.UnderlayMTUBytes)
	for _, c := range charts {
		fmt.Fprintf(w, "![%s](%s)\n\n", c, c)
	}
	for _, g := range r.grids() {
		g.markdown(w)
	}
	for _, n := range r.notes() {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if cp := r.ControlPlane; cp != nil {
		if cp.Convergence != nil {
			fmt.Fprintf(w, "- %s\n", cp.Convergence)
		}
		if cp.PodAdd != nil {
			fmt.Fprintf(w, "- %s\n", cp.PodAdd)
		}
	}
}

func short(commit string) string {
	base, dirty := strings.CutSuffix(commit, "-dirty")
	if len(base) > 12 {
		base = base[:12]
	}
	if dirty {
		return base + "-dirty"
	}
	return base
}
