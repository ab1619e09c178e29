package bench

import (
	"math"
	"slices"
)

// SchemaVersion names the layout of Report; schema.json describes it.
// Change it (and the schema) whenever a key changes meaning.
const SchemaVersion = "podnet-bench/1"

// Report is the result of a bench run: `podnet bench -o json` prints it,
// `--out DIR` writes it as results.json. Every key that holds a number
// names its unit.
type Report struct {
	Schema  string    `json:"schema"`
	Meta    Meta      `json:"meta"`
	Paths   []Path    `json:"paths"`
	Skipped []Skipped `json:"skipped"`
	// ControlPlane holds the convergence and pod-add timings when they
	// were measured.
	ControlPlane *ControlPlane `json:"controlPlane,omitempty"`
}

// Meta describes the run and the machine it ran on.
type Meta struct {
	Command   string `json:"command"`
	Commit    string `json:"commit"`
	Kernel    string `json:"kernel"`
	CPUModel  string `json:"cpuModel"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"goVersion"`
	// Date is when the run started, RFC 3339 in UTC.
	Date            string  `json:"date"`
	DurationSeconds float64 `json:"durationSeconds"`
	// LoadAverage1m is the machine's load when the run started: on a
	// shared machine it says how much to trust the absolute numbers.
	LoadAverage1m float64 `json:"loadAverage1m"`
	Rounds        int     `json:"rounds"`
	Quick         bool    `json:"quick"`
	// UnderlayMTUBytes is the lab fabric's MTU (nodes' eth0).
	UnderlayMTUBytes int `json:"underlayMtuBytes"`
}

// Path kinds.
const (
	KindKernel = "kernel"
	KindPodnet = "podnet"
)

// Scenarios.
const (
	ScenarioSameNode  = "same-node"
	ScenarioCrossNode = "cross-node"
	ScenarioNAT       = "nat"
	ScenarioPair      = "pair"
)

// CPU sources: what a path's CPU figures count.
const (
	// CPUDaemon is the user+system time of the podnet daemons forwarding
	// the path (/proc/PID/stat), all their threads.
	CPUDaemon = "daemon"
	// CPUMachine is the whole machine's system+softirq time (/proc/stat):
	// for kernel paths, where forwarding happens in the kernel.
	CPUMachine = "machine-system-softirq"
)

// Path is one measured path: a client pod, a server pod and what lies
// between them.
type Path struct {
	Name     string `json:"name"`
	Scenario string `json:"scenario"`
	Kind     string `json:"kind"`
	// Reference is the kernel path this one's ratios are taken against
	// ("" for kernel paths).
	Reference string `json:"reference,omitempty"`
	// PodMTUBytes is the client pod's eth0 MTU.
	PodMTUBytes int      `json:"podMtuBytes"`
	CPUSource   string   `json:"cpuSource"`
	TCP         []TCP    `json:"tcp"`
	UDP         []UDP    `json:"udp"`
	Latency     *Latency `json:"latency,omitempty"`
	// NewConnectionsPerSecond is sequential TCP connect+close (NAT).
	NewConnectionsPerSecond *Stat `json:"newConnectionsPerSecond,omitempty"`
	// Errors are measurements that failed; the rest still count.
	Errors []string `json:"errors"`
}

// TCP is bulk TCP (iperf3) with a number of parallel streams.
type TCP struct {
	Streams int `json:"streams"`
	// Download: the server sent and the client received (iperf3 -R). NAT
	// paths measure both ways: for them it is the outside host sending to
	// the pod, through the netstack's own TCP.
	Download           bool `json:"download,omitempty"`
	ThroughputGbitPerS Stat `json:"throughputGbitPerS"`
	Retransmits        Stat `json:"retransmits"`
	// CPUSecondsPerGbit is CPU time per Gbit carried, which is also CPU
	// cores busy per Gbit/s.
	CPUSecondsPerGbit Stat `json:"cpuSecondsPerGbit"`
	// RatioToReference is this round's throughput over the reference's
	// in the same round.
	RatioToReference *Stat `json:"ratioToReference,omitempty"`
}

// UDP is the highest packet rate the path carries with under 1 % loss
// (bench/udpgen), for one payload size.
type UDP struct {
	PayloadBytes int  `json:"payloadBytes"`
	RatePps      Stat `json:"ratePps"`
	LossPercent  Stat `json:"lossPercent"`
	// CPUSecondsPerMillionPackets is also CPU cores busy per Mpps.
	CPUSecondsPerMillionPackets Stat `json:"cpuSecondsPerMillionPackets"`
	// GeneratorBound: in some round the path took everything the
	// generator could send, so the rate is a lower bound.
	GeneratorBound   bool  `json:"generatorBound"`
	RatioToReference *Stat `json:"ratioToReference,omitempty"`
	// Iperf3RatePps and Iperf3LossPercent are iperf3 -u -b 0 with the
	// same payload, for comparison with the generator (kernel paths).
	Iperf3RatePps     *Stat `json:"iperf3RatePps,omitempty"`
	Iperf3LossPercent *Stat `json:"iperf3LossPercent,omitempty"`
}

// Latency is round-trip time between the pods.
type Latency struct {
	// PingRttUs is ICMP echo (ping -i 0.01).
	PingRttUs Percentiles `json:"pingRttUs"`
	// TCPRequestResponseUs is one 64-byte request and its 64-byte
	// response on an open TCP connection, back to back.
	TCPRequestResponseUs Percentiles `json:"tcpRequestResponseUs"`
	// TCPRequestResponseP50Ratio is this round's p50 over the
	// reference's in the same round.
	TCPRequestResponseP50Ratio *Stat `json:"tcpRequestResponseP50RatioToReference,omitempty"`
}

// Percentiles of a distribution, each over the rounds.
type Percentiles struct {
	P50 Stat `json:"p50"`
	P90 Stat `json:"p90"`
	P99 Stat `json:"p99"`
}

// Stat is one figure over the rounds: each round's value, their median
// and range. The unit is in the key that holds it.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Rounds []float64 `json:"rounds"`
}

// Skipped is a path that was not measured, and why.
type Skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// ControlPlane timings.
type ControlPlane struct {
	Convergence *ConvergenceResult `json:"convergence,omitempty"`
	PodAdd      *PodAddResult      `json:"podAdd,omitempty"`
}

// NewStat summarises per-round values. NaN marks a round whose
// measurement failed: it is left out (a zero would be a lie, and JSON has
// no NaN).
func NewStat(rounds []float64) Stat {
	var v []float64
	for _, x := range rounds {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	s := Stat{Rounds: v}
	if s.Rounds == nil {
		s.Rounds = []float64{}
	}
	if len(v) == 0 {
		return s
	}
	sorted := slices.Clone(v)
	slices.Sort(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// Valid says whether any round produced a value.
func (s Stat) Valid() bool { return len(s.Rounds) > 0 }

// percentile returns the p-th percentile (0..1) of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
