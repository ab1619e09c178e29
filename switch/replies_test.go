package vswitch

import (
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"podnet/internal/packet"
	"podnet/internal/turn"
	"podnet/router"
)

// echoPodDev is a pod whose kernel answers at once and whose own reader
// never wakes: every frame the switch writes to it queues `answers`
// replies (the packet back, payload byte 0 numbering them 1, 2, ...) that
// only TryRead can take. Whatever of them reaches another pod was taken
// by reply polling.
type echoPodDev struct {
	fakeSink
	name    string
	ip      netip.Addr
	mac     packet.MAC
	answers int
	size    int // answer payload bytes; 0 means 8

	mu      sync.Mutex
	pending [][]byte
	turn    *turn.Turn
	closed  chan struct{}
}

func (d *echoPodDev) Name() string  { return d.name }
func (d *echoPodDev) Offload() bool { return false }

// Read is the pod's own reader, asleep until the port closes.
func (d *echoPodDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-d.closed
	return 0, os.ErrClosed
}

func (d *echoPodDev) Close() error {
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	return nil
}

func (d *echoPodDev) SetTurn(t *turn.Turn) { d.turn = t }

func (d *echoPodDev) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	if !d.turn.Try() {
		return 0, turn.ErrHeld
	}
	d.mu.Lock()
	n := 0
	for n < len(bufs) && len(d.pending) > 0 {
		sizes[n] = copy(bufs[n][offset:], d.pending[0])
		d.pending = d.pending[1:]
		n++
	}
	d.mu.Unlock()
	if n == 0 {
		d.turn.Done()
	}
	return n, nil
}

// WriteOne records the frame and queues the answers.
func (d *echoPodDev) WriteOne(b []byte) error {
	d.put(b, nil)
	ip := packet.IPv4(b[ethLen:])
	d.mu.Lock()
	defer d.mu.Unlock()
	size := d.size
	if size == 0 {
		size = 8
	}
	for i := range d.answers {
		reply := ipSpec{src: d.ip.String(), dst: ip.Src().String(), payload: size}.build()
		reply[len(reply)-size] = byte(i + 1)
		packet.UDP(reply[20:]).SetChecksum(0) // payload changed; 0 means none
		p := &fakePod{dev: &fakePodDev{}, ip: d.ip, mac: d.mac}
		d.pending = append(d.pending, podFrame(p, reply))
	}
	return nil
}

// replyNet is a switch with pod a (a fake TAP that the test feeds) and
// pod e (an echoPodDev).
func replyNet(t *testing.T, poll time.Duration, answers int) (*Switch, *fakePod, *echoPodDev, int) {
	t.Helper()
	s := New(Config{ReplyPoll: poll})
	t.Cleanup(func() { s.Close() })
	a := &fakePod{dev: newFakePodDev("a", false), ip: netip.MustParseAddr("10.0.0.1"), mac: packet.MAC{2, 0, 0, 0, 0, 1}}
	e := &echoPodDev{name: "e", ip: netip.MustParseAddr("10.0.0.9"), mac: packet.MAC{2, 0, 0, 0, 0, 9}, answers: answers, closed: make(chan struct{})}
	var err error
	if a.port, err = s.AddPodPort(PodPort{Name: "a", IP: a.ip, MAC: a.mac, Dev: a.dev}); err != nil {
		t.Fatal(err)
	}
	ePort, err := s.AddPodPort(PodPort{Name: "e", IP: e.ip, MAC: e.mac, Dev: e})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := router.NewTable([]router.Route{
		{Prefix: netip.PrefixFrom(a.ip, 32), Kind: router.KindLocalPod, Port: a.port, Dev: "a"},
		{Prefix: netip.PrefixFrom(e.ip, 32), Kind: router.KindLocalPod, Port: ePort, Dev: "e"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRoutes(tab)
	return s, a, e, ePort
}

// The reader that wrote to a pod forwards the pod's answers itself, all
// of them and in order, while the pod's own reader sleeps.
func TestReplyPolling(t *testing.T) {
	s, a, e, _ := replyNet(t, time.Second, 3)
	a.dev.offer(podFrame(a, ipSpec{src: "10.0.0.1", dst: "10.0.0.9", payload: 8}.build()))
	frames, _ := a.dev.wait(t, 3)
	for i, f := range frames {
		_, ip := podRx(t, a, f)
		if got := packet.IPv4(ip).Src(); got != e.ip || ip[len(ip)-8] != byte(i+1) {
			t.Errorf("frame %d to a: from %v, answer %d; want from %v, answer %d", i, got, ip[len(ip)-8], e.ip, i+1)
		}
	}
	st := portStats(s, "e")
	if st.Polled != 1 || st.RxFrames != 3 {
		t.Errorf("pod e: %d batches polled, %d frames received; want 1 and 3", st.Polled, st.RxFrames)
	}
}

// A pod that does not answer within the window pollMisses times in a row
// is left alone for a while.
func TestReplyPollingBacksOff(t *testing.T) {
	s, a, e, ePort := replyNet(t, time.Millisecond, 0)
	for i := range pollMisses {
		a.dev.offer(podFrame(a, ipSpec{src: "10.0.0.1", dst: "10.0.0.9", payload: 8}.build()))
		e.wait(t, i+1)
	}
	s.mu.Lock()
	p := s.att.pods[ePort]
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for p.quietUntil.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d unanswered writes, pod e is still polled (misses %d)", pollMisses, p.misses.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// NAT's replies come through Inject, which no reader runs: delivering to
// a pollable pod must not try to poll it.
func TestInjectToPollablePod(t *testing.T) {
	s, _, e, _ := replyNet(t, time.Second, 0)
	s.Inject(ipSpec{src: "198.51.100.1", dst: "10.0.0.9", payload: 8}.build(), packet.VirtioNetHdr{})
	e.wait(t, 1)
}

// clientPodDev is a pod that runs request/response: its first request
// comes through Read (a wake-up), and every answer written to it queues
// its next request, up to rounds, where only TryRead sees it.
type clientPodDev struct {
	echoPodDev
	first  chan []byte
	rounds int
	req    func(i int) []byte
}

func (d *clientPodDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case b := <-d.first:
		d.turn.Take()
		sizes[0] = copy(bufs[0][offset:], b)
		return 1, nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

func (d *clientPodDev) WriteOne(b []byte) error {
	d.put(b, nil)
	d.mu.Lock()
	defer d.mu.Unlock()
	if got := d.count(); got < d.rounds {
		d.pending = append(d.pending, d.req(got))
	}
	return nil
}

// After an answer goes back to a pod, its reader looks for the pod's next
// request before parking: a request/response loop of 5 rounds runs on
// one wake-up.
func TestOwnPodPolledAfterAnswer(t *testing.T) {
	s, _, e, _ := replyNet(t, time.Second, 1)
	c := &clientPodDev{
		echoPodDev: echoPodDev{name: "c", ip: netip.MustParseAddr("10.0.0.5"), mac: packet.MAC{2, 0, 0, 0, 0, 5}, closed: make(chan struct{})},
		first:      make(chan []byte, 1),
		rounds:     5,
	}
	c.req = func(int) []byte {
		ip := ipSpec{src: "10.0.0.5", dst: "10.0.0.9", payload: 8}.build()
		return podFrame(&fakePod{dev: &fakePodDev{}, ip: c.ip, mac: c.mac}, ip)
	}
	port, err := s.AddPodPort(PodPort{Name: "c", IP: c.ip, MAC: c.mac, Dev: c})
	if err != nil {
		t.Fatal(err)
	}
	routes := s.Routes().Routes()
	routes = append(routes, router.Route{Prefix: netip.PrefixFrom(c.ip, 32), Kind: router.KindLocalPod, Port: port, Dev: "c"})
	tab, err := router.NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	s.SetRoutes(tab)
	c.first <- c.req(0)
	c.wait(t, 5) // five answers
	e.wait(t, 5) // to five requests
	st := portStats(s, "c")
	if st.RxFrames != 5 || st.Polled != 4 {
		t.Errorf("pod c: %d requests read, %d of them by polling; want 5 and 4 (one wake-up)", st.RxFrames, st.Polled)
	}
}

// Bulk data found while polling (a sender's next segments answering an
// ACK) is forwarded, but the pod is then left to its own reader for a
// while: one reader must not end up carrying both directions.
func TestReplyPollingLeavesBulkAlone(t *testing.T) {
	s, a, e, ePort := replyNet(t, time.Second, 2)
	e.size = 1000
	before := time.Now().UnixNano()
	a.dev.offer(podFrame(a, ipSpec{src: "10.0.0.1", dst: "10.0.0.9", payload: 8}.build()))
	a.dev.wait(t, 2)
	s.mu.Lock()
	p := s.att.pods[ePort]
	s.mu.Unlock()
	// The quiet spell began with these answers (one poll cannot count
	// pollMisses misses): whether it still lasts when this check runs,
	// pollQuiet later or not, depends on how busy the machine is.
	if p.quietUntil.Load() <= before {
		t.Errorf("pod e answered with 1000-byte packets and was not left to its own reader")
	}
}
