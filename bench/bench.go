// Package bench measures podnet's data path against the kernel's, in the
// same run on the same machine: iperf3 between namespaces, over a kernel
// veth pair and through podnet labs in each mode.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Result is one measured path.
type Result struct {
	Path    string  `json:"path"`
	Streams int     `json:"streams"`
	Gbps    float64 `json:"gbps"`
	Retrans int     `json:"retransmits"`
	Seconds float64 `json:"seconds"`
}

// iperf3 runs a TCP test from netns client to server address addr (the
// server runs in netns server) and returns the receiver's rate.
func iperf3(ctx context.Context, client, server, addr string, secs, streams int) (Result, error) {
	port := "5299"
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		return Result{}, fmt.Errorf("start iperf3 server in %s: %w", server, err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var out []byte
	var err error
	// The server needs a moment to listen; retry the client briefly.
	for try := 0; try < 50; try++ {
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", client, "iperf3", "-J", "-c", addr, "-p", port,
			"-t", strconv.Itoa(secs), "-O", "1", "-P", strconv.Itoa(streams)).Output()
		// iperf3 -J may exit 0 even when it could not connect.
		if !strings.Contains(string(out), "Connection refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return Result{}, fmt.Errorf("iperf3 %s -> %s: %w\n%s", client, addr, err, out)
	}
	var rep struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Seconds       float64 `json:"seconds"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return Result{}, fmt.Errorf("parse iperf3 output: %w", err)
	}
	if rep.Error != "" {
		return Result{}, fmt.Errorf("iperf3: %s", rep.Error)
	}
	return Result{
		Streams: streams,
		Gbps:    rep.End.SumReceived.BitsPerSecond / 1e9,
		Retrans: rep.End.SumSent.Retransmits,
		Seconds: rep.End.SumReceived.Seconds,
	}, nil
}

// WriteTable prints results with each path's ratio to the first (the
// kernel baseline).
func WriteTable(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "%-34s %8s %10s %9s %8s\n", "PATH", "STREAMS", "GBIT/S", "% KERNEL", "RETRANS")
	var base = map[int]float64{}
	for _, r := range rs {
		if _, ok := base[r.Streams]; !ok {
			base[r.Streams] = r.Gbps
		}
		pct := 100 * r.Gbps / base[r.Streams]
		fmt.Fprintf(w, "%-34s %8d %10.2f %8.0f%% %8d\n", r.Path, r.Streams, r.Gbps, pct, r.Retrans)
	}
}
