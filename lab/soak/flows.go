package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
)

// pingInterval is the stable flows' ping rate (5 per second): dense
// enough that a switch which drops packets for a second shows up, light
// enough to leave the machine to the daemons.
const pingInterval = "0.2"

// Rates of the iperf3 flows: moderate, so the soak measures leaks, not
// the shared machine's ceiling.
const (
	iperfTCPRate = "20M"
	iperfUDPRate = "5M"
	// iperfUDPLen keeps datagrams below the smallest pod MTU (VXLAN's),
	// so an encapsulation switch never has them fragmented.
	iperfUDPLen = "1200"
)

// pingFlow is `ping` running in a namespace until stopped.
type pingFlow struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// startPing starts ping from namespace ns to dst. It runs in its own
// process group, so a Ctrl-C on the terminal reaches the harness, which
// stops it and still reads its summary.
func startPing(name, ns string, dst string) (*pingFlow, error) {
	f := &pingFlow{name: name, done: make(chan error, 1)}
	f.cmd = exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-i", pingInterval, "-W", "1", dst)
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.out
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	return f, nil
}

// stop ends the ping with SIGINT, on which ping prints its summary, and
// reads it.
func (f *pingFlow) stop() FlowResult {
	r := FlowResult{Name: f.name, Kind: "ping"}
	f.cmd.Process.Signal(syscall.SIGINT)
	var err error
	select {
	case err = <-f.done:
	case <-time.After(5 * time.Second):
		f.cmd.Process.Kill()
		err = <-f.done
		r.Err = "ping did not stop on SIGINT"
		return r
	}
	sent, recv, perr := parsePingSummary(f.out.String())
	if perr != nil {
		r.Err = fmt.Sprintf("%v (exit: %v)", perr, err)
		return r
	}
	r.Sent, r.Received = sent, recv
	r.LossPct = pct(sent-recv, sent)
	r.Detail = fmt.Sprintf("%d lost", sent-recv)
	return r
}

var pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// parsePingSummary reads "N packets transmitted, M received, ..." from
// ping's output.
func parsePingSummary(out string) (sent, recv int, err error) {
	m := pingSummaryRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no summary in ping output %q", tail(out, 200))
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ = strconv.Atoi(m[2])
	return sent, recv, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// iperfFlow is an iperf3 client with its one-shot server.
type iperfFlow struct {
	name, kind string
	server     *exec.Cmd
	client     *exec.Cmd
	out, sout  bytes.Buffer
	done       chan error
}

// startIperf starts `iperf3 -s -1` in serverNS and, once it listens, a
// client in clientNS sending to serverIP for d at a moderate rate.
func startIperf(ctx context.Context, name string, udp bool, clientNS, serverNS, serverIP string, port int, d time.Duration) (*iperfFlow, error) {
	f := &iperfFlow{name: name, kind: "iperf3-tcp", done: make(chan error, 1)}
	p := strconv.Itoa(port)
	f.server = exec.Command("ip", "netns", "exec", serverNS, "iperf3", "-s", "-1", "-p", p)
	f.server.Stdout, f.server.Stderr = &f.sout, &f.sout
	f.server.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.server.Start(); err != nil {
		return nil, fmt.Errorf("start %s server: %w", name, err)
	}
	if err := lab.WaitListen(ctx, f.server.Process.Pid, port, 10*time.Second); err != nil {
		f.server.Process.Kill()
		f.server.Wait()
		return nil, fmt.Errorf("start %s server: %w: %s", name, err, tail(f.sout.String(), 200))
	}
	args := []string{"netns", "exec", clientNS, "iperf3", "-c", serverIP, "-p", p, "-J",
		"-t", strconv.Itoa(int(d.Seconds())), "--connect-timeout", "5000"}
	if udp {
		f.kind = "iperf3-udp"
		args = append(args, "-u", "-b", iperfUDPRate, "-l", iperfUDPLen)
	} else {
		args = append(args, "-b", iperfTCPRate)
	}
	f.client = exec.Command("ip", args...)
	f.client.Stdout = &f.out
	f.client.Stderr = &f.out
	f.client.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := f.client.Start(); err != nil {
		f.server.Process.Kill()
		f.server.Wait()
		return nil, fmt.Errorf("start %s client: %w", name, err)
	}
	go func() { f.done <- f.client.Wait() }()
	return f, nil
}

// wait waits for the client to finish its run (up to grace past its
// planned end), stops the server and reads the client's JSON report.
// kill ends it early (the soak was interrupted).
func (f *iperfFlow) wait(grace time.Duration, kill <-chan struct{}) FlowResult {
	r := FlowResult{Name: f.name, Kind: f.kind}
	var err error
	select {
	case err = <-f.done:
	case <-kill:
		f.client.Process.Kill()
		<-f.done
		r.Err = "interrupted"
	case <-time.After(grace):
		f.client.Process.Kill()
		<-f.done
		r.Err = fmt.Sprintf("still running %v after its planned end", grace)
	}
	f.server.Process.Kill()
	f.server.Wait()
	if r.Err != "" {
		return r
	}
	rep, perr := parseIperf(f.out.Bytes())
	switch {
	case perr != nil:
		r.Err = fmt.Sprintf("%v (exit: %v)", perr, err)
	case rep.Error != "":
		r.Err = "iperf3: " + rep.Error
	case err != nil:
		r.Err = fmt.Sprintf("iperf3 exited: %v", err)
	}
	if r.Err != "" {
		return r
	}
	if f.kind == "iperf3-udp" {
		s := rep.End.Sum
		r.Sent, r.Received = s.Packets, s.Packets-s.LostPackets
		r.LossPct = s.LostPercent
		r.Detail = fmt.Sprintf("%.1f Mbit/s, %d datagrams lost", s.BitsPerSecond/1e6, s.LostPackets)
		return r
	}
	r.Detail = fmt.Sprintf("%.1f Mbit/s received, %d retransmits", rep.End.SumReceived.BitsPerSecond/1e6, rep.End.SumSent.Retransmits)
	if rep.End.SumReceived.Bytes == 0 {
		r.Err = "no byte received"
	}
	return r
}

// iperfReport is the part of `iperf3 -J` the soak reads.
type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		// Sum is UDP's client-side total with the receiver's loss count.
		Sum struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			Packets       int     `json:"packets"`
			LostPackets   int     `json:"lost_packets"`
			LostPercent   float64 `json:"lost_percent"`
		} `json:"sum"`
	} `json:"end"`
}

func parseIperf(out []byte) (iperfReport, error) {
	var r iperfReport
	// Anything before the JSON object (a warning) is not ours to parse.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("read iperf3 report: %w (output %q)", err, tail(string(out), 200))
	}
	return r, nil
}

// dialIn opens a TCP connection from inside the namespace at nsPath: the
// socket belongs to the namespace it was created in, so only the dial
// needs to run there.
func dialIn(ctx context.Context, nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netnsutil.Do(nsPath, func() error {
		d := net.Dialer{Timeout: timeout}
		var err error
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	return c, err
}

// probe is one HTTP path checked every probeInterval with a new
// connection each time (so every request is a new flow through the
// switch, and through NAT for the external host).
type probe struct {
	name   string
	ns     string
	url    string
	expect string // a string the body must contain; "" = any
	client *http.Client

	mu  sync.Mutex
	res ProbeResult
}

const (
	probeInterval = time.Second
	probeTimeout  = 3 * time.Second
)

func newProbe(name, ns, url, expect string) *probe {
	p := &probe{name: name, ns: ns, url: url, expect: expect, res: ProbeResult{Name: name}}
	p.client = &http.Client{
		Timeout: probeTimeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return dialIn(ctx, lab.NetnsPath(ns), addr, probeTimeout)
			},
		},
	}
	return p
}

// get makes one request and says why it failed, or nil.
func (p *probe) get(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	if p.expect != "" && !bytes.Contains(body, []byte(p.expect)) {
		return fmt.Errorf("body %q lacks %q", tail(string(body), 120), p.expect)
	}
	return nil
}

// run probes until ctx is done.
func (p *probe) run(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		err := p.get(ctx)
		if ctx.Err() != nil {
			return // a request cut short by the end is not a failure
		}
		p.mu.Lock()
		if err != nil {
			p.res.Failed++
			p.res.LastErr = fmt.Sprintf("%s: %v", time.Now().UTC().Format("15:04:05"), err)
		} else {
			p.res.OK++
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *probe) result() ProbeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

// httpGetOnce is one request from namespace ns, for the churner's check
// that a new pod answers.
func httpGetOnce(ctx context.Context, ns, url string) error {
	p := newProbe("", ns, url, "")
	return p.get(ctx)
}
