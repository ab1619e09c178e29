package node

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"podnet/capture"
	"podnet/nodeapi"
	vswitch "podnet/switch"
)

// The endpoints that let people look at the data path: trace (what the
// switch would do with a packet) and capture (copies of what crosses a
// port, or the underlay interface, as a pcapng stream).

// maxCapture bounds one capture, so a forgotten client cannot keep one
// running forever.
const maxCapture = time.Hour

// captureWriteTimeout is how long a capture waits for its client to take
// a write. A client that stops reading (`podnet capture pod | less`,
// paused) would otherwise hold the handler in a write, where neither
// maxCapture nor the client's context is looked at, and the port's
// capture with it. Tests shorten it; handlers that outlive a test read
// it still, hence atomic.
var captureWriteTimeout atomic.Int64 // nanoseconds

func init() { captureWriteTimeout.Store(int64(10 * time.Second)) }

func writeTimeout() time.Duration { return time.Duration(captureWriteTimeout.Load()) }

func (n *Node) registerInspect(mux *http.ServeMux) {
	mux.HandleFunc("POST "+nodeapi.PathTrace, func(w http.ResponseWriter, r *http.Request) {
		var q vswitch.TraceQuery
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			writeErr(w, badRequest("bad trace request: %v", err))
			return
		}
		res, err := n.sw.Trace(q)
		if err != nil {
			writeErr(w, badRequest("%v", err))
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET "+nodeapi.PathCapture, n.serveCapture)
}

// captureLimits reads a capture request's count (packets) and seconds,
// either absent or 0 for no limit but maxCapture. A value that does not
// parse, is negative, not finite, or over maxCapture is refused rather
// than taken as no limit (or, for seconds=1e300, as a duration that
// overflows to a negative one).
func captureLimits(q url.Values) (count int, limit time.Duration, err error) {
	if s := q.Get("count"); s != "" {
		if count, err = strconv.Atoi(s); err != nil || count < 0 {
			return 0, 0, badRequest("capture: count %q is not a number of packets (0 or more; 0: no limit)", s)
		}
	}
	limit = maxCapture
	if s := q.Get("seconds"); s != "" {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(secs) || secs < 0 || secs > maxCapture.Seconds() {
			return 0, 0, badRequest("capture: seconds %q is not a number of seconds from 0 to %g (0: the limit, %v)",
				s, maxCapture.Seconds(), maxCapture)
		}
		if secs > 0 {
			limit = time.Duration(secs * float64(time.Second))
		}
	}
	return count, limit, nil
}

// serveCapture streams a pcapng of port (a pod, host, ipip, vxlan, or
// "underlay": the underlay interface itself) until count packets, seconds,
// or the client going away. The filter is package capture's.
func (n *Node) serveCapture(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	port := q.Get("port")
	count, limit, err := captureLimits(q)
	if err != nil {
		writeErr(w, err)
		return
	}
	filter, err := capture.ParseFilter(q.Get("filter"))
	if err != nil {
		writeErr(w, badRequest("%v", err))
		return
	}
	deadline := time.Now().Add(limit)
	rc := http.NewResponseController(w)
	// flushed sends what write put in the response, or says it cannot.
	flushed := func(write func() error) bool {
		return rc.SetWriteDeadline(time.Now().Add(writeTimeout())) == nil &&
			write() == nil && rc.Flush() == nil
	}
	var pw *capture.Writer
	start := func(newWriter func(io.Writer) (*capture.Writer, error)) bool {
		w.Header().Set("Content-Type", "application/x-pcapng")
		w.Header().Set("Trailer", nodeapi.TrailerCaptureDropped+", "+nodeapi.TrailerCaptureEnded)
		return flushed(func() (err error) {
			w.WriteHeader(http.StatusOK)
			pw, err = newWriter(w)
			return err
		})
	}
	sent := 0
	emit := func(t time.Time, dir capture.Dir, data []byte, link capture.Link) bool {
		if !filter.Match(capture.Decode(data, link)) {
			return true
		}
		if !flushed(func() error { return pw.Write(t, dir, data) }) {
			return false
		}
		sent++
		return count <= 0 || sent < count
	}

	// net/http writes the last chunk and the trailers after the handler
	// returns, under the last write deadline set: renew it, or a port
	// quiet for captureWriteTimeout loses the end of the stream.
	defer func() { rc.SetWriteDeadline(time.Now().Add(writeTimeout())) }()

	if port == "underlay" {
		ifc, err := capture.OpenInterface(n.underlay)
		if err != nil {
			writeErr(w, err)
			return
		}
		defer ifc.Close()
		var stopped atomic.Bool
		go func() {
			select {
			case <-r.Context().Done():
			case <-n.stopping:
				stopped.Store(true)
			}
			ifc.Close()
		}()
		defer func() {
			if stopped.Load() {
				w.Header().Set(nodeapi.TrailerCaptureEnded, captureDaemonStopping)
			}
		}()
		if !start(func(w io.Writer) (*capture.Writer, error) {
			return capture.NewWireWriter(w, n.underlay, capture.Ethernet)
		}) {
			return
		}
		for {
			frame, err := ifc.Read(deadline)
			if err != nil || !emit(time.Now(), capture.Wire, frame, capture.Ethernet) {
				return
			}
		}
	}

	c, err := n.sw.StartCapture(port, 0)
	if err != nil {
		writeErr(w, badRequest("%v", err))
		return
	}
	ended := ""
	defer func() {
		c.Stop()
		if why := c.Ended(); why != "" {
			ended = why
		}
		w.Header().Set(nodeapi.TrailerCaptureDropped, strconv.FormatUint(c.Dropped(), 10))
		w.Header().Set(nodeapi.TrailerCaptureEnded, ended)
		n.log.Info("capture ended", "port", port, "packets", sent, "dropped", c.Dropped(), "ended", ended)
	}()
	link := capture.Ethernet
	if port == "host" || port == vswitch.HostTUNName || port == "ipip" || port == "vxlan" {
		link = capture.IPv4
	}
	if !start(func(w io.Writer) (*capture.Writer, error) { return capture.NewPortWriter(w, port, link) }) {
		return
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case p, ok := <-c.C:
			if !ok {
				return
			}
			dir := capture.In
			if p.Out {
				dir = capture.Out
			}
			more := emit(p.Time, dir, p.Data, link)
			c.Release(p)
			if !more {
				return
			}
		case <-timer.C:
			return
		case <-r.Context().Done():
			return
		case <-n.stopping:
			ended = captureDaemonStopping
			return
		}
	}
}

// captureDaemonStopping is the end reason of a capture cut short because
// the daemon is stopping.
const captureDaemonStopping = "the daemon is stopping"
