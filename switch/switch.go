// Package vswitch is podnet's data path on one node: pod ports (a TAP per
// pod), the host port (a TUN joining the node itself), tunnels to other
// nodes (IP-in-IP, VXLAN) and NAT outgoing, with proxy ARP, L2 rewrite,
// TTL handling, anti-spoofing and forwarding by a compiled route table.
//
// Each port has one reader goroutine that reads a batch, loads one FIB
// snapshot for the whole batch, hands each packet to the egress its route
// resolves to, and flushes the egresses' batches at the end: no
// per-packet channels or goroutines. egress.go describes the steps;
// docs/datapath.md follows each packet path through the files.
//
// The directory is named switch; the package is vswitch because switch is
// a Go keyword.
package vswitch

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"podnet/internal/packet"
	"podnet/internal/queuedrops"
	"podnet/router"
)

// GatewayIP is the address pods use as their default gateway (Calico's
// convention); the switch also uses it as the source of ICMP errors it
// generates toward pods and the host.
var GatewayIP = netip.AddrFrom4([4]byte{169, 254, 1, 1})

// Config configures a Switch.
type Config struct {
	// Logger receives control-plane events; nil discards them. The data
	// path never logs per packet.
	Logger *slog.Logger
	// PodBatch is the most frames a pod port reads per wake-up; 0 means
	// 64. Each slot is a 64 KiB buffer because a TSO superframe can be
	// that big, so a pod's reader starts with podBatchStart of them and
	// adds more, up to PodBatch, only while its reads come back full of
	// small frames (readLoop).
	PodBatch int
	// ReplyPoll is how long a reader that has just sent packets to a pod
	// polls that pod for its answer before leaving it to the pod's own
	// reader, which would have to be woken (replies.go). 0 turns reply
	// polling off.
	ReplyPoll time.Duration
}

// Switch is one node's virtual switch.
type Switch struct {
	log       *slog.Logger
	podBatch  int
	replyPoll time.Duration

	// fib is what the data path reads; nodes the set of node addresses
	// tunnels accept packets from.
	fib   atomic.Pointer[fib]
	nodes atomic.Pointer[NodeSet]
	// host is the host port, for counting injected packets.
	host   atomic.Pointer[hostPort]
	noHost countOnly

	// mu serialises the control plane's changes: the route table and the
	// attachments it resolves against, from which fib is compiled.
	mu     sync.Mutex
	routes *router.Table
	att    attachments
	lanes  int // lane IDs handed out to batching egresses
	// retiredLanes are the lane IDs of egresses detached for good, in
	// order (never handed out again): readers drop their lanes for them
	// (forwarder.dropRetiredLanes). Append-only, swapped whole.
	retiredLanes atomic.Pointer[[]int]

	inbound inboundFlows // connections from outside, whose answers skip NAT

	// captureQueued is the bytes of copies all captures hold unread.
	captureQueued atomic.Int64

	injectPool *packet.Pool // buffers for Inject
	segPool    sync.Pool    // *segScratch, borrowed while a batch is segmented

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// A pod's reader starts with podBatchStart buffers and grows to
// Config.PodBatch, podBatchMax by default (readLoop). 64 is what GRO
// merges into one superframe (packet.GROMaxSegments).
const (
	podBatchStart = 8
	podBatchMax   = 64
)

// New returns a switch with no ports and an empty route table.
func New(cfg Config) *Switch {
	s := &Switch{log: cfg.Logger, podBatch: cfg.PodBatch, replyPoll: max(cfg.ReplyPoll, 0)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.podBatch <= 0 {
		s.podBatch = podBatchMax
	}
	s.att.nat = &natEgress{}
	s.segPool.New = func() any { return newSegScratch() }
	s.injectPool = packet.NewPool()
	s.fib.Store(compile(nil, &s.att))
	return s
}

// SetRoutes publishes a new route table to the data path.
func (s *Switch) SetRoutes(t *router.Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes = t
	s.recompileLocked()
}

// Routes returns the table the data path uses now.
func (s *Switch) Routes() *router.Table { return s.fib.Load().routes }

// recompileLocked publishes a FIB for the current routes and attachments.
func (s *Switch) recompileLocked() { s.fib.Store(compile(s.routes, &s.att)) }

// NodeSet is the immutable set of node addresses the switch accepts
// encapsulated packets from.
type NodeSet map[netip.Addr]bool

// SetNodes publishes the set of known node addresses: decapsulated
// packets from any other source are dropped ("unknown-source").
func (s *Switch) SetNodes(n NodeSet) { s.nodes.Store(&n) }

// Stats returns every port's counters: the host port first, then the
// tunnels, then the pods.
func (s *Switch) Stats() []PortStats {
	s.mu.Lock()
	var out []PortStats
	var queues []*queuedrops.Counter // out[i]'s
	if h := s.att.host; h != nil {
		out, queues = append(out, h.portStats()), append(queues, h.queue)
	}
	for _, t := range s.att.tunnels {
		if t != nil {
			out, queues = append(out, t.portStats()), append(queues, t.queue)
		}
	}
	for _, p := range s.att.pods {
		if p != nil {
			out, queues = append(out, p.portStats()), append(queues, p.queue)
		}
	}
	s.mu.Unlock()
	for i := range out {
		addQueueDrops(&out[i], queues[i])
	}
	return out
}

// Close stops every port: it closes the device fds (persistent TAPs stay in
// the kernel for a restarted daemon) and waits for the readers to exit.
func (s *Switch) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		att := s.att
		s.att = attachments{nat: att.nat}
		s.recompileLocked()
		s.mu.Unlock()
		for _, p := range att.pods {
			if p != nil {
				errs = append(errs, p.dev.Close())
			}
		}
		if att.host != nil {
			errs = append(errs, att.host.dev.Close())
		}
		for _, t := range att.tunnels {
			if t != nil {
				errs = append(errs, t.t.Close())
			}
		}
		s.wg.Wait()
		for _, p := range att.pods {
			if p != nil {
				endCapture(&p.capt, "the switch stopped")
			}
		}
		if att.host != nil {
			endCapture(&att.host.capt, "the switch stopped")
		}
		for _, t := range att.tunnels {
			if t != nil {
				endCapture(&t.capt, "the switch stopped")
			}
		}
	})
	return errors.Join(errs...)
}

// retireLaneLocked records that the egress with lane ID id is detached
// for good. Call it after recompileLocked has published a FIB without
// that egress: a reader that sees the retirement then sees that FIB too.
func (s *Switch) retireLaneLocked(id int) {
	var ids []int
	if old := s.retiredLanes.Load(); old != nil {
		ids = append(ids, *old...)
	}
	ids = append(ids, id)
	s.retiredLanes.Store(&ids)
}

// newLaneIDLocked hands out a lane ID for a batching egress.
func (s *Switch) newLaneIDLocked() int {
	s.lanes++
	return s.lanes - 1
}

func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed)
}
