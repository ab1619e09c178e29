package vswitch

// In-memory ports for tests that need no root: each fake takes what a test
// puts into its rx channel as if the device had read it, and records what
// the switch writes. The switch runs its real readers over them.

import (
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podnet/internal/packet"
)

// fakeQueue is a device's receive side: Read blocks until a test offers a
// packet or the device closes.
type fakeQueue struct {
	rx     chan [][]byte
	closed chan struct{}
	once   sync.Once
	batch  atomic.Int64 // len(bufs) of the last Read: the reader's batch
}

func newFakeQueue() fakeQueue {
	return fakeQueue{rx: make(chan [][]byte, 64), closed: make(chan struct{})}
}

// offer queues packets that one Read returns together.
func (q *fakeQueue) offer(pkts ...[]byte) { q.rx <- pkts }

// read copies the packets of one offer into bufs[i][offset:].
func (q *fakeQueue) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	q.batch.Store(int64(len(bufs)))
	select {
	case pkts := <-q.rx:
		if len(pkts) > len(bufs) {
			panic("fake device: offer larger than the reader's batch")
		}
		for i, b := range pkts {
			sizes[i] = copy(bufs[i][offset:], b)
		}
		return len(pkts), nil
	case <-q.closed:
		return 0, os.ErrClosed
	}
}

func (q *fakeQueue) close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

// fakeSink records what the switch wrote.
type fakeSink struct {
	mu   sync.Mutex
	pkts [][]byte
	aux  []any // per packet: destination for tunnels
	fail bool  // refuse writes (egress-error)
	// refuseLen, when not 0, refuses the writes of packets that long.
	refuseLen int
}

func (s *fakeSink) put(b []byte, aux any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail || (s.refuseLen != 0 && len(b) == s.refuseLen) {
		return false
	}
	s.pkts = append(s.pkts, append([]byte(nil), b...))
	s.aux = append(s.aux, aux)
	return true
}

func (s *fakeSink) setFail(v bool) {
	s.mu.Lock()
	s.fail = v
	s.mu.Unlock()
}

// wait returns the first n packets written, failing the test if they do not
// come within a few seconds.
func (s *fakeSink) wait(t testing.TB, n int) ([][]byte, []any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		if len(s.pkts) >= n {
			p, a := s.pkts[:n:n], s.aux[:n:n]
			s.mu.Unlock()
			return p, a
		}
		got := len(s.pkts)
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("got %d packets written, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// snapshot returns what was written so far.
func (s *fakeSink) snapshot() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.pkts...)
}

func (s *fakeSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pkts)
}

func (s *fakeSink) reset() {
	s.mu.Lock()
	s.pkts, s.aux = nil, nil
	s.mu.Unlock()
}

// portStats returns the counters of s's port named name (zero if none).
func portStats(s *Switch, name string) PortStats {
	for _, st := range s.Stats() {
		if st.Name == name {
			return st
		}
	}
	return PortStats{}
}

// fakePodDev is a pod's TAP.
type fakePodDev struct {
	fakeQueue
	fakeSink
	name    string
	offload bool
	uso     bool // takes GSO_UDP_L4 superframes, as a TAP on a kernel with USO
}

func newFakePodDev(name string, offload bool) *fakePodDev {
	return &fakePodDev{fakeQueue: newFakeQueue(), name: name, offload: offload}
}

func (d *fakePodDev) Name() string  { return d.name }
func (d *fakePodDev) Offload() bool { return d.offload }

// UDPSegmentation says what the fake was made to say: the switch must
// merge datagrams toward it only when true.
func (d *fakePodDev) UDPSegmentation() bool { return d.uso }
func (d *fakePodDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.read(bufs, sizes, offset)
}
func (d *fakePodDev) WriteOne(b []byte) error {
	if !d.put(b, nil) {
		return os.ErrDeadlineExceeded
	}
	return nil
}
func (d *fakePodDev) Close() error { return d.close() }

// fakeHostDev is the host TUN.
type fakeHostDev struct {
	fakeQueue
	fakeSink
}

func (d *fakeHostDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.read(bufs, sizes, offset)
}
func (d *fakeHostDev) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if !d.put(b[offset:], nil) {
			return i, os.ErrDeadlineExceeded
		}
	}
	return len(bufs), nil
}
func (d *fakeHostDev) BatchSize() int        { return 8 }
func (d *fakeHostDev) Name() (string, error) { return "fake0", nil }
func (d *fakeHostDev) Close() error          { return d.close() }

// offloadHostDev is the host TUN with virtio-net headers and USO.
type offloadHostDev struct{ *fakeHostDev }

func (offloadHostDev) Offload() bool         { return true }
func (offloadHostDev) UDPSegmentation() bool { return true }

// fakeIPIP is the IP-in-IP socket: rx holds whole outer packets.
type fakeIPIP struct {
	fakeQueue
	fakeSink
	kernelDrops
}

// kernelDrops is a fake socket's count of what its kernel dropped before
// it was read (QueueDrops), which a test sets.
type kernelDrops struct{ n atomic.Uint64 }

func (k *kernelDrops) QueueDrops() (uint64, error) { return k.n.Load(), nil }

func (c *fakeIPIP) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	return c.read(bufs, sizes, offset)
}
func (c *fakeIPIP) WriteBatch(pkts [][]byte, dsts []netip.Addr) (int, error) {
	for i, p := range pkts {
		if !c.put(p, dsts[i]) {
			return i, os.ErrDeadlineExceeded
		}
	}
	return len(pkts), nil
}
func (c *fakeIPIP) BatchSize() int { return 8 }
func (c *fakeIPIP) Close() error   { return c.close() }

// fakeVXLAN is a VXLAN socket: rx holds UDP payloads, srcs their senders
// and toss their outer TOS bytes.
type fakeVXLAN struct {
	fakeQueue
	fakeSink
	kernelDrops
	srcCh chan fakeOuter
	srcs  []netip.Addr
	toss  []uint8
}

// fakeOuter is what a socket learns of a datagram's outer header.
type fakeOuter struct {
	src netip.Addr
	tos uint8
}

func newFakeVXLAN() *fakeVXLAN {
	return &fakeVXLAN{fakeQueue: newFakeQueue(), srcCh: make(chan fakeOuter, 64)}
}

// offer queues payload as if src had sent it.
func (c *fakeVXLAN) offer(src netip.Addr, payload []byte) { c.offerTOS(src, 0, payload) }

// offerTOS queues payload as if src had sent it under an outer TOS of tos.
func (c *fakeVXLAN) offerTOS(src netip.Addr, tos uint8, payload []byte) {
	c.srcCh <- fakeOuter{src, tos}
	c.rx <- [][]byte{payload}
}

func (c *fakeVXLAN) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	// One datagram per offer keeps each source paired with its payload.
	n, err := c.read(bufs, sizes, offset)
	if n == 1 {
		o := <-c.srcCh
		c.srcs, c.toss = append(c.srcs[:0], o.src), append(c.toss[:0], o.tos)
	}
	return n, err
}
func (c *fakeVXLAN) Sources() []netip.Addr { return c.srcs }
func (c *fakeVXLAN) OuterTOS() []uint8     { return c.toss }
func (c *fakeVXLAN) WriteBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error) {
	for i, p := range pkts {
		if !c.put(p, dsts[i]) {
			return i, os.ErrDeadlineExceeded
		}
	}
	return len(pkts), nil
}
func (c *fakeVXLAN) BatchSize() int { return 8 }
func (c *fakeVXLAN) Close() error   { return c.close() }

// fakeNAT records what the switch hands to NAT.
type fakeNAT struct{ fakeSink }

func (n *fakeNAT) HandleOffload(buf []byte, off int, hdr packet.VirtioNetHdr) {
	gsoSize := 0
	if hdr.GSOType == packet.GSOUDPL4 {
		gsoSize = int(hdr.GSOSize)
	}
	n.put(buf[off:], gsoSize)
}

// Compile-time checks: the fakes are the ports they stand for.
var (
	_ PodDevice  = (*fakePodDev)(nil)
	_ HostDevice = (*fakeHostDev)(nil)
	_ IPIPConn   = (*fakeIPIP)(nil)
	_ VXLANConn  = (*fakeVXLAN)(nil)
	_ NATHandler = (*fakeNAT)(nil)
)
