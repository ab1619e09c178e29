package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"podnet/bench/udpgen"
	"podnet/internal/netnsutil"
)

// Ports of `podnet bench pair --server`, besides rrPort and udpSinkPort.
const (
	PairControlPort = 5310
	pairBulkPort    = 5330
)

// ServePair runs the server end of `podnet bench pair` in the network
// namespace named netns ("" = this one) until ctx ends: a control port
// (PairControlPort) through which the client drives the UDP sink and
// reads this host's CPU counters, a bulk TCP sink, the request/response
// echo and the UDP sink.
func ServePair(ctx context.Context, netns string, log io.Writer) error {
	var ctl, bulk net.Listener
	if err := netnsutil.Do(nsPath(netns), func() (err error) {
		if ctl, err = net.Listen("tcp4", fmt.Sprintf(":%d", PairControlPort)); err != nil {
			return err
		}
		bulk, err = net.Listen("tcp4", fmt.Sprintf(":%d", pairBulkPort))
		return err
	}); err != nil {
		if ctl != nil {
			ctl.Close()
		}
		return fmt.Errorf("bench pair server: listen: %w", err)
	}
	rr, err := startRRServer(netns, rrPort)
	if err != nil {
		ctl.Close()
		bulk.Close()
		return err
	}
	sink, err := udpgen.Listen(nsPath(netns), udpSinkPort, udpSinkSocks)
	if err != nil {
		ctl.Close()
		bulk.Close()
		rr.Close()
		return err
	}
	var wg sync.WaitGroup
	var conns connSet
	wg.Add(2)
	go func() { defer wg.Done(); serveBulk(bulk, &conns) }()
	go func() { defer wg.Done(); serveControl(ctl, &conns, sink, log) }()
	if log != nil {
		fmt.Fprintf(log, "bench pair server: control :%d, bulk TCP :%d, request/response :%d, UDP sink :%d\n",
			PairControlPort, pairBulkPort, rrPort, udpSinkPort)
	}
	<-ctx.Done()
	ctl.Close()
	bulk.Close()
	conns.closeAll()
	rr.Close()
	sink.Close()
	wg.Wait()
	return nil
}

// serveBulk counts the bytes of each connection and, when the client
// has finished sending, answers with the count (8 bytes, big endian).
func serveBulk(ln net.Listener, conns *connSet) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil || !conns.add(c) {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(c)
			n, _ := io.Copy(io.Discard, c)
			binary.Write(c, binary.BigEndian, uint64(n))
		}()
	}
}

// serveControl answers one command per line: "begin RUN" (start counting
// a UDP run) -> "ok", "count" -> packets of the run, "cpu" -> this
// host's podnet daemon CPU seconds and machine system+softirq seconds.
func serveControl(ln net.Listener, conns *connSet, sink *udpgen.Sink, log io.Writer) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil || !conns.add(c) {
			return
		}
		if log != nil {
			fmt.Fprintf(log, "bench pair server: client %s\n", c.RemoteAddr())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(c)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				var reply string
				switch {
				case len(f) == 2 && f[0] == "begin":
					run, err := strconv.ParseUint(f[1], 10, 32)
					if err != nil {
						reply = "error bad run"
						break
					}
					sink.Begin(uint32(run))
					reply = "ok"
				case len(f) == 1 && f[0] == "count":
					reply = strconv.FormatUint(sink.Received(), 10)
				case len(f) == 1 && f[0] == "cpu":
					reply = fmt.Sprintf("%f %f", daemonCPU(podnetDaemons()), machineCPU())
				default:
					reply = "error unknown command"
				}
				if _, err := fmt.Fprintln(c, reply); err != nil {
					return
				}
			}
		}()
	}
}

// podnetDaemons finds this host's `podnet daemon` processes.
func podnetDaemons() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if len(argv) > 1 && filepath.Base(argv[0]) == "podnet" && argv[1] == "daemon" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pairControl is the client side of the control connection; it counts
// UDP runs on the server for udpgen.Search.
type pairControl struct {
	c  net.Conn
	rd *bufio.Reader
}

func (p *pairControl) call(cmd string) (string, error) {
	p.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(p.c, cmd); err != nil {
		return "", fmt.Errorf("bench pair control %q: %w", cmd, err)
	}
	line, err := p.rd.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("bench pair control %q: %w", cmd, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "error") {
		return "", fmt.Errorf("bench pair control %q: server: %s", cmd, line)
	}
	return line, nil
}

func (p *pairControl) Begin(run uint32) error {
	_, err := p.call(fmt.Sprintf("begin %d", run))
	return err
}

func (p *pairControl) Count() (uint64, error) {
	s, err := p.call("count")
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(s, 10, 64)
}

// cpu returns the server's daemon and machine CPU seconds.
func (p *pairControl) cpu() (daemon, machine float64, err error) {
	s, err := p.call("cpu")
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(s, "%f %f", &daemon, &machine); err != nil {
		return 0, 0, fmt.Errorf("bench pair control cpu: %q: %w", s, err)
	}
	return daemon, machine, nil
}

// PairConfig is the client end of `podnet bench pair`.
type PairConfig struct {
	// Server is the address of the pod running `podnet bench pair --server`.
	Server netip.Addr
	// Netns is the client pod's namespace name (ip netns); "" = this one.
	Netns string
	// Rounds, Seconds, Payloads and Quick as in Config.
	Rounds   int
	Seconds  int
	Payloads []int
	Quick    bool
	Progress io.Writer
	Command  string
}

// RunPair measures the path from this pod to the server pod, on two
// real hosts: bulk TCP (its own stream, so that neither host needs
// iperf3), ping, TCP request/response and the UDP rate search, with the
// CPU of the podnet daemons on both hosts.
func RunPair(ctx context.Context, pc PairConfig) (*Report, error) {
	cfg := Config{Rounds: pc.Rounds, Seconds: pc.Seconds, Payloads: pc.Payloads, Quick: pc.Quick, Command: pc.Command,
		Scenarios: []string{ScenarioSameNode}}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if !pc.Server.Is4() {
		return nil, fmt.Errorf("bench pair: server address %v: want IPv4", pc.Server)
	}
	var c net.Conn
	if err := netnsutil.Do(nsPath(pc.Netns), func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(pc.Server, PairControlPort).String(), 5*time.Second)
		return err
	}); err != nil {
		return nil, fmt.Errorf("bench pair: connect to the server's control port (is `podnet bench pair --server` running there?): %w", err)
	}
	defer c.Close()
	ctl := &pairControl{c: c, rd: bufio.NewReader(c)}
	start := time.Now()
	rep := &Report{Schema: SchemaVersion, Meta: NewMeta(cfg), Skipped: []Skipped{}}
	local := podnetDaemons()
	source := CPUDaemon
	rd, _, err := ctl.cpu()
	if err != nil {
		return nil, err
	}
	if len(local) == 0 && rd == 0 {
		source = CPUMachine // no podnet daemon on either host: count the kernel's time
	}
	cpu := func() float64 {
		d, m, err := ctl.cpu()
		if err != nil {
			return math.NaN()
		}
		if source == CPUDaemon {
			return d + daemonCPU(local)
		}
		return m + machineCPU()
	}
	name := fmt.Sprintf("pair to %s", pc.Server)
	sp := pathSpec{Path: Path{Name: name, Scenario: ScenarioPair, Kind: KindPodnet, CPUSource: source}}
	cfg.Streams = []int{1}
	pr := &progress{w: pc.Progress, start: start, total: cfg.Rounds * (3 + len(cfg.Payloads))}
	d := newSamples(cfg.Rounds)
	dst := func(port int) netip.AddrPort { return netip.AddrPortFrom(pc.Server, uint16(port)) }
	for r := 0; r < cfg.Rounds; r++ {
		fail := func(what string, err error) string {
			d.errs = append(d.errs, fmt.Sprintf("round %d: %s: %v", r+1, what, err))
			return "FAILED: " + firstLine(err.Error())
		}
		c0 := cpu()
		gbps, err := bulkTCP(ctx, nsPath(pc.Netns), dst(pairBulkPort), time.Duration(cfg.Seconds)*time.Second)
		line := ""
		if err != nil {
			line = fail("tcp", err)
		} else {
			series(d.tcpGbps, 1, cfg.Rounds)[r] = gbps
			if gbps > 0 {
				series(d.tcpCPU, 1, cfg.Rounds)[r] = (cpu() - c0) / (gbps * float64(cfg.Seconds))
			}
			line = fmt.Sprintf("%.2f Gbit/s", gbps)
		}
		pr.step(r, cfg.Rounds, name, "tcp x1", line)
		if rtts, err := pingRTTs(ctx, pc.Netns, pc.Server.String(), cfg.pingCount()); err != nil {
			pr.step(r, cfg.Rounds, name, "ping", fail("ping", err))
		} else {
			for i, q := range []float64{0.5, 0.9, 0.99} {
				d.ping[i][r] = percentile(rtts, q)
			}
			pr.step(r, cfg.Rounds, name, "ping", fmt.Sprintf("p50 %.0f µs, p99 %.0f µs", d.ping[0][r], d.ping[2][r]))
		}
		if rtts, err := requestResponse(ctx, nsPath(pc.Netns), dst(rrPort), cfg.rrDuration()); err != nil {
			pr.step(r, cfg.Rounds, name, "tcp rr", fail("tcp request/response", err))
		} else {
			for i, q := range []float64{0.5, 0.9, 0.99} {
				d.rr[i][r] = percentile(rtts, q)
			}
			pr.step(r, cfg.Rounds, name, "tcp rr", fmt.Sprintf("p50 %.0f µs, p99 %.0f µs", d.rr[0][r], d.rr[2][r]))
		}
		for _, pl := range cfg.Payloads {
			what := fmt.Sprintf("udp %dB", pl)
			sc := cfg.search()
			sc.Send = udpgen.SendConfig{Netns: nsPath(pc.Netns), Dst: dst(udpSinkPort), Payload: pl, Sockets: udpSendSocks}
			sc.CPU = cpu
			res, err := udpgen.Search(ctx, ctl, sc, runSeq.Add(16)*16)
			switch {
			case err != nil:
				pr.step(r, cfg.Rounds, name, what, fail(what, err))
			case res.Best.Sent == 0:
				pr.step(r, cfg.Rounds, name, what, fail(what, errors.New("no rate with under 1 % loss")))
			default:
				b := res.Best
				series(d.udpRate, pl, cfg.Rounds)[r] = b.RecvPPS
				series(d.udpLoss, pl, cfg.Rounds)[r] = b.LossPct
				if b.Recv > 0 {
					series(d.udpCPU, pl, cfg.Rounds)[r] = b.CPUSeconds / (float64(b.Recv) / 1e6)
				}
				d.udpGenBound[pl] = d.udpGenBound[pl] || res.GeneratorBound
				pr.step(r, cfg.Rounds, name, what, fmt.Sprintf("%.0f pps at %.2f%% loss", b.RecvPPS, b.LossPct))
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	p := sp.Path
	p.PodMTUBytes = linkMTU(ctx, pc.Netns, "eth0")
	summarise(&cfg, &p, d)
	for i := range p.TCP {
		// Not iperf3: no retransmit count.
		p.TCP[i].Retransmits = NewStat(nil)
	}
	rep.Paths = []Path{p}
	rep.Meta.DurationSeconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// bulkTCP sends as fast as it can on one connection for d and returns
// the rate the server counted, in Gbit/s.
func bulkTCP(ctx context.Context, nsp string, dst netip.AddrPort, d time.Duration) (float64, error) {
	var c net.Conn
	if err := netnsutil.Do(nsp, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), 5*time.Second)
		return err
	}); err != nil {
		return 0, fmt.Errorf("bulk TCP: connect to %s: %w", dst, err)
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	start := time.Now()
	end := start.Add(d)
	c.SetWriteDeadline(end)
	for time.Now().Before(end) && ctx.Err() == nil {
		if _, err := c.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return 0, fmt.Errorf("bulk TCP to %s: %w", dst, err)
		}
	}
	c.SetWriteDeadline(time.Time{})
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, fmt.Errorf("bulk TCP to %s: %w", dst, err)
	}
	// The server answers once it has read everything, so the time to
	// the answer covers the bytes still in flight.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var n uint64
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return 0, fmt.Errorf("bulk TCP to %s: read the server's count: %w", dst, err)
	}
	return float64(n) * 8 / time.Since(start).Seconds() / 1e9, nil
}
