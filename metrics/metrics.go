// Package metrics serves a node's counters to Prometheus. Every value is
// read from its owner (the switch's ports, NAT, the BGP speaker, the
// control loop's IPAM view) when a scrape comes in, so nothing is counted
// twice and nothing is kept here between scrapes.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"podnet/internal/buildinfo"
	"podnet/nat"
	"podnet/router/bgp"
	vswitch "podnet/switch"
)

// Path is where the metrics are served.
const Path = "/metrics"

// bgpTimeout bounds the BGP speaker's answer during a scrape.
const bgpTimeout = 2 * time.Second

// IPAM is what this node holds of the address space.
type IPAM struct {
	// Blocks is the number of blocks affine to the node.
	Blocks int
	// BlockAddresses is how many addresses those blocks hold.
	BlockAddresses int
	// InUse is the number of pod addresses the node has assigned.
	InUse int
}

// Source says where each group of metrics comes from. A nil func leaves
// its group out. The funcs are called on every scrape, possibly
// concurrently, and must not block on I/O that can hang (the datastore):
// they read counters and cached views.
type Source struct {
	Ports func() []vswitch.PortStats
	NAT   func() nat.Stats
	// BGP reports the speaker's peers; an error (no speaker) reports
	// podnet_bgp_speaker_up 0 and no peers.
	BGP func(ctx context.Context) ([]bgp.PeerStatus, error)
	// IPAM reports the node's share; false leaves the IPAM metrics out
	// (nothing known yet).
	IPAM func() (IPAM, bool)
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("podnet_"+name, help, labels, nil)
}

var (
	descBuild = desc("build_info", "Always 1; the labels say which podnet build this is.", "version", "commit", "goversion")

	descRxPackets = desc("port_rx_packets_total", "Frames the switch read from the port.", "port", "kind")
	descRxBytes   = desc("port_rx_bytes_total", "Bytes the switch read from the port.", "port", "kind")
	descTxPackets = desc("port_tx_packets_total", "Frames the switch wrote to the port.", "port", "kind")
	descTxBytes   = desc("port_tx_bytes_total", "Bytes the switch wrote to the port.", "port", "kind")
	descGSO       = desc("port_gso_frames_total", "Segmentation-offload superframes read from the port.", "port", "kind")
	descTxSuper   = desc("port_tx_superframes_total", "Superframes a tunnel sent whole for the kernel to segment (VXLAN through podnetvx0, IP-in-IP through podnetipip0).", "port", "kind")
	descPolled    = desc("port_polled_batches_total", "Batches of a pod's packets read by polling rather than after a wake-up (reply polling).", "port", "kind")
	descReaderRx  = desc("port_reader_rx_packets_total", "Packets each reader of a port read, for ports with several (a tunnel with several receive sockets).", "port", "kind", "reader")
	descICMPErr   = desc("port_icmp_errors_total", "ICMP errors the switch sent for packets from the port.", "port", "kind")
	descNATPkts   = desc("port_nat_packets_total", "Packets from the port handed to NAT outgoing.", "port", "kind")
	descECNCE     = desc("port_ecn_ce_packets_total", "Packets from other nodes whose outer header a router on the underlay marked CE (congestion), passed on marked.", "port", "kind")
	descPortDrops = desc("port_drops_total", "Packets from the port the switch dropped, by reason; queue-full: those the kernel dropped before the switch read them.", "port", "kind", "reason")

	descNATEntries = desc("nat_entries", "Flows in the NAT table, by protocol.", "proto")
	descNATInUse   = desc("nat_ports_in_use", "Local TCP and UDP ports held by NAT flows.")
	descNATTotal   = desc("nat_ports_total", "Local TCP and UDP ports NAT draws from.")
	descNATConns   = desc("nat_connections_total", "Flows ever admitted to the NAT table.")
	descNATPkConns = desc("nat_packet_path_connections_total", "TCP connections NAT outgoing carried on its packet path (rewritten packets the kernel forwards).")
	descNATPkPath  = desc("nat_packet_path_up", "1 while new NAT outgoing TCP connections take the packet path, 0 while they go through the netstack.")
	descNATDrops   = desc("nat_drops_total", "Packets and flows NAT refused, by reason; queue-full: replies the kernel dropped before NAT read them.", "reason")

	descBGPUp    = desc("bgp_speaker_up", "1 when the node's BGP speaker is running.")
	descBGPState = desc("bgp_session_state", "1 for the BGP session's current FSM state (Idle, Connect, Active, OpenSent, OpenConfirm, Established).", "peer", "type", "state")
	descBGPEst   = desc("bgp_session_established", "1 when the BGP session is Established, else 0.", "peer", "type")
	descBGPSince = desc("bgp_session_state_since_seconds", "Unix time the session entered its current state.", "peer", "type")

	descBlocks      = desc("ipam_blocks", "IPAM blocks affine to this node.")
	descBlockAddrs  = desc("ipam_block_addresses", "Addresses in the IPAM blocks affine to this node.")
	descAddrsInUse  = desc("ipam_addresses_in_use", "Pod addresses this node has assigned.")
	allDescriptions = []*prometheus.Desc{
		descBuild, descRxPackets, descRxBytes, descTxPackets, descTxBytes, descGSO, descTxSuper, descPolled, descReaderRx, descICMPErr, descNATPkts, descECNCE, descPortDrops,
		descNATEntries, descNATInUse, descNATTotal, descNATConns, descNATPkConns, descNATPkPath, descNATDrops,
		descBGPUp, descBGPState, descBGPEst, descBGPSince,
		descBlocks, descBlockAddrs, descAddrsInUse,
	}
)

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src   Source
	build buildinfo.Info
}

// NewCollector returns a collector reading src at scrape time.
func NewCollector(src Source) *Collector {
	return &Collector{src: src, build: buildinfo.Get()}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescriptions {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, c.build.Version, c.build.Commit, c.build.GoVersion)
	if c.src.Ports != nil {
		collectPorts(ch, c.src.Ports())
	}
	if c.src.NAT != nil {
		collectNAT(ch, c.src.NAT())
	}
	if c.src.BGP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
		peers, err := c.src.BGP(ctx)
		cancel()
		collectBGP(ch, peers, err)
	}
	if c.src.IPAM != nil {
		if u, ok := c.src.IPAM(); ok {
			ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(u.Blocks))
			ch <- prometheus.MustNewConstMetric(descBlockAddrs, prometheus.GaugeValue, float64(u.BlockAddresses))
			ch <- prometheus.MustNewConstMetric(descAddrsInUse, prometheus.GaugeValue, float64(u.InUse))
		}
	}
}

func collectPorts(ch chan<- prometheus.Metric, ports []vswitch.PortStats) {
	// Two ports with one name and kind would fail the whole scrape as
	// duplicate series; keep the first.
	seen := make(map[[2]string]bool, len(ports))
	for _, p := range ports {
		key := [2]string{p.Name, p.Kind}
		if seen[key] {
			continue
		}
		seen[key] = true
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), p.Name, p.Kind)
		}
		counter(descRxPackets, p.RxFrames)
		counter(descRxBytes, p.RxBytes)
		counter(descTxPackets, p.TxFrames)
		counter(descTxBytes, p.TxBytes)
		counter(descGSO, p.GSOFrames)
		counter(descTxSuper, p.TxSuperframes)
		counter(descPolled, p.Polled)
		counter(descICMPErr, p.ICMPErrors)
		counter(descNATPkts, p.NATPackets)
		counter(descECNCE, p.ECNCE)
		for i, v := range p.ReaderRxFrames {
			ch <- prometheus.MustNewConstMetric(descReaderRx, prometheus.CounterValue, float64(v), p.Name, p.Kind, strconv.Itoa(i))
		}
		for reason, v := range p.Drops {
			ch <- prometheus.MustNewConstMetric(descPortDrops, prometheus.CounterValue, float64(v), p.Name, p.Kind, reason)
		}
	}
}

func collectNAT(ch chan<- prometheus.Metric, s nat.Stats) {
	for proto, v := range s.ByProto {
		ch <- prometheus.MustNewConstMetric(descNATEntries, prometheus.GaugeValue, float64(v), proto)
	}
	ch <- prometheus.MustNewConstMetric(descNATInUse, prometheus.GaugeValue, float64(s.PortsInUse))
	ch <- prometheus.MustNewConstMetric(descNATTotal, prometheus.GaugeValue, float64(s.PortsTotal))
	ch <- prometheus.MustNewConstMetric(descNATConns, prometheus.CounterValue, float64(s.ConnsTotal))
	ch <- prometheus.MustNewConstMetric(descNATPkConns, prometheus.CounterValue, float64(s.PacketConnsTotal))
	up := 0.0
	if s.TCPPath == "packet" {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descNATPkPath, prometheus.GaugeValue, up)
	for reason, v := range s.Drops {
		ch <- prometheus.MustNewConstMetric(descNATDrops, prometheus.CounterValue, float64(v), reason)
	}
}

func collectBGP(ch chan<- prometheus.Metric, peers []bgp.PeerStatus, err error) {
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descBGPUp, prometheus.GaugeValue, up)
	if err != nil {
		return
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Address.Less(peers[j].Address) })
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		addr := p.Address.String()
		if seen[addr] {
			continue
		}
		seen[addr] = true
		est := 0.0
		if p.State == "Established" {
			est = 1
		}
		ch <- prometheus.MustNewConstMetric(descBGPState, prometheus.GaugeValue, 1, addr, p.Type, p.State)
		ch <- prometheus.MustNewConstMetric(descBGPEst, prometheus.GaugeValue, est, addr, p.Type)
		if !p.Since.IsZero() {
			ch <- prometheus.MustNewConstMetric(descBGPSince, prometheus.GaugeValue, float64(p.Since.UnixNano())/1e9, addr, p.Type)
		}
	}
}

// Handler serves src's metrics, the Go runtime's and the process's in
// the Prometheus text format.
func Handler(src Source) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Timeout: 10 * time.Second}), nil
}

// Server serves the metrics over HTTP.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen starts serving src's metrics on addr (host:port) at Path. The
// listener is bound before Listen returns, so a taken or bad address is
// its error.
func Listen(addr string, src Source, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("metrics listen address %q: %v", addr, err)
	}
	h, err := Handler(src)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, h)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "podnet metrics: %s\n", Path)
	})
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on (with the port chosen when
// addr asked for port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server, letting scrapes in progress finish for a moment.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}
