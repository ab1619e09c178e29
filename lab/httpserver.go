package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// PageText is the body every lab pod serves for GET /, whether nginx or
// the built-in server answers: "pod test-1 on worker1 (192.168.1.2)\n".
func PageText(pod, node string, ip netip.Addr) string {
	return fmt.Sprintf("pod %s on %s (%s)\n", pod, node, ip)
}

// patternPeriod is the period of the /bytes pattern. A prime that does
// not divide any buffer or segment size makes a lost, duplicated or
// reordered chunk show up as a mismatch.
const patternPeriod = 251

// MaxBytes caps GET /bytes?n=N (1 TiB).
const MaxBytes = 1 << 40

// PatternByte is byte i of the deterministic stream GET /bytes?n=N serves.
func PatternByte(i int64) byte { return byte(i % patternPeriod) }

// FillPattern fills b with the pattern bytes starting at stream offset off.
func FillPattern(b []byte, off int64) {
	p := int(off % patternPeriod)
	for i := range b {
		b[i] = byte(p)
		if p++; p == patternPeriod {
			p = 0
		}
	}
}

// ServeConfig configures the built-in pod HTTP server.
type ServeConfig struct {
	// Pod is the pod's name, shown on the page. Required.
	Pod string
	// Node is the pod's node, shown on the page. Required.
	Node string
	// IP is the pod's address shown on the page. Zero = the first
	// non-loopback IPv4 address of the namespace.
	IP netip.Addr
	// Addr is the listen address. "" = ":80".
	Addr string
	// AccessLog, when set, gets one line per request: client address,
	// method, path. The external host's log shows NAT at work: every
	// client is a node address, never a pod's.
	AccessLog io.Writer
}

// Handler returns the pod page handler: GET / answers PageText,
// GET /bytes?n=N streams N bytes of the PatternByte stream, and POST
// /check checks that a body is that stream.
func Handler(cfg ServeConfig) http.Handler {
	page := PageText(cfg.Pod, cfg.Node, cfg.IP)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, fmt.Sprintf("bad n %q: want 0..%d", r.URL.Query().Get("n"), int64(MaxBytes)), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		// One buffer that is a whole number of periods: every chunk
		// starts at phase 0, so it is filled once and written as is.
		buf := make([]byte, patternPeriod*256)
		FillPattern(buf, 0)
		for n > 0 {
			c := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:c]); err != nil {
				return
			}
			n -= c
		}
	})
	// POST /check reads the body and answers "ok N" when it is the first
	// N bytes of the PatternByte stream, else where it first differs: an
	// upload checked end to end.
	mux.HandleFunc("POST /check", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		got, want := make([]byte, 1<<16), make([]byte, 1<<16)
		var off int64
		for {
			k, err := io.ReadFull(r.Body, got)
			if k > 0 {
				FillPattern(want[:k], off)
				for i := range k {
					if got[i] != want[i] {
						fmt.Fprintf(w, "differs at byte %d\n", off+int64(i))
						return
					}
				}
				off += int64(k)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				fmt.Fprintf(w, "read failed after %d bytes: %v\n", off, err)
				return
			}
		}
		fmt.Fprintf(w, "ok %d\n", off)
	})
	// GET /whoami answers with the client address the server sees.
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, r.RemoteAddr)
	})
	if cfg.AccessLog == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(cfg.AccessLog, "%s %s %s %s\n", time.Now().Format(time.RFC3339), r.RemoteAddr, r.Method, r.URL.Path)
		mux.ServeHTTP(w, r)
	})
}

// ServeHTTP runs the built-in pod HTTP server until ctx is done. It backs
// the hidden `podnet lab serve-http`.
func ServeHTTP(ctx context.Context, cfg ServeConfig) error {
	if cfg.Pod == "" || cfg.Node == "" {
		return errors.New("serve http: Pod and Node are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":80"
	}
	if !cfg.IP.IsValid() {
		cfg.IP = firstIPv4()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve http for pod %s: %w", cfg.Pod, err)
	}
	srv := &http.Server{Handler: Handler(cfg), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http for pod %s: %w", cfg.Pod, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-errc
		return nil
	}
}

// firstIPv4 returns the first non-loopback IPv4 address of this namespace,
// or the zero Addr.
func firstIPv4() netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}
