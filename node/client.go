package node

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
	"syscall"
	"time"

	"podnet/nat"
	"podnet/router"
	"podnet/router/bgp"
	vswitch "podnet/switch"
)

// SocketEnv names the environment variable that points the CLI at a
// daemon's socket (the lab sets it inside each node).
const SocketEnv = "PODNET_SOCKET"

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

func (c *Client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://podnet"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("podnet daemon is not running (no answer on %s)", c.socket)
		}
		return fmt.Errorf("podnet daemon at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("podnet daemon: %s", resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Status asks for the node's status.
func (c *Client) Status() (Status, error) {
	var s Status
	return s, c.do("GET", "/v1/status", nil, &s)
}

// Pods lists the node's pods.
func (c *Client) Pods() ([]PodInfo, error) {
	var p []PodInfo
	return p, c.do("GET", "/v1/pods", nil, &p)
}

// AddPod attaches a pod.
func (c *Client) AddPod(req AddPodRequest) (PodInfo, error) {
	var p PodInfo
	return p, c.do("POST", "/v1/pods", req, &p)
}

// DeletePod detaches and removes a pod.
func (c *Client) DeletePod(name string) error {
	return c.do("DELETE", "/v1/pods/"+name, nil, nil)
}

// Routes returns the node's route table.
func (c *Client) Routes() ([]router.Route, error) {
	var r []router.Route
	return r, c.do("GET", "/v1/routes", nil, &r)
}

// Ports returns per-port counters.
func (c *Client) Ports() ([]vswitch.PortStats, error) {
	var p []vswitch.PortStats
	return p, c.do("GET", "/v1/ports", nil, &p)
}

// BGPPeers returns the node's BGP sessions.
func (c *Client) BGPPeers() ([]bgp.PeerStatus, error) {
	var p []bgp.PeerStatus
	return p, c.do("GET", "/v1/bgp/peers", nil, &p)
}

// NATEntries returns the NAT connection table.
func (c *Client) NATEntries() ([]nat.Entry, error) {
	var e []nat.Entry
	return e, c.do("GET", "/v1/nat/entries", nil, &e)
}

// NATStats returns NAT counters.
func (c *Client) NATStats() (nat.Stats, error) {
	var s nat.Stats
	return s, c.do("GET", "/v1/nat/stats", nil, &s)
}

// Trace asks the daemon's switch what it would do with a packet.
func (c *Client) Trace(q vswitch.TraceQuery) (vswitch.TraceResult, error) {
	var out vswitch.TraceResult
	err := c.do("POST", "/v1/trace", q, &out)
	return out, err
}

// Capture streams a pcap of port (a pod, host, ipip, vxlan or underlay)
// until count packets (0: no limit), seconds (0: no limit) or Close.
func (c *Client) Capture(port string, count int, seconds float64, filter string) (io.ReadCloser, error) {
	v := url.Values{"port": {port}, "filter": {filter}}
	if count > 0 {
		v.Set("count", strconv.Itoa(count))
	}
	if seconds > 0 {
		v.Set("seconds", strconv.FormatFloat(seconds, 'f', -1, 64))
	}
	req, err := http.NewRequest("GET", "http://podnet/v1/capture?"+v.Encode(), nil)
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
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("podnet daemon: %s", resp.Status)
	}
	return resp.Body, nil
}
