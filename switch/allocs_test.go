package vswitch

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/internal/turn"
	"podnet/router"
)

// Egresses that count and keep nothing, so that what allocates is the
// switch's own work.
type discardPod struct{ fakeQueue }

func (d *discardPod) Name() string                                 { return "discard" }
func (d *discardPod) Offload() bool                                { return true }
func (d *discardPod) UDPSegmentation() bool                        { return true }
func (d *discardPod) Read(b [][]byte, s []int, o int) (int, error) { return d.read(b, s, o) }
func (d *discardPod) WriteOne([]byte) error                        { return nil }
func (d *discardPod) Close() error                                 { return d.close() }

type discardHost struct{ fakeQueue }

func (d *discardHost) Read(b [][]byte, s []int, o int) (int, error) { return d.read(b, s, o) }
func (d *discardHost) Write(b [][]byte, _ int) (int, error)         { return len(b), nil }
func (d *discardHost) BatchSize() int                               { return 8 }
func (d *discardHost) Name() (string, error)                        { return "discard0", nil }
func (d *discardHost) Close() error                                 { return d.close() }

type discardIPIP struct{ fakeQueue }

func (d *discardIPIP) ReadBatch(b [][]byte, s []int, o int) (int, error) { return d.read(b, s, o) }
func (d *discardIPIP) WriteBatch(p [][]byte, _ []netip.Addr) (int, error) {
	return len(p), nil
}
func (d *discardIPIP) BatchSize() int { return 8 }
func (d *discardIPIP) Close() error   { return d.close() }

type discardVXLAN struct {
	fakeQueue
	srcs []netip.Addr
	toss []uint8
}

func (d *discardVXLAN) ReadBatch(b [][]byte, s []int, o int) (int, error) { return d.read(b, s, o) }
func (d *discardVXLAN) Sources() []netip.Addr                             { return d.srcs }
func (d *discardVXLAN) OuterTOS() []uint8                                 { return d.toss }
func (d *discardVXLAN) WriteBatch(p [][]byte, _ []netip.AddrPort) (int, error) {
	return len(p), nil
}
func (d *discardVXLAN) BatchSize() int { return 8 }
func (d *discardVXLAN) Close() error   { return d.close() }

type discardNAT struct{}

func (discardNAT) HandleOffload([]byte, int, packet.VirtioNetHdr) {}

// discardSuperframes takes superframes whole and drops them.
type discardSuperframes struct{}

func (discardSuperframes) Frame(buf []byte, start int, _ netip.AddrPort, _ uint16, _ packet.VirtioNetHdr) ([]byte, bool) {
	return buf[start-encap.VXLANTapHeadroom:], true
}
func (discardSuperframes) Send([]byte) error { return nil }
func (discardSuperframes) Err() error        { return nil }

// discardIPIPSuperframes takes IP-in-IP superframes whole, UDP ones too,
// and drops them.
type discardIPIPSuperframes struct{}

func (discardIPIPSuperframes) Frame(buf []byte, ip int, _ netip.Addr, _ packet.VirtioNetHdr, _ int) ([]byte, bool) {
	return buf[ip-encap.IPIPTapHeadroom:], true
}
func (discardIPIPSuperframes) Send([]byte) error { return nil }
func (discardIPIPSuperframes) Err() error        { return nil }
func (discardIPIPSuperframes) WholeUDP() bool    { return true }

// TestForwardAllocsInMemory requires 0 allocations per packet on every
// path, TSO superframes included (segmentation, GRO, lanes), without root.
func TestForwardAllocsInMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race sync.Pool drops entries on purpose; make allocs runs this test without -race")
	}
	s := New(Config{})
	t.Cleanup(func() { s.Close() })
	src := &fakePod{dev: newFakePodDev("a", true), ip: netip.MustParseAddr("10.0.0.1"), mac: packet.MAC{2, 0, 0, 0, 0, 1}}
	ia, err := s.AddPodPort(PodPort{Name: "a", IP: src.ip, MAC: src.mac, Dev: src.dev})
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.AddPodPort(PodPort{Name: "b", IP: netip.MustParseAddr("10.0.0.2"), MAC: packet.MAC{2, 0, 0, 0, 0, 2}, Dev: &discardPod{newFakeQueue()}})
	if err != nil {
		t.Fatal(err)
	}
	vx := &discardVXLAN{fakeQueue: newFakeQueue(), srcs: []netip.Addr{nodeVXLAN}, toss: []uint8{packet.ECNECT0}}
	for _, err := range []error{
		s.AttachHost(&discardHost{newFakeQueue()}),
		s.AttachUnderlay(UnderlayConfig{Conn: &discardIPIP{newFakeQueue()}, Superframes: discardIPIPSuperframes{}}),
		s.AttachVXLAN(VXLANConfig{Conn: vx, Superframes: discardSuperframes{}}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.SetNodes(NodeSet{nodeIPIP: true, nodeVXLAN: true})
	s.SetNAT(NATConfig{Handler: discardNAT{}, Allowed: []netip.Prefix{pfx("10.0.0.0/16")}, Pools: []netip.Prefix{pfx("10.0.0.0/16")}})
	tab, err := router.NewTable([]router.Route{
		{Prefix: pfx("10.0.0.1/32"), Kind: router.KindLocalPod, Port: ia},
		{Prefix: pfx("10.0.0.2/32"), Kind: router.KindLocalPod, Port: ib},
		{Prefix: pfx("172.16.0.1/32"), Kind: router.KindHost},
		{Prefix: pfx("10.0.1.0/26"), Kind: router.KindRemote, NextHop: nodeIPIP, Encap: router.EncapIPIP},
		{Prefix: pfx("10.0.2.0/26"), Kind: router.KindRemote, NextHop: nodeVXLAN, Encap: router.EncapVXLAN},
		{Prefix: pfx("0.0.0.0/0"), Kind: router.KindNAT},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRoutes(tab)
	s.mu.Lock()
	a, vxPort, ipipPort := s.att.pods[ia], s.att.tunnels[router.EncapVXLAN], s.att.tunnels[router.EncapIPIP]
	vxRx := vxPort.t.Receivers()[0]
	s.mu.Unlock()

	fromA := func(frame []byte) func(f *forwarder, buf []byte) {
		return func(f *forwarder, buf []byte) {
			n := copy(buf[packet.Headroom:], frame)
			f.fromPod(a, buf, packet.Headroom, n)
		}
	}
	var segs []byte
	for i := range 4 {
		segs = vxlanDatagram(ipSpec{src: "10.0.2.5", dst: "10.0.0.2", proto: "tcp", payload: 1000, seq: uint32(1000 * i), df: true}.build(), encap.DefaultVNI)
	}
	injected, injectedHdr := injectedSuperframe("10.0.0.2")
	// burstFromA sends a burst of UDP datagrams from a, each in a buffer
	// of its own, as a batch of reads gives them.
	burstFromA := func(burst [][]byte) func(f *forwarder, buf []byte) {
		bufs := make([][]byte, len(burst))
		for i := range bufs {
			bufs[i] = make([]byte, packet.BufferSize)
		}
		return func(f *forwarder, _ []byte) {
			for i, fr := range burst {
				n := copy(bufs[i][packet.Headroom:], fr)
				f.fromPod(a, bufs[i], packet.Headroom, n)
			}
		}
	}
	for _, tc := range []struct {
		name string
		send func(f *forwarder, buf []byte)
	}{
		{"udp burst to pod (GRO)", burstFromA(udpBurst(src, "10.0.0.2", 4, 64))},
		{"udp burst over ipip (GRO, whole)", burstFromA(udpBurst(src, "10.0.1.9", 40, 64))},
		{"udp burst over ipip (GRO, cut: within the MTU)", burstFromA(udpBurst(src, "10.0.1.9", 4, 64))},
		{"pod to pod", fromA(podFrame(src, ipSpec{src: "10.0.0.1", dst: "10.0.0.2", payload: 64}.build()))},
		{"superframe to pod", fromA(superframe(src, "10.0.0.2", 8000, 1000))},
		{"superframe to host", fromA(superframe(src, "172.16.0.1", 8000, 1000))},
		{"superframe over ipip (whole)", fromA(superframe(src, "10.0.1.9", 8000, 1000))},
		{"superframe over ipip (cut: too big whole)", fromA(superframe(src, "10.0.1.9", encap.MaxIPIPTapInner-40+1, 1400))},
		{"superframe over vxlan (whole)", fromA(superframe(src, "10.0.2.9", 8000, 1000))},
		{"superframe over vxlan (cut: too big whole)", fromA(superframe(src, "10.0.2.9", encap.MaxVXLANTapInner, 1400))},
		{"superframe to nat", fromA(superframe(src, "198.51.100.1", 8000, 1000))},
		{"nat superframe injected to pod", func(*forwarder, []byte) { s.Inject(injected, injectedHdr) }},
		{"nat superframe injected in place", func(_ *forwarder, buf []byte) {
			n := copy(buf[packet.Headroom:], injected)
			s.InjectInPlace(buf[:packet.Headroom+n], packet.Headroom, injectedHdr)
		}},
		{"vxlan to pod (GRO)", func(f *forwarder, buf []byte) {
			n := copy(buf[packet.Headroom:], segs)
			f.fromTunnel(vxPort, vxRx, 0, buf, packet.Headroom, n)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForwarder(s)
			buf := make([]byte, packet.BufferSize)
			run := func() {
				f.begin()
				tc.send(f, buf)
				f.end()
			}
			run() // first use makes the reader's lanes
			if allocs := testing.AllocsPerRun(200, run); allocs != 0 {
				t.Errorf("%v allocations per packet, want 0", allocs)
			}
		})
	}
	if d := a.c.snapshot().Drops; len(d) != 0 {
		t.Errorf("drops on a: %v (the paths above must all forward)", d)
	}
	if vxPort.c.txSuperframes.Load() == 0 {
		t.Error("no superframe left the VXLAN tunnel whole: the (whole) case measured another path")
	}
	if ipipPort.c.txSuperframes.Load() == 0 {
		t.Error("no superframe left the IP-in-IP tunnel whole: the (whole) case measured another path")
	}
}

// answeringPod answers every frame written to it with one prepared reply
// that only TryRead returns (its own reader sleeps).
type answeringPod struct {
	fakeQueue
	reply []byte
	has   atomic.Bool
	turn  *turn.Turn
}

func (d *answeringPod) Name() string                                 { return "answering" }
func (d *answeringPod) Offload() bool                                { return false }
func (d *answeringPod) Read(b [][]byte, s []int, o int) (int, error) { return d.read(b, s, o) }
func (d *answeringPod) WriteOne([]byte) error                        { d.has.Store(true); return nil }
func (d *answeringPod) Close() error                                 { return d.close() }
func (d *answeringPod) SetTurn(t *turn.Turn)                         { d.turn = t }
func (d *answeringPod) TryRead(b [][]byte, s []int, o int) (int, error) {
	if !d.turn.Try() {
		return 0, turn.ErrHeld
	}
	if !d.has.Swap(false) {
		d.turn.Done()
		return 0, nil
	}
	s[0] = copy(b[0][o:], d.reply)
	return 1, nil
}

// TestReplyPollAllocs: a request forwarded and its answer polled and
// forwarded back allocate nothing.
func TestReplyPollAllocs(t *testing.T) {
	s := New(Config{ReplyPoll: time.Second})
	t.Cleanup(func() { s.Close() })
	a := &fakePod{dev: newFakePodDev("a", false), ip: netip.MustParseAddr("10.0.0.1"), mac: packet.MAC{2, 0, 0, 0, 0, 1}}
	e := &fakePod{dev: newFakePodDev("e", false), ip: netip.MustParseAddr("10.0.0.9"), mac: packet.MAC{2, 0, 0, 0, 0, 9}}
	ans := &answeringPod{fakeQueue: newFakeQueue(), reply: podFrame(e, ipSpec{src: "10.0.0.9", dst: "10.0.0.1", payload: 64}.build())}
	ia, err := s.AddPodPort(PodPort{Name: "a", IP: a.ip, MAC: a.mac, Dev: &discardPod{newFakeQueue()}})
	if err != nil {
		t.Fatal(err)
	}
	ie, err := s.AddPodPort(PodPort{Name: "e", IP: e.ip, MAC: e.mac, Dev: ans})
	if err != nil {
		t.Fatal(err)
	}
	tab, err := router.NewTable([]router.Route{
		{Prefix: pfx("10.0.0.1/32"), Kind: router.KindLocalPod, Port: ia},
		{Prefix: pfx("10.0.0.9/32"), Kind: router.KindLocalPod, Port: ie},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRoutes(tab)
	s.mu.Lock()
	pa, pe := s.att.pods[ia], s.att.pods[ie]
	s.mu.Unlock()
	// discardPod has offloads: its frames carry a virtio header.
	req := podFrame(&fakePod{dev: newFakePodDev("a", true), ip: a.ip, mac: a.mac}, ipSpec{src: "10.0.0.1", dst: "10.0.0.9", payload: 64}.build())
	f := newForwarder(s)
	bufs := [][]byte{make([]byte, packet.BufferSize)}
	sizes := make([]int, 1)
	run := func() {
		n := copy(bufs[0][packet.Headroom:], req)
		f.begin()
		f.fromPod(pa, bufs[0], packet.Headroom, n)
		f.end()
		if f.replyFrom != pe {
			t.Fatalf("after a write to e, the reader would poll %v, want e", f.replyFrom)
		}
		f.replyFrom = nil
		s.pollReply(f, pe, bufs, sizes)
	}
	run()
	before := pe.c.polled.Load()
	if allocs := testing.AllocsPerRun(200, run); allocs != 0 {
		t.Errorf("%v allocations per request and polled answer, want 0", allocs)
	}
	if got := pe.c.polled.Load() - before; got < 200 {
		t.Errorf("%d answers polled in 201 runs, want each", got)
	}
	if d := pa.c.snapshot().Drops; len(d) != 0 {
		t.Errorf("drops on a: %v", d)
	}
}
