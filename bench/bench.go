package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// iperfResult is one iperf3 run, as the receiver saw it.
type iperfResult struct {
	Streams int
	Gbps    float64
	Retrans int
	Seconds float64
	// UDP runs: packets per second received and the loss.
	PPS     float64
	LossPct float64
}

// iperf3 runs a TCP test from netns client to server address addr (the
// server runs in netns server) and returns the receiver's rate.
// omit seconds of slow start are left out of the figure (iperf3 -O).
// With reverse the server sends and the client receives (iperf3 -R).
func iperf3(ctx context.Context, client, server, addr string, secs, streams, omit int, reverse bool) (iperfResult, error) {
	port := iperfPort
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		return iperfResult{}, fmt.Errorf("start iperf3 server in %s: %w", server, err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var out []byte
	var err error
	// The server needs a moment to listen; retry the client briefly.
	for try := 0; try < 50; try++ {
		args := []string{"netns", "exec", client, "iperf3", "-J", "-c", addr, "-p", port,
			"-t", strconv.Itoa(secs), "-O", strconv.Itoa(omit), "-P", strconv.Itoa(streams)}
		if reverse {
			args = append(args, "-R")
		}
		out, err = exec.CommandContext(ctx, "ip", args...).Output()
		// iperf3 -J may exit 0 even when it could not connect.
		if !strings.Contains(string(out), "Connection refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 %s -> %s: %w\n%s", client, addr, err, out)
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
		return iperfResult{}, fmt.Errorf("parse iperf3 output: %w", err)
	}
	if rep.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", rep.Error)
	}
	return iperfResult{
		Streams: streams,
		Gbps:    rep.End.SumReceived.BitsPerSecond / 1e9,
		Retrans: rep.End.SumSent.Retransmits,
		Seconds: rep.End.SumReceived.Seconds,
	}, nil
}

// iperf3UDP sends UDP payloads of payload bytes (18: 64-byte Ethernet
// frames with FCS) as fast as iperf3 can for secs and returns what
// arrived.
func iperf3UDP(ctx context.Context, client, server, addr string, secs, payload int) (iperfResult, error) {
	port := iperfPort
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		return iperfResult{}, fmt.Errorf("start iperf3 server in %s: %w", server, err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var out []byte
	for try := 0; try < 50; try++ {
		out, _ = exec.CommandContext(ctx, "ip", "netns", "exec", client, "iperf3", "-J", "-u", "-b", "0", "-l", strconv.Itoa(payload),
			"-c", addr, "-p", port, "-t", strconv.Itoa(secs)).Output()
		if !strings.Contains(string(out), "Connection refused") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rep struct {
		End struct {
			Sum struct {
				Packets     float64 `json:"packets"`
				LostPercent float64 `json:"lost_percent"`
				Seconds     float64 `json:"seconds"`
				BPS         float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return iperfResult{}, fmt.Errorf("parse iperf3 -u output: %w", err)
	}
	if rep.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3 -u: %s", rep.Error)
	}
	s := rep.End.Sum
	got := s.Packets * (1 - s.LostPercent/100)
	return iperfResult{Seconds: s.Seconds, PPS: got / s.Seconds, LossPct: s.LostPercent, Gbps: s.BPS / 1e9 * (1 - s.LostPercent/100)}, nil
}
