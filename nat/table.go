package nat

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"podnet/internal/packet"
)

// flowKey identifies a flow: for ICMP echo the pod "port" is the echo
// identifier and the remote port is 0.
type flowKey struct {
	proto  uint8
	pod    netip.AddrPort
	remote netip.AddrPort
}

// flowState is where a flow is in its life; its String is Entry.State.
type flowState uint32

const (
	stateSynSent     flowState = iota // TCP: dialling the remote
	stateEstablished                  // TCP: spliced both ways
	stateClosing                      // TCP: one side sent FIN
	stateClosed                       // TCP: both sides done, kept for TCPClosing like conntrack's TIME_WAIT
	stateUnreplied                    // UDP: nothing came back yet
	stateReplied                      // UDP: a reply came back
	stateAssured                      // UDP: the pod sent again after a reply
	stateActive                       // ICMP echo
)

var stateNames = [...]string{
	stateSynSent:     "syn-sent",
	stateEstablished: "established",
	stateClosing:     "closing",
	stateClosed:      "closed",
	stateUnreplied:   "unreplied",
	stateReplied:     "replied",
	stateAssured:     "assured",
	stateActive:      "active",
}

func (s flowState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

func protoName(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	case packet.ProtoICMP:
		return "icmp"
	}
	return "unknown"
}

// flow is one table entry. The counters and times are atomics because the
// flow's goroutines, Handle and the reaper touch them concurrently.
type flow struct {
	key     flowKey
	created time.Time

	state    atomic.Uint32 // flowState
	last     atomic.Int64  // nanoseconds since NAT.epoch of the last byte moved
	closedAt atomic.Int64  // nanoseconds since NAT.epoch when closing began (TCP)
	bytesOut atomic.Uint64 // pod -> remote, payload bytes
	bytesIn  atomic.Uint64 // remote -> pod, payload bytes

	// mu guards node, closer and dead.
	mu     sync.Mutex
	node   netip.AddrPort // the host socket's local address
	closer func()         // tears the flow down; set once the flow has sockets
	dead   bool           // close was called; a later closer runs at once

	// dgram is the datagram flow's socket state (UDP and ICMP); nil for
	// TCP.
	dgram *dgramFlow
	// pkt is a TCP flow's packet-path state; nil for the netstack's.
	pkt *packetFlow
}

func (f *flow) getState() flowState  { return flowState(f.state.Load()) }
func (f *flow) setState(s flowState) { f.state.Store(uint32(s)) }

// setCloser installs the teardown function, or runs it at once if the flow
// was already closed (Close or the reaper got there first).
func (f *flow) setCloser(node netip.AddrPort, fn func()) {
	f.mu.Lock()
	f.node = node
	if f.dead {
		f.mu.Unlock()
		fn()
		return
	}
	f.closer = fn
	f.mu.Unlock()
}

// close tears the flow down once. Safe to call from anywhere, any number of
// times.
func (f *flow) close() {
	f.mu.Lock()
	fn := f.closer
	f.closer = nil
	f.dead = true
	f.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// table is the connection table, bounded by max entries.
type table struct {
	max int
	// mu guards flows and closed.
	mu    sync.RWMutex
	flows map[flowKey]*flow
	// closed is set by drain: nothing goes in after it, so a request that
	// was under way when NAT closed cannot leave a flow nobody closes.
	closed bool
}

func newTable(max int) *table {
	return &table{max: max, flows: make(map[flowKey]*flow)}
}

func (t *table) lookup(k flowKey) *flow {
	t.mu.RLock()
	f := t.flows[k]
	t.mu.RUnlock()
	return f
}

// insert adds f unless the table is full or holds k already; it returns
// the flow now in the table under k (f or the existing one) and whether f
// went in. A full table returns nil.
func (t *table) insert(f *flow) (*flow, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	if old := t.flows[f.key]; old != nil {
		return old, false
	}
	if len(t.flows) >= t.max && !t.evictClosedLocked() {
		return nil, false
	}
	t.flows[f.key] = f
	return f, true
}

// hasRoom reports whether a new flow would fit, dropping a closed flow
// to make room if it must (see evictClosedLocked).
func (t *table) hasRoom() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows) < t.max || t.evictClosedLocked()
}

// evictScan bounds the entries a full table looks at for a closed flow
// to drop, per new flow.
const evictScan = 64

// evictClosedLocked makes room in a full table by dropping a closed TCP
// flow, if one of up to evictScan entries is one (the map's iteration
// starts at a random place). A closed flow holds no socket or port any
// more (on the packet path, none past portLinger; closing it lets go
// at once), only its row in `nat list`; without this, a pod opening and
// closing connections fast fills the table for TCPClosing and every
// pod's new flows are refused, as conntrack's early drop avoids. Caller
// holds t.mu.
func (t *table) evictClosedLocked() bool {
	n := 0
	for k, f := range t.flows {
		if f.getState() == stateClosed {
			delete(t.flows, k)
			if f.pkt != nil {
				f.close() // a packet-path flow may still hold its port
			}
			return true
		}
		if n++; n >= evictScan {
			break
		}
	}
	return false
}

// replace installs f under its key, displacing whatever was there (a TCP
// connection the netstack no longer knows: the pod reused the 4-tuple). It
// returns the displaced flow, or nil, and false if the table is full or
// closed.
func (t *table) replace(f *flow) (*flow, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	old := t.flows[f.key]
	if old == nil && len(t.flows) >= t.max && !t.evictClosedLocked() {
		return nil, false
	}
	t.flows[f.key] = f
	return old, true
}

// drain closes the table to new flows and empties it, returning what it
// held.
func (t *table) drain() []*flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	flows := make([]*flow, 0, len(t.flows))
	for _, f := range t.flows {
		flows = append(flows, f)
	}
	clear(t.flows)
	return flows
}

// remove deletes f if it is still the flow under its key.
func (t *table) remove(f *flow) {
	t.mu.Lock()
	if t.flows[f.key] == f {
		delete(t.flows, f.key)
	}
	t.mu.Unlock()
}

func (t *table) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.flows)
}

// Entry is one flow of the connection table.
type Entry struct {
	Proto string `json:"proto"` // "tcp", "udp" or "icmp"
	// Pod is the pod's address and port (ICMP: echo identifier).
	Pod netip.AddrPort `json:"pod"`
	// Node is the host socket's local address and port (ICMP: the
	// identifier the kernel chose); invalid while a TCP dial is pending.
	Node netip.AddrPort `json:"node"`
	// Remote is the destination outside the cluster (ICMP: port 0).
	Remote   netip.AddrPort `json:"remote"`
	State    string         `json:"state"`
	BytesOut uint64         `json:"bytesOut"` // pod to remote, payload bytes
	BytesIn  uint64         `json:"bytesIn"`  // remote to pod, payload bytes
	Age      time.Duration  `json:"age"`
	Idle     time.Duration  `json:"idle"`
}

// Entries returns a snapshot of the connection table sorted by protocol,
// pod and remote.
func (n *NAT) Entries() []Entry {
	n.table.mu.RLock()
	flows := make([]*flow, 0, len(n.table.flows))
	for _, f := range n.table.flows {
		flows = append(flows, f)
	}
	n.table.mu.RUnlock()
	now := n.now()
	out := make([]Entry, 0, len(flows))
	for _, f := range flows {
		f.mu.Lock()
		node := f.node
		f.mu.Unlock()
		out = append(out, Entry{
			Proto:    protoName(f.key.proto),
			Pod:      f.key.pod,
			Node:     node,
			Remote:   f.key.remote,
			State:    f.getState().String(),
			BytesOut: f.bytesOut.Load(),
			BytesIn:  f.bytesIn.Load(),
			Age:      time.Since(f.created),
			Idle:     time.Duration(now - f.last.Load()),
		})
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(
			cmp.Compare(a.Proto, b.Proto),
			a.Pod.Compare(b.Pod),
			a.Remote.Compare(b.Remote),
		)
	})
	return out
}

// Stats returns the NAT's counters.
func (n *NAT) Stats() Stats {
	s := Stats{
		ByProto:    map[string]int{"tcp": 0, "udp": 0, "icmp": 0},
		Drops:      make(map[string]uint64, numDropReasons),
		ConnsTotal: n.c.conns.Load(),

		PacketConnsTotal: n.c.packetConns.Load(),
		TCPPath:          n.tcpPath(),
	}
	n.table.mu.RLock()
	s.Entries = len(n.table.flows)
	for k := range n.table.flows {
		s.ByProto[protoName(k.proto)]++
	}
	n.table.mu.RUnlock()
	for r := range numDropReasons {
		s.Drops[r.String()] = n.c.drops[r].Load()
	}
	if n.fast != nil {
		s.Drops[DropQueueFull.String()] += n.fast.queue.Count()
	}
	if n.tcpPorts.enabled() {
		s.PortsInUse = n.tcpPorts.count() + n.udpPorts.count()
	} else {
		s.PortsInUse = int(n.hostSockets.Load())
	}
	s.PortsTotal = 2 * n.portsPerProto
	return s
}

// expired reports whether f has outlived its timeout at now, and whether
// it only needs removing (its sockets are closed already).
func (n *NAT) expired(f *flow, now int64) (expired bool) {
	idle := time.Duration(now - f.last.Load())
	switch f.getState() {
	case stateSynSent:
		// A netstack dial has its own timeout and removes the flow
		// itself; a packet-path SYN the remote never answered lasts as
		// long (the pod's next retransmission starts over).
		return f.pkt != nil && idle > dialTimeout
	case stateEstablished:
		return idle > n.cfg.TCPEstablished
	case stateClosing:
		// Data still moving in the open direction keeps a half-closed
		// connection alive; TCPClosing counts from the later of the FIN
		// and the last byte.
		return idle > n.cfg.TCPClosing && time.Duration(now-f.closedAt.Load()) > n.cfg.TCPClosing
	case stateClosed:
		return time.Duration(now-f.closedAt.Load()) > n.cfg.TCPClosing
	case stateUnreplied, stateReplied:
		return idle > n.cfg.UDP
	case stateAssured:
		return idle > n.cfg.UDPAssured
	case stateActive:
		return idle > n.cfg.ICMP
	}
	return false
}

// reapInterval is how often the reaper scans the table. Timeouts are
// seconds to hours, so a second of slack is fine.
const reapInterval = time.Second

// routineReaper closes flows that outlived their timeouts and forgets
// stale SYN records. New starts it; it exits when Close closes n.done.
func (n *NAT) routineReaper() {
	defer n.wg.Done()
	n.log.Debug("reaper started")
	defer n.log.Debug("reaper stopped")
	tick := time.NewTicker(reapInterval)
	defer tick.Stop()
	var dead []*flow
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		}
		n.reap(n.now(), &dead)
		if n.fast != nil {
			if err := n.fast.checkHealth(); err != nil {
				n.log.Error("NAT packet path failing: new TCP connections go through the netstack", "err", err)
			}
		}
	}
}

// reap removes and closes the flows expired at now. dead is scratch kept
// between runs.
func (n *NAT) reap(now int64, dead *[]*flow) {
	d := (*dead)[:0]
	n.table.mu.Lock()
	for k, f := range n.table.flows {
		if n.expired(f, now) {
			delete(n.table.flows, k)
			d = append(d, f)
		}
	}
	n.table.mu.Unlock()
	for i, f := range d {
		f.close()
		d[i] = nil
	}
	*dead = d[:0]
	n.syns.expire(now)
}

// ForgetPod ends every flow of the pod at addr at once: TCP connections
// are reset toward the remote, datagram sockets closed, entries removed.
// The daemon calls it when a pod is deleted, so nothing of the old pod's
// connections can reach a later pod given the same address. It returns
// how many flows it ended.
func (n *NAT) ForgetPod(addr netip.Addr) int {
	var dead []*flow
	n.table.mu.Lock()
	for k, f := range n.table.flows {
		if k.pod.Addr() == addr {
			delete(n.table.flows, k)
			dead = append(dead, f)
		}
	}
	n.table.mu.Unlock()
	for _, f := range dead {
		f.close()
	}
	return len(dead)
}
