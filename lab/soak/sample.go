package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// daemonProbe reads one daemon's resources: RSS and open fds from /proc,
// goroutines from the goroutine profile its API socket serves (the
// daemon's own pprof endpoint, so nothing is added to the daemon for the
// soak).
type daemonProbe struct {
	node   string
	pid    int
	client *http.Client
}

func newDaemonProbe(node string, pid int, socket string) *daemonProbe {
	return &daemonProbe{node: node, pid: pid, client: &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			// One reading every few seconds: a kept connection would be
			// one more goroutine pair in the daemon we are counting.
			DisableKeepAlives: true,
		},
	}}
}

// read takes one sample.
func (p *daemonProbe) read(at time.Duration) (Sample, error) {
	s := Sample{At: at}
	var err error
	if s.RSSKiB, err = readRSS(p.pid); err != nil {
		return s, err
	}
	if s.FDs, err = countFDs(p.pid); err != nil {
		return s, err
	}
	if s.Goroutines, err = p.goroutines(); err != nil {
		return s, err
	}
	if s.HeapInuseKiB, err = p.heapInuse(); err != nil {
		return s, err
	}
	return s, nil
}

// get fetches path from the daemon's API.
func (p *daemonProbe) get(path string) ([]byte, error) {
	resp, err := p.client.Get("http://podnet" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, nil
}

// heapInuse reads the Go heap's in-use bytes from the memory statistics
// that end the daemon's debug=1 heap profile: beside RSS it tells a heap
// that holds more objects from memory the runtime has not returned yet.
func (p *daemonProbe) heapInuse() (int64, error) {
	b, err := p.get("/debug/pprof/heap?debug=1")
	if err != nil {
		return 0, fmt.Errorf("read heap: %w", err)
	}
	return parseHeapInuse(string(b))
}

// parseHeapInuse finds "# HeapInuse = 101089280" and returns KiB.
func parseHeapInuse(profile string) (int64, error) {
	for _, line := range strings.Split(profile, "\n") {
		if rest, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read heap: %w", err)
			}
			return n / 1024, nil
		}
	}
	return 0, fmt.Errorf("read heap: no HeapInuse in the heap profile")
}

// saveProfiles writes the daemon's heap profile (for go tool pprof, with
// -diff_base between two of them) and its goroutine stacks to dir as
// NODE-WHAT.heap.pb.gz and NODE-WHAT.goroutines.txt.
func (p *daemonProbe) saveProfiles(dir, what string) error {
	for _, f := range []struct{ path, file string }{
		{"/debug/pprof/heap", p.node + "-" + what + ".heap.pb.gz"},
		{"/debug/pprof/goroutine?debug=1", p.node + "-" + what + ".goroutines.txt"},
	} {
		b, err := p.get(f.path)
		if err != nil {
			return fmt.Errorf("save profile of %s: %w", p.node, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.file), b, 0o644); err != nil {
			return fmt.Errorf("save profile of %s: %w", p.node, err)
		}
	}
	return nil
}

// readRSS returns VmRSS of pid in KiB.
func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	defer f.Close()
	return parseVmRSS(f)
}

// parseVmRSS finds "VmRSS:  12345 kB" in a /proc/PID/status.
func parseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("read RSS: odd line %q", sc.Text())
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("read RSS: no VmRSS line")
}

func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("count fds: %w", err)
	}
	return len(ents), nil
}

// goroutines asks the daemon's pprof for its goroutine count.
func (p *daemonProbe) goroutines() (int, error) {
	b, err := p.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, fmt.Errorf("read goroutines: %w", err)
	}
	return parseGoroutineTotal(bytes.NewReader(b))
}

// parseGoroutineTotal reads the first line of a debug=1 goroutine
// profile, "goroutine profile: total 42".
func parseGoroutineTotal(r io.Reader) (int, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		return 0, fmt.Errorf("read goroutines: %w", err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("read goroutines: unexpected profile header %q", line)
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return 0, fmt.Errorf("read goroutines: %w", err)
	}
	return n, nil
}
