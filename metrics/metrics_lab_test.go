package metrics_test

// A two-node lab whose daemons serve /metrics on loopback in their own
// namespaces: the test scrapes worker1, pings between pods, sends one
// packet the switch must drop (TTL 1), and scrapes again.
//
//	test-1 (worker1) ── ipip ── test-2 (worker2)
//	  worker1's daemon: --metrics-listen 127.0.0.1:9091

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"podnet/internal/netnsutil"
	"podnet/lab"
	"podnet/lab/labtest"
)

const metricsAddr = "127.0.0.1:9091"

// scrape GETs /metrics from inside the node's namespace and parses it.
func scrape(t *testing.T, l *lab.Lab, node string) map[string]*dto.MetricFamily {
	t.Helper()
	ns, err := l.Netns(node)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = netnsutil.Do(filepath.Join("/run/netns", ns), func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", node, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", node, err)
	}
	return fams
}

// value returns the sample of family name whose labels include want, and
// whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	v, ok := value(fams, name, want)
	if !ok {
		t.Fatalf("no %s%v in the scrape; families: %v", name, want, familyNames(fams))
	}
	return v
}

func familyNames(fams map[string]*dto.MetricFamily) string {
	var out []string
	for n := range fams {
		if strings.HasPrefix(n, "podnet_") {
			out = append(out, n)
		}
	}
	return strings.Join(out, " ")
}

func TestMetricsLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, DaemonArgs: []string{"--metrics-listen", metricsAddr}})
	ctx := context.Background()
	pod := map[string]string{"port": "test-1", "kind": "pod"}
	remote := l.PodIP("test-2")
	peer := l.NodeAddr("worker2").String()

	before := scrape(t, l, "worker1")
	if v := mustValue(t, before, "podnet_build_info", nil); v != 1 {
		t.Errorf("podnet_build_info = %v, want 1", v)
	}
	rx0 := mustValue(t, before, "podnet_port_rx_packets_total", pod)
	tx0 := mustValue(t, before, "podnet_port_tx_packets_total", pod)
	rxBytes0 := mustValue(t, before, "podnet_port_rx_bytes_total", pod)
	if _, ok := value(before, "podnet_port_drops_total", map[string]string{"port": "test-1", "reason": "ttl-exceeded"}); ok {
		t.Fatalf("ttl-exceeded drops on test-1 before any TTL-1 packet")
	}
	if v := mustValue(t, before, "podnet_ipam_addresses_in_use", nil); v != 1 {
		t.Errorf("podnet_ipam_addresses_in_use = %v on worker1 with one pod, want 1", v)
	}
	if v := mustValue(t, before, "podnet_ipam_blocks", nil); v < 1 {
		t.Errorf("podnet_ipam_blocks = %v, want at least one block for the pod", v)
	}
	if v := mustValue(t, before, "podnet_ipam_block_addresses", nil); v < 1 {
		t.Errorf("podnet_ipam_block_addresses = %v, want > 0", v)
	}
	mustValue(t, before, "podnet_nat_ports_total", nil)
	mustValue(t, before, "podnet_nat_ports_in_use", nil)
	mustValue(t, before, "podnet_nat_entries", map[string]string{"proto": "icmp"})
	mustValue(t, before, "podnet_nat_packet_path_connections_total", nil)
	if v := mustValue(t, before, "podnet_nat_packet_path_up", nil); v != 1 {
		t.Errorf("podnet_nat_packet_path_up = %v in a lab, want 1 (the packet path set up)", v)
	}

	const pings = 5
	out, err := l.Output(ctx, "test-1", "ping", "-c", fmt.Sprint(pings), "-i", "0.2", "-W", "2", remote.String())
	if err != nil {
		t.Fatalf("ping %s from test-1: %v\n%s", remote, err, out)
	}
	// One echo with TTL 1: the switch must drop it and answer time exceeded.
	l.Output(ctx, "test-1", "ping", "-c", "1", "-t", "1", "-W", "2", remote.String())

	after := scrape(t, l, "worker1")
	if rx := mustValue(t, after, "podnet_port_rx_packets_total", pod); rx < rx0+pings+1 {
		t.Errorf("test-1 rx packets %v -> %v, want at least %d more (pings and the TTL-1 echo)", rx0, rx, pings+1)
	}
	if tx := mustValue(t, after, "podnet_port_tx_packets_total", pod); tx < tx0+pings {
		t.Errorf("test-1 tx packets %v -> %v, want at least %d more (replies)", tx0, tx, pings)
	}
	if b := mustValue(t, after, "podnet_port_rx_bytes_total", pod); b < rxBytes0+pings*84 {
		t.Errorf("test-1 rx bytes %v -> %v, want at least %d more", rxBytes0, b, pings*84)
	}
	if v := mustValue(t, after, "podnet_port_drops_total", map[string]string{"port": "test-1", "kind": "pod", "reason": "ttl-exceeded"}); v != 1 {
		t.Errorf("test-1 ttl-exceeded drops = %v, want 1", v)
	}
	if _, ok := value(after, "podnet_port_rx_packets_total", map[string]string{"kind": "underlay"}); !ok {
		t.Errorf("no underlay (encapsulation) port in the scrape; families: %v", familyNames(after))
	}

	// The BGP mesh comes up on its own schedule: wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams := scrape(t, l, "worker1")
		if mustValue(t, fams, "podnet_bgp_speaker_up", nil) == 1 {
			if v, ok := value(fams, "podnet_bgp_session_established", map[string]string{"peer": peer}); ok && v == 1 {
				if s, ok := value(fams, "podnet_bgp_session_state", map[string]string{"peer": peer, "state": "Established"}); !ok || s != 1 {
					t.Errorf("podnet_bgp_session_state{peer=%s,state=Established} = %v, %v; want 1", peer, s, ok)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("BGP session with %s not Established in the metrics after 30s", peer)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
