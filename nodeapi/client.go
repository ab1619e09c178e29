package nodeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"podnet/router"
)

// DefaultClientSocket is $PODNET_SOCKET, else DefaultSocket.
func DefaultClientSocket() string {
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	return DefaultSocket
}

// Client talks to a node daemon over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	return &Client{
		socket: socket,
		hc: &http.Client{
			Timeout: 60 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				},
			},
		},
	}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://podnet"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			// A daemon that binds its socket before it serves (while it
			// starts) or hangs takes the request and never answers.
			return fmt.Errorf("podnet daemon at %s did not answer in time: %w", c.socket, ctx.Err())
		}
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("podnet daemon is not running (no answer on %s)", c.socket)
		}
		if wentAway(err) {
			if method == "GET" {
				return fmt.Errorf("podnet daemon at %s went away before answering (it stopped or crashed)", c.socket)
			}
			// The request may have been done, in part or in full: the
			// restarted daemon finishes or rolls back what it was doing.
			return fmt.Errorf("podnet daemon at %s went away before answering (it stopped or crashed); the request may or may not have taken effect: once the daemon runs again, check `podnet pod list`", c.socket)
		}
		return fmt.Errorf("podnet daemon at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return &StatusError{Code: resp.StatusCode, Msg: e.Error, Field: e.Field}
		}
		return &StatusError{Code: resp.StatusCode, Msg: "podnet daemon: " + resp.Status}
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Errors a StatusError matches with errors.Is, by its code.
var (
	// ErrNotFound: the daemon has no such pod (404), or no longer: it is
	// being deleted and the daemon finishes that itself (410).
	ErrNotFound = errors.New("not found")
	// ErrBusy: the pod is being added; try again (409).
	ErrBusy = errors.New("busy")
	// ErrUnavailable: the daemon cannot do it while its datastore does
	// not answer; try again once it does (503).
	ErrUnavailable = errors.New("unavailable")
	// ErrInvalidPool: the request names a pool that does not exist or
	// gives no addresses (400 about FieldPool).
	ErrInvalidPool = errors.New("invalid pool")
)

// StatusError is the daemon's answer to a request it refused: the HTTP
// status, the daemon's message, which is what Error says, and the
// request's field at fault, if one is.
type StatusError struct {
	Code  int
	Msg   string
	Field string
}

func (e *StatusError) Error() string { return e.Msg }

func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		// A daemon older than this client said 400 "pod NAME not found".
		return e.Code == http.StatusNotFound || e.Code == http.StatusGone ||
			(e.Code == http.StatusBadRequest && strings.HasSuffix(e.Msg, " not found"))
	case ErrBusy:
		return e.Code == http.StatusConflict
	case ErrUnavailable:
		return e.Code == http.StatusServiceUnavailable
	case ErrInvalidPool:
		return e.Code == http.StatusBadRequest && e.Field == FieldPool
	}
	return false
}

// Get reads the JSON answer of a GET on path (one of the Path constants)
// into out. It serves the answers whose types belong to the daemon's
// packages (switch ports, BGP sessions, NAT), which this package does not
// import.
func (c *Client) Get(path string, out any) error {
	return c.do(context.Background(), "GET", path, nil, out)
}

// Status asks for the node's status.
func (c *Client) Status() (Status, error) {
	return c.StatusContext(context.Background())
}

// StatusContext asks for the node's status, giving up when ctx ends.
func (c *Client) StatusContext(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, "GET", PathStatus, nil, &s)
}

// Pods lists the node's pods, sorted by name.
func (c *Client) Pods() ([]PodInfo, error) {
	var p []PodInfo
	return p, c.Get(PathPods, &p)
}

// AddPod attaches a pod.
func (c *Client) AddPod(req AddPodRequest) (PodInfo, error) {
	var p PodInfo
	return p, c.do(context.Background(), "POST", PathPods, req, &p)
}

// DeletePod detaches and removes a pod.
func (c *Client) DeletePod(name string) error {
	return c.do(context.Background(), "DELETE", PathPod+name, nil, nil)
}

// Routes returns the node's route table.
func (c *Client) Routes() ([]router.Route, error) {
	var r []router.Route
	return r, c.Get(PathRoutes, &r)
}

// Post sends in as JSON to path and reads the JSON answer into out, for
// requests whose types belong to the daemon's packages (PathTrace).
func (c *Client) Post(path string, in, out any) error {
	return c.do(context.Background(), "POST", path, in, out)
}

// CaptureStream is a capture's pcapng stream; once it has been read to
// its end, Dropped and Ended say what the daemon reported.
type CaptureStream struct {
	io.ReadCloser
	resp *http.Response
}

// Dropped is how many packets the capture lost (TrailerCaptureDropped);
// 0 before the end of the stream.
func (s *CaptureStream) Dropped() uint64 {
	n, _ := strconv.ParseUint(s.resp.Trailer.Get(TrailerCaptureDropped), 10, 64)
	return n
}

// Ended says why the daemon ended the capture early (TrailerCaptureEnded),
// or "".
func (s *CaptureStream) Ended() string { return s.resp.Trailer.Get(TrailerCaptureEnded) }

// Capture streams a pcapng of port (a pod, host, ipip, vxlan or underlay)
// until count packets (0: no limit), seconds (0: the daemon's limit) or
// Close. The daemon refuses other values it cannot take, negative ones
// among them.
func (c *Client) Capture(port string, count int, seconds float64, filter string) (*CaptureStream, error) {
	v := url.Values{"port": {port}, "filter": {filter}}
	if count != 0 {
		v.Set("count", strconv.Itoa(count))
	}
	if seconds != 0 {
		v.Set("seconds", strconv.FormatFloat(seconds, 'f', -1, 64))
	}
	req, err := http.NewRequest("GET", "http://podnet"+PathCapture+"?"+v.Encode(), nil)
	if err != nil {
		return nil, err
	}
	// A capture runs as long as it runs: no client timeout.
	hc := &http.Client{Transport: c.hc.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("podnet daemon at %s: %w", c.socket, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("podnet daemon: %s", resp.Status)
	}
	return &CaptureStream{ReadCloser: resp.Body, resp: resp}, nil
}

// wentAway says whether err is the connection ending before the answer:
// the daemon died (or was stopped) while serving the request.
func wentAway(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
