package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Chart colours: kernel paths grey, podnet paths blue.
var (
	kernelColor = color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff}
	podnetColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
)

// chartSeries is one figure per path: its median and its range over the
// rounds (the error bar).
type chartSeries struct {
	title, unit string
	file        string // base name, without extension
	value       func(Path) (Stat, bool)
}

// chartKinds are the charts WriteCharts draws.
var chartKinds = []chartSeries{
	{title: "Bulk TCP throughput (iperf3, 1st stream count)", unit: "Gbit/s", file: "throughput",
		value: func(p Path) (Stat, bool) {
			if len(p.TCP) == 0 {
				return Stat{}, false
			}
			return p.TCP[0].ThroughputGbitPerS, true
		}},
	{title: "Latency: TCP request/response p50", unit: "µs", file: "latency",
		value: func(p Path) (Stat, bool) {
			if p.Latency == nil {
				return Stat{}, false
			}
			return p.Latency.TCPRequestResponseUs.P50, true
		}},
	{title: "UDP packet rate under 1 % loss (smallest payload)", unit: "kpps", file: "packet-rate",
		value: func(p Path) (Stat, bool) {
			if len(p.UDP) == 0 {
				return Stat{}, false
			}
			return scaled(p.UDP[0].RatePps, 1e-3), true
		}},
}

// errBars are the error bars of one bar series.
type errBars struct {
	x      []float64
	y      []float64
	lo, hi []float64
}

func (e errBars) Len() int                    { return len(e.x) }
func (e errBars) XY(i int) (float64, float64) { return e.x[i], e.y[i] }
func (e errBars) YError(i int) (float64, float64) {
	return e.lo[i], e.hi[i]
}

// WriteCharts draws every chart of r into dir as PNG and SVG and returns
// the file names written (relative to dir). A chart no path has data for
// is left out.
func WriteCharts(r *Report, dir string) ([]string, error) {
	var files []string
	for _, c := range chartKinds {
		p, ok, err := drawChart(r, c)
		if err != nil {
			return files, err
		}
		if !ok {
			continue
		}
		width := vg.Length(math.Max(7, 1.1*float64(len(r.Paths)))) * vg.Inch
		for _, ext := range []string{"png", "svg"} {
			name := c.file + "." + ext
			if err := p.Save(width, 6*vg.Inch, filepath.Join(dir, name)); err != nil {
				return files, fmt.Errorf("chart %s: %w", name, err)
			}
			files = append(files, name)
		}
	}
	return files, nil
}

func drawChart(r *Report, c chartSeries) (*plot.Plot, bool, error) {
	p := plot.New()
	p.Title.Text = c.title
	p.Y.Label.Text = c.unit + " (bar: median; whiskers: min–max over the rounds)"
	p.Y.Min = 0
	var names []string
	vals := map[string]plotter.Values{KindKernel: {}, KindPodnet: {}}
	bars := map[string]*errBars{KindKernel: {}, KindPodnet: {}}
	drawn := false
	top := 0.0
	for i, path := range r.Paths {
		names = append(names, path.Name)
		s, ok := c.value(path)
		for kind := range vals {
			v := 0.0
			if ok && s.Valid() && kind == path.Kind {
				v = s.Median
				drawn = true
				b := bars[kind]
				b.x = append(b.x, float64(i))
				b.y = append(b.y, s.Median)
				b.lo = append(b.lo, s.Median-s.Min)
				b.hi = append(b.hi, s.Max-s.Median)
				top = math.Max(top, s.Max)
			}
			vals[kind] = append(vals[kind], v)
		}
	}
	if !drawn {
		return nil, false, nil
	}
	for _, kind := range []string{KindKernel, KindPodnet} {
		bc, err := plotter.NewBarChart(vals[kind], vg.Points(36))
		if err != nil {
			return nil, false, fmt.Errorf("chart %s: %w", c.file, err)
		}
		bc.LineStyle.Width = 0
		bc.Color = map[string]color.Color{KindKernel: kernelColor, KindPodnet: podnetColor}[kind]
		p.Add(bc)
		p.Legend.Add(kind, bc)
		if b := bars[kind]; b.Len() > 0 {
			eb, err := plotter.NewYErrorBars(b)
			if err != nil {
				return nil, false, fmt.Errorf("chart %s: error bars: %w", c.file, err)
			}
			eb.LineStyle.Width = vg.Points(1.2)
			p.Add(eb)
		}
	}
	p.Legend.Top = true
	// Room above the tallest whisker for the legend.
	p.Y.Max = 1.15 * top
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YTop
	return p, true, nil
}
