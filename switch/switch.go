// Package vswitch is podnet's data path on one node: pod ports (a TAP per
// pod), the host port (a TUN joining the node itself), proxy ARP, L2
// rewrite, TTL handling, anti-spoofing and forwarding by the current route
// snapshot. Each port has one reader goroutine that reads a batch, looks up
// one route snapshot for the whole batch and writes straight to the egress
// device: no per-packet channels or goroutines.
//
// The directory is named switch; the package is vswitch because switch is
// a Go keyword.
package vswitch

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"

	"podnet/internal/packet"
	"podnet/router"
	"podnet/switch/tap"
)

// GatewayIP is the address pods use as their default gateway (Calico's
// convention); the switch also uses it as the source of ICMP errors it
// generates.
var GatewayIP = netip.AddrFrom4([4]byte{169, 254, 1, 1})

// Config configures a Switch.
type Config struct {
	// Logger receives control-plane events; nil discards them. The data
	// path never logs per packet.
	Logger *slog.Logger
	// PodBatch is how many frames a pod port reads per wake-up; 0 means 8.
	// Each slot is a 64 KiB buffer because a TSO superframe can be that big.
	PodBatch int
}

// Switch is one node's virtual switch.
type Switch struct {
	log      *slog.Logger
	podBatch int

	routes router.Snapshot
	// ports is the immutable port table the data path reads, indexed by
	// port index; nil entries are free slots. mu serialises writers.
	ports atomic.Pointer[[]*port]
	host  atomic.Pointer[port]
	// underlay is the port toward other nodes; nodes the set of their
	// addresses.
	underlay atomic.Pointer[port]
	vxlan    atomic.Pointer[port]
	nodes    atomic.Pointer[NodeSet]
	nat      atomic.Pointer[NATConfig]

	injectPool *packet.Pool // buffers for Inject
	mu         sync.Mutex

	segPool sync.Pool // *segScratch, borrowed while a batch is segmented

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns a switch with no ports and an empty route table.
func New(cfg Config) *Switch {
	s := &Switch{log: cfg.Logger, podBatch: cfg.PodBatch}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.podBatch <= 0 {
		s.podBatch = 8
	}
	empty := []*port{}
	s.ports.Store(&empty)
	s.segPool.New = func() any { return newSegScratch() }
	s.injectPool = packet.NewPool()
	return s
}

// SetRoutes publishes a new route table to the data path.
func (s *Switch) SetRoutes(t *router.Table) { s.routes.Store(t) }

// Routes returns the table the data path uses now.
func (s *Switch) Routes() *router.Table { return s.routes.Load() }

// PodPort describes a pod port to add.
type PodPort struct {
	Name string      // pod name, for people
	IP   netip.Addr  // the pod's /32; frames from other sources are dropped
	MAC  packet.MAC  // the pod's eth0 MAC: frames to the pod are addressed to it
	Dev  *tap.Device // open TAP; the switch reads it until RemovePort or Close
}

// AddPodPort starts forwarding for a pod and returns its port index, which
// local-pod routes refer to.
func (s *Switch) AddPodPort(pp PodPort) (int, error) {
	if !pp.IP.Is4() {
		return 0, fmt.Errorf("add port %s: pod IP %s is not IPv4", pp.Name, pp.IP)
	}
	if pp.Dev == nil {
		return 0, fmt.Errorf("add port %s: no device", pp.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.ports.Load()
	idx := len(old)
	for i, p := range old {
		if p == nil {
			idx = i
			break
		}
	}
	p := &port{
		index: idx, name: pp.Name, kind: kindPod, ip: pp.IP, ip4: pp.IP.As4(),
		mac: pp.MAC, dev: pp.Dev, offload: pp.Dev.Offload(), done: make(chan struct{}),
	}
	next := make([]*port, max(len(old), idx+1))
	copy(next, old)
	next[idx] = p
	s.ports.Store(&next)
	s.wg.Add(1)
	go s.routinePodReader(p)
	s.log.Debug("port added", "port", idx, "pod", pp.Name, "ip", pp.IP, "dev", pp.Dev.Name())
	return idx, nil
}

// RemovePort stops forwarding for a pod port, closes its device fd and
// waits for its reader to exit. A persistent TAP stays in the kernel; the
// caller deletes it if the pod is gone.
func (s *Switch) RemovePort(idx int) error {
	s.mu.Lock()
	old := *s.ports.Load()
	if idx < 0 || idx >= len(old) || old[idx] == nil {
		s.mu.Unlock()
		return fmt.Errorf("remove port %d: no such port", idx)
	}
	p := old[idx]
	next := make([]*port, len(old))
	copy(next, old)
	next[idx] = nil
	for len(next) > 0 && next[len(next)-1] == nil {
		next = next[:len(next)-1]
	}
	s.ports.Store(&next)
	s.mu.Unlock()
	err := p.dev.Close()
	<-p.done
	return err
}

// AttachHost makes dev (a TUN in the node's namespace, see OpenHostTUN) the
// host port and starts its reader.
func (s *Switch) AttachHost(dev tun.Device) error {
	p := &port{index: -1, name: "host", kind: kindHost, tun: dev, done: make(chan struct{})}
	if !s.host.CompareAndSwap(nil, p) {
		return errors.New("attach host: host port already attached")
	}
	s.wg.Add(1)
	go s.routineHostReader(p)
	return nil
}

// Stats returns every port's counters; the host port first.
func (s *Switch) Stats() []PortStats {
	var out []PortStats
	if h := s.host.Load(); h != nil {
		out = append(out, h.stats())
	}
	if u := s.underlay.Load(); u != nil {
		out = append(out, u.stats())
	}
	if u := s.vxlan.Load(); u != nil {
		out = append(out, u.stats())
	}
	for _, p := range *s.ports.Load() {
		if p != nil {
			out = append(out, p.stats())
		}
	}
	return out
}

// Close stops every port: it closes the device fds (persistent TAPs stay in
// the kernel for a restarted daemon) and waits for the readers to exit.
func (s *Switch) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		ports := *s.ports.Load()
		empty := []*port{}
		s.ports.Store(&empty)
		s.mu.Unlock()
		for _, p := range ports {
			if p != nil {
				errs = append(errs, p.dev.Close())
			}
		}
		if h := s.host.Load(); h != nil {
			errs = append(errs, h.tun.Close())
		}
		if u := s.underlay.Load(); u != nil {
			errs = append(errs, u.under.Close())
		}
		if u := s.vxlan.Load(); u != nil {
			errs = append(errs, u.vx.Close())
			for _, c := range u.vxSenders {
				if c != u.vx {
					errs = append(errs, c.Close())
				}
			}
		}
		s.wg.Wait()
	})
	return errors.Join(errs...)
}

func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed)
}
