package vswitch

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// fakeIPIPSuperframes stands for encap.IPIPTap (encap's tests run the real
// one): Frame claims the same headroom (and marks UDP superframes as the
// real one does), and Send puts the inner superframe (what the kernel
// would cut up) into the IP-in-IP socket's sink, so a test sees
// superframes and ordinary packets in the order they left.
type fakeIPIPSuperframes struct {
	ipip *fakeIPIP
	udp  bool // WholeUDP; set before the tunnel is attached

	mu     sync.Mutex
	gsos   []packet.VirtioNetHdr
	fail   error // Send returns it
	broken error // Err returns it
}

func (f *fakeIPIPSuperframes) Frame(buf []byte, ip int, dst netip.Addr, gso packet.VirtioNetHdr, mtu int) ([]byte, bool) {
	if ip < encap.IPIPTapHeadroom {
		return nil, false
	}
	if gso.GSOType == packet.GSOUDPL4 {
		in := packet.IPv4(buf[ip:])
		if !f.udp || !encap.WholeUDPSuperframe(in, gso, mtu) {
			return nil, false
		}
		packet.MarkUDPSegments(in, int(gso.GSOSize))
	}
	f.mu.Lock()
	f.gsos = append(f.gsos, gso)
	f.mu.Unlock()
	frame := buf[ip-encap.IPIPTapHeadroom:]
	// Mark the frame as Frame's own, as the real one fills this with a
	// virtio-net header.
	frame[0] = 0xfe
	copy(frame[1:5], dst.AsSlice())
	return frame, true
}

func (f *fakeIPIPSuperframes) Send(frame []byte) error {
	f.mu.Lock()
	err := f.fail
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if frame[0] != 0xfe {
		return errors.New("fake: not a frame Frame built")
	}
	f.ipip.put(frame[encap.IPIPTapHeadroom:], netip.AddrFrom4([4]byte(frame[1:5])))
	return nil
}

func (f *fakeIPIPSuperframes) WholeUDP() bool { return f.udp }

func (f *fakeIPIPSuperframes) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.broken
}

// newIPIPWholeNet is newFakeNet, with a host TUN that takes
// superframes, whose IP-in-IP tunnel sends superframes whole through sf,
// UDP ones too with udp.
func newIPIPWholeNet(t testing.TB, udp bool) (*fakeNet, *fakeIPIPSuperframes) {
	t.Helper()
	n := newFakeNetHost(t, true)
	if err := n.s.DetachTunnel(router.EncapIPIP); err != nil {
		t.Fatal(err)
	}
	n.ipip = &fakeIPIP{fakeQueue: newFakeQueue()}
	sf := &fakeIPIPSuperframes{ipip: n.ipip, udp: udp}
	if err := n.s.AttachUnderlay(UnderlayConfig{Conn: n.ipip, MTU: 1500, LocalAddr: nodeSelf, Superframes: sf}); err != nil {
		t.Fatal(err)
	}
	return n, sf
}

// A pod's superframe toward an IP-in-IP route leaves whole, between the
// packets that came before and after it, to the route's node.
func TestPodToIPIPWhole(t *testing.T) {
	n, sf := newIPIPWholeNet(t, false)
	before := ipSpec{src: "10.0.0.1", dst: "10.0.1.9", payload: 100}.build()
	after := ipSpec{src: "10.0.0.1", dst: "10.0.1.9", payload: 200}.build()
	n.a.dev.offer(podFrame(n.a, before), superframe(n.a, "10.0.1.9", 4000, 1000), podFrame(n.a, after))
	got, dsts := n.ipip.wait(t, 3)
	for i, want := range []int{128, 4040, 228} {
		if len(got[i]) != want {
			t.Fatalf("packet %d: %d bytes, want %d (in order: udp, superframe, udp)", i, len(got[i]), want)
		}
		if dsts[i].(netip.Addr) != nodeIPIP {
			t.Errorf("packet %d to %v, want %v", i, dsts[i], nodeIPIP)
		}
	}
	whole := packet.IPv4(got[1])
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, whole.SrcBytes(), whole.DstBytes(), uint16(len(whole)-20)))
	if packet.TCP(whole.Payload()).Checksum() != partial || whole.TTL() != 63 {
		t.Errorf("superframe: checksum %#04x TTL %d, want the partial sum %#04x (the kernel completes it) and TTL 63",
			packet.TCP(whole.Payload()).Checksum(), whole.TTL(), partial)
	}
	want := packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}
	if len(sf.gsos) != 1 || sf.gsos[0] != want {
		t.Errorf("Frame got gso %+v, want %+v", sf.gsos, want)
	}
	if s := n.stats("ipip"); s.TxSuperframes != 1 || s.TxFrames != 3 || s.TxBytes != 128+4040+228 {
		t.Errorf("ipip TxSuperframes %d TxFrames %d TxBytes %d, want 1, 3 and %d", s.TxSuperframes, s.TxFrames, s.TxBytes, 128+4040+228)
	}
	if attached, err := n.s.IPIPSuperframes(); !attached || err != nil {
		t.Errorf("IPIPSuperframes() = %v, %v; want attached, no failure", attached, err)
	}
}

// What the kernel cannot take whole is cut as before: a superframe too
// big for one outer packet; and once what the tunnel sends whole no
// longer gets through (Err), every superframe.
func TestPodToIPIPWholeLimits(t *testing.T) {
	n, sf := newIPIPWholeNet(t, false)
	n.a.dev.offer(superframe(n.a, "10.0.1.9", encap.MaxIPIPTapInner-40+1, 1400))
	segs := (encap.MaxIPIPTapInner - 40 + 1 + 1399) / 1400
	n.ipip.wait(t, segs)

	sf.mu.Lock()
	sf.broken = errors.New("the kernel transmitted 0 packets")
	sf.mu.Unlock()
	n.a.dev.offer(superframe(n.a, "10.0.1.9", 3000, 1000))
	got, _ := n.ipip.wait(t, segs+3)
	for i, p := range got {
		if len(p) > 1480 {
			t.Fatalf("packet %d: %d bytes, want segments of at most 1480", i, len(p))
		}
	}
	if s := n.stats("ipip"); s.TxSuperframes != 0 {
		t.Errorf("TxSuperframes = %d, want 0", s.TxSuperframes)
	}
	if _, err := n.s.IPIPSuperframes(); err == nil || err.Error() != "the kernel transmitted 0 packets" {
		t.Errorf("IPIPSuperframes() failure = %v, want the sink's error", err)
	}
}

// A refused whole send drops that superframe (counted as egress-error);
// three in a row turn the path off, and superframes are cut again.
func TestPodToIPIPWholeFails(t *testing.T) {
	n, sf := newIPIPWholeNet(t, false)
	sf.mu.Lock()
	sf.fail = errors.New("no buffer space")
	sf.mu.Unlock()
	for i := range maxSuperframeFails {
		n.a.dev.offer(superframe(n.a, "10.0.1.9", 3000, 1000))
		n.waitDrop(t, "ipip", DropEgressError, uint64(i))
	}
	sf.mu.Lock()
	sf.fail = nil
	sf.mu.Unlock()
	n.a.dev.offer(superframe(n.a, "10.0.1.9", 3000, 1000))
	got, _ := n.ipip.wait(t, 3)
	for i, p := range got {
		if len(p) != 1040 {
			t.Fatalf("packet %d: %d bytes, want the superframe cut into segments of 1040", i, len(p))
		}
	}
	if _, err := n.s.IPIPSuperframes(); err == nil || err.Error() != "no buffer space" {
		t.Errorf("IPIPSuperframes() failure = %v, want the refusals' error", err)
	}
}

// A burst of one flow's datagrams toward an IP-in-IP route is merged and
// leaves whole, marked with its datagrams' size, where it is larger than
// the tunnel's MTU; a burst that fits in one packet leaves as its
// datagrams, each with a complete checksum.
func TestPodUDPToIPIPWhole(t *testing.T) {
	n, sf := newIPIPWholeNet(t, true)
	n.a.dev.offer(udpBurst(n.a, "10.0.1.9", 8, 200)...)
	got, dsts := n.ipip.wait(t, 1)
	whole := packet.IPv4(got[0])
	if len(whole) != 28+8*200 || dsts[0].(netip.Addr) != nodeIPIP || whole.TTL() != 63 {
		t.Fatalf("burst of 8: %d bytes to %v (TTL %d), want %d to %v, TTL 63", len(whole), dsts[0], whole.TTL(), 28+8*200, nodeIPIP)
	}
	if size, ok := packet.MarkedUDPSegments(whole, 1480); !ok || size != 200 {
		t.Errorf("the superframe is not marked with its datagrams' size: %d, %v", size, ok)
	}
	want := packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOUDPL4, HdrLen: 28, GSOSize: 200, CsumStart: 20, CsumOffset: 6}
	if len(sf.gsos) != 1 || sf.gsos[0] != want {
		t.Errorf("Frame got gso %+v, want %+v", sf.gsos, want)
	}

	n.a.dev.offer(udpBurst(n.a, "10.0.1.9", 4, 64)...)
	got, _ = n.ipip.wait(t, 5)
	for i, p := range got[1:] {
		ip := packet.IPv4(p)
		if len(ip) != 28+64 || !packet.TransportChecksumValid(ip) {
			t.Errorf("burst of 4, datagram %d: %d bytes, checksum valid %v; want %d, valid", i, len(ip), packet.TransportChecksumValid(ip), 28+64)
		}
	}
	if s := n.stats("ipip"); s.TxSuperframes != 1 || s.TxFrames != 5 || len(s.Drops) != 0 {
		t.Errorf("ipip TxSuperframes %d TxFrames %d drops %v, want 1, 5 and none", s.TxSuperframes, s.TxFrames, s.Drops)
	}
}

// Without UDP superframes (a kernel without USO) a burst leaves as its
// datagrams, as before.
func TestPodUDPToIPIPCutWithoutUSO(t *testing.T) {
	n, sf := newIPIPWholeNet(t, false)
	n.a.dev.offer(udpBurst(n.a, "10.0.1.9", 8, 200)...)
	got, _ := n.ipip.wait(t, 8)
	for i, p := range got {
		if len(p) != 28+200 {
			t.Fatalf("datagram %d: %d bytes, want %d", i, len(p), 28+200)
		}
	}
	if len(sf.gsos) != 0 {
		t.Errorf("Frame got %d superframes, want none", len(sf.gsos))
	}
}

// A marked UDP superframe that arrived whole (across a veth underlay)
// goes on as a superframe: whole to a pod whose TAP takes UDP
// superframes, as its datagrams to one that does not.
func TestIPIPMarkedUDPToPods(t *testing.T) {
	n := newFakeNet(t)
	e := n.addUSOPod(t)
	marked := func(dst string) []byte {
		ip := packet.IPv4(ipSpec{src: "10.0.1.5", dst: dst, payload: 40*64 - 10}.build())
		packet.AsUDPSuperframe(ip, 64)
		packet.MarkUDPSegments(ip, 64)
		return ipipPacket(nodeIPIP, ip)
	}
	before := n.stats("ipip").GSOFrames
	n.ipip.offer(marked("10.0.0.9"))
	frames, _ := e.dev.wait(t, 1)
	h, ip := podRx(t, e, frames[0])
	want := packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOUDPL4, HdrLen: ethLen + 28, GSOSize: 64, CsumStart: ethLen + 20, CsumOffset: 6}
	if h != want || len(ip) != 28+40*64-10 || int(packet.UDP(ip[20:]).Length()) != 8+40*64-10 {
		t.Errorf("to the USO pod: %+v, %d bytes, UDP length %d; want %+v, %d bytes, the UDP length of the whole", h, len(ip), packet.UDP(ip[20:]).Length(), want, 28+40*64-10)
	}

	n.ipip.offer(marked("10.0.0.3"))
	frames, _ = n.c.dev.wait(t, 40)
	for i, f := range frames {
		_, ip := podRx(t, n.c, f)
		wantLen := 64
		if i == 39 {
			wantLen = 54
		}
		if len(ip) != 28+wantLen || !packet.TransportChecksumValid(ip) {
			t.Fatalf("datagram %d to plain pod c: %d bytes, checksum valid %v; want %d, valid", i, len(ip), packet.TransportChecksumValid(ip), 28+wantLen)
		}
	}
	if got := n.stats("ipip").GSOFrames - before; got != 2 {
		t.Errorf("ipip port counted %d superframes received, want 2", got)
	}
}

// A datagram GRO holds for the tunnel leaves before a superframe of the
// same flow that the tunnel cuts (one that fits a packet): the switch
// writes out what GRO holds before it cuts.
func TestUDPToIPIPKeepsOrder(t *testing.T) {
	n, _ := newIPIPWholeNet(t, true)
	lone := append(make([]byte, vnetLen), ipSpec{src: "172.16.0.1", dst: "10.0.1.9", payload: 90}.build()...)
	n.host.offer(lone, hostUDPSuperframe("172.16.0.1", "10.0.1.9", 4, 100, 50))
	got, _ := n.ipip.wait(t, 6)
	for i, want := range []int{118, 128, 128, 128, 128, 78} {
		if len(got[i]) != want {
			t.Fatalf("packet %d: %d bytes, want %d: the lone datagram first, then the superframe's five", i, len(got[i]), want)
		}
	}
}

// When the tunnel's whole-superframe path stops during a batch (its
// forwarding watch, or refusals during the batch's own flushes), what
// GRO holds for it leaves cut, in order, and nothing is dropped.
func TestUDPToIPIPWhenWholeStops(t *testing.T) {
	n, sf := newIPIPWholeNet(t, true)
	n.s.mu.Lock()
	a := n.s.att.pods[n.a.port]
	n.s.mu.Unlock()
	f := newForwarder(n.s)
	f.begin()
	for i, fr := range udpBurst(n.a, "10.0.1.9", 8, 200) {
		buf := make([]byte, packet.BufferSize)
		m := copy(buf[packet.Headroom:], fr)
		binary.BigEndian.PutUint32(buf[packet.Headroom+ethLen+28+packet.VirtioNetHdrLen:], uint32(i)) // a sequence number
		f.fromPod(a, buf, packet.Headroom, m)
	}
	sf.mu.Lock()
	sf.broken = errors.New("the program is gone")
	sf.mu.Unlock()
	f.end()
	got, _ := n.ipip.wait(t, 8)
	for i, p := range got {
		ip := packet.IPv4(p)
		if len(ip) != 228 || binary.BigEndian.Uint32(ip[28:]) != uint32(i) || !packet.TransportChecksumValid(ip) {
			t.Fatalf("packet %d: %d bytes, sequence %d, checksum valid %v; want datagram %d of 228 bytes, valid",
				i, len(ip), binary.BigEndian.Uint32(ip[28:]), packet.TransportChecksumValid(ip), i)
		}
	}
	if s := n.stats("a"); len(s.Drops) != 0 {
		t.Errorf("drops on a: %v", s.Drops)
	}
	if len(sf.gsos) != 0 {
		t.Errorf("%d superframes went whole after the path stopped", len(sf.gsos))
	}
}
