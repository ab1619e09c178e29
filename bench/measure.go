package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"podnet/internal/netnsutil"
)

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/PID/stat
// times; 100 on every Linux architecture Go supports.
const clockTicks = 100

// daemonCPU returns the user+system CPU seconds of the processes pids
// (all their threads), summed.
func daemonCPU(pids []int) float64 {
	var ticks float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// comm (field 2) may hold spaces; the fields after it start
		// behind its closing parenthesis.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// f[0] is field 3 (state); utime and stime are fields 14 and 15.
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			ticks += u + st
		}
	}
	return ticks / clockTicks
}

// machineCPU returns the machine's system+softirq CPU seconds over all
// CPUs since boot: where the kernel spends forwarding packets.
func machineCPU() float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// cpu user nice system idle iowait irq softirq ...
		if len(fs) > 7 && fs[0] == "cpu" {
			sys, _ := strconv.ParseFloat(fs[3], 64)
			soft, _ := strconv.ParseFloat(fs[7], 64)
			return (sys + soft) / clockTicks
		}
	}
	return 0
}

// pingRTTs pings addr from netns ns count times, 10ms apart, and returns
// the round-trip times in µs, sorted.
func pingRTTs(ctx context.Context, ns, addr string, count int) ([]float64, error) {
	args := []string{"ping", "-n", "-c", strconv.Itoa(count), "-i", "0.01", "-W", "1", addr}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).Output()
	var rtts []float64
	for _, line := range strings.Split(string(out), "\n") {
		i := strings.Index(line, "time=")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i+len("time="):])
		if len(f) == 0 {
			continue
		}
		ms, perr := strconv.ParseFloat(f[0], 64)
		if perr == nil {
			rtts = append(rtts, ms*1000)
		}
	}
	if len(rtts) == 0 {
		return nil, fmt.Errorf("ping %s from %s: no replies: %v", addr, ns, err)
	}
	slices.Sort(rtts)
	return rtts, nil
}

// rrMessage is the size of a request and of its response.
const rrMessage = 64

// rrServer answers fixed-size requests with as many bytes, on port in
// netns ns, until closed.
type rrServer struct {
	ln    net.Listener
	conns connSet
	wg    sync.WaitGroup
}

func startRRServer(ns string, port uint16) (*rrServer, error) {
	s := &rrServer{}
	if err := netnsutil.Do(nsPath(ns), func() (err error) {
		s.ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		return nil, fmt.Errorf("request/response server in %s: %w", ns, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			if !s.conns.add(c) {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.conns.remove(c)
				buf := make([]byte, rrMessage)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s, nil
}

func (s *rrServer) Close() {
	s.ln.Close()
	s.conns.closeAll()
	s.wg.Wait()
}

// requestResponse opens one TCP connection from netns ns (a path; "" =
// this namespace) to dst and sends rrMessage-byte requests one after
// another for d, returning each round trip in µs, sorted.
func requestResponse(ctx context.Context, nsp string, dst netip.AddrPort, d time.Duration) ([]float64, error) {
	var c net.Conn
	if err := netnsutil.Do(nsp, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), 5*time.Second)
		return err
	}); err != nil {
		return nil, fmt.Errorf("request/response: connect to %s: %w", dst, err)
	}
	defer c.Close()
	buf := make([]byte, rrMessage)
	rtts := make([]float64, 0, 4096)
	end := time.Now().Add(d)
	c.SetDeadline(end.Add(5 * time.Second))
	for time.Now().Before(end) && ctx.Err() == nil {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			return nil, fmt.Errorf("request/response to %s: %w", dst, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, fmt.Errorf("request/response to %s: %w", dst, err)
		}
		rtts = append(rtts, float64(time.Since(t0).Nanoseconds())/1000)
	}
	if len(rtts) == 0 {
		return nil, fmt.Errorf("request/response to %s: no round trip completed", dst)
	}
	slices.Sort(rtts)
	return rtts, nil
}

// nsPath is the /run/netns path of a named namespace, or "" for "".
func nsPath(ns string) string {
	if ns == "" || strings.HasPrefix(ns, "/") {
		return ns
	}
	return "/run/netns/" + ns
}
