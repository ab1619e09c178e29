package vswitch

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// fakeSuperframes stands for encap.VXLANTap: Frame claims the same
// headroom, and Send puts the VXLAN datagram (what the kernel would cut
// up) into the VXLAN socket's sink, so a test sees superframes and
// ordinary datagrams in the order they left.
type fakeSuperframes struct {
	vx *fakeVXLAN

	mu       sync.Mutex
	srcPorts []uint16
	gsos     []packet.VirtioNetHdr
	inners   [][]byte // the inner IPv4 packet of each frame
	fail     error    // Send returns it
	broken   error    // Err returns it
}

func (f *fakeSuperframes) Frame(buf []byte, start int, dst netip.AddrPort, srcPort uint16, gso packet.VirtioNetHdr) ([]byte, bool) {
	if start < encap.VXLANTapHeadroom {
		return nil, false
	}
	f.mu.Lock()
	f.srcPorts = append(f.srcPorts, srcPort)
	f.gsos = append(f.gsos, gso)
	f.inners = append(f.inners, append([]byte(nil), buf[start+encap.VXLANHeaderLen+ethLen:]...))
	f.mu.Unlock()
	frame := buf[start-encap.VXLANTapHeadroom:]
	// Mark the frame as Frame's own, as the real one fills this with a
	// virtio-net header.
	frame[0] = 0xfe
	binary.BigEndian.PutUint16(frame[1:], dst.Port())
	copy(frame[3:7], dst.Addr().AsSlice())
	return frame, true
}

func (f *fakeSuperframes) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.broken
}

func (f *fakeSuperframes) Send(frame []byte) error {
	f.mu.Lock()
	err := f.fail
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if frame[0] != 0xfe {
		return errors.New("fake: not a frame Frame built")
	}
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(frame[3:7])), binary.BigEndian.Uint16(frame[1:]))
	f.vx.put(frame[encap.VXLANTapHeadroom:], dst)
	return nil
}

// reset forgets what Frame saw.
func (f *fakeSuperframes) reset() {
	f.mu.Lock()
	f.srcPorts, f.gsos, f.inners = f.srcPorts[:0], f.gsos[:0], f.inners[:0]
	f.mu.Unlock()
}

// newWholeNet is newFakeNet whose VXLAN tunnel sends superframes whole
// through sf.
func newWholeNet(t testing.TB) (*fakeNet, *fakeSuperframes) {
	t.Helper()
	n := newFakeNet(t)
	if err := n.s.DetachTunnel(router.EncapVXLAN); err != nil {
		t.Fatal(err)
	}
	n.vx = newFakeVXLAN()
	sf := &fakeSuperframes{vx: n.vx}
	if err := n.s.AttachVXLAN(VXLANConfig{Conn: n.vx, MTU: 1500, LocalMAC: vtepSelf, LocalAddr: nodeSelf, Superframes: sf}); err != nil {
		t.Fatal(err)
	}
	return n, sf
}

// innerOf returns the inner IPv4 packet of a VXLAN datagram.
func innerOf(t testing.TB, d []byte) packet.IPv4 {
	t.Helper()
	eth, r := encap.DecapVXLAN(d, encap.DefaultVNI)
	if r != encap.DecapOK {
		t.Fatalf("decap: %v", r)
	}
	ip, perr := packet.ParseIPv4Frame(eth)
	if perr != packet.ParseOK {
		t.Fatalf("inner: %v", perr)
	}
	return ip
}

// A pod's superframe toward a VXLAN route leaves whole, between the
// datagrams that came before and after it, from the sender's port.
func TestPodToVXLANWhole(t *testing.T) {
	n, sf := newWholeNet(t)
	before := ipSpec{src: "10.0.0.1", dst: "10.0.2.9", payload: 100}.build()
	after := ipSpec{src: "10.0.0.1", dst: "10.0.2.9", payload: 200}.build()
	n.a.dev.offer(podFrame(n.a, before), superframe(n.a, "10.0.2.9", 4000, 1000), podFrame(n.a, after))
	got, dsts := n.vx.wait(t, 3)
	for i, want := range []int{128, 4040, 228} {
		ip := innerOf(t, got[i])
		if len(ip) != want {
			t.Fatalf("datagram %d: inner packet of %d bytes, want %d (in order: udp, superframe, udp)", i, len(ip), want)
		}
		if dsts[i].(netip.AddrPort) != netip.AddrPortFrom(nodeVXLAN, encap.VXLANPort) {
			t.Errorf("datagram %d to %v, want %v:%d", i, dsts[i], nodeVXLAN, encap.VXLANPort)
		}
	}
	whole := innerOf(t, got[1])
	partial := packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, whole.SrcBytes(), whole.DstBytes(), uint16(len(whole)-20)))
	if packet.TCP(whole.Payload()).Checksum() != partial || whole.TTL() != 63 {
		t.Errorf("superframe: checksum %#04x TTL %d, want the partial sum %#04x (the kernel completes it) and TTL 63",
			packet.TCP(whole.Payload()).Checksum(), whole.TTL(), partial)
	}
	want := packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}
	if len(sf.gsos) != 1 || sf.gsos[0] != want || sf.srcPorts[0] != encap.VXLANPort {
		t.Errorf("Frame got gso %+v port %v, want %+v from port %d", sf.gsos, sf.srcPorts, want, encap.VXLANPort)
	}
	if s := n.stats("vxlan"); s.TxSuperframes != 1 || s.TxFrames != 3 {
		t.Errorf("vxlan TxSuperframes %d TxFrames %d, want 1 and 3", s.TxSuperframes, s.TxFrames)
	}
}

// What the kernel cannot take whole is cut as before: a superframe too
// big for one outer packet, or one without a partial checksum.
func TestPodToVXLANWholeLimits(t *testing.T) {
	n, _ := newWholeNet(t)
	big := superframe(n.a, "10.0.2.9", encap.MaxVXLANTapInner-40+1, 1400)
	n.a.dev.offer(big)
	segs := (encap.MaxVXLANTapInner - 40 + 1 + 1399) / 1400
	n.vx.wait(t, segs)
	complete := superframe(n.a, "10.0.2.9", 3000, 1000)
	complete[0] = 0 // no NEEDS_CSUM
	n.a.dev.offer(complete)
	got, _ := n.vx.wait(t, segs+3)
	for i, d := range got {
		if ip := innerOf(t, d); len(ip) > 1450 {
			t.Fatalf("datagram %d: inner packet of %d bytes, want segments of at most 1450", i, len(ip))
		}
	}
	if s := n.stats("vxlan"); s.TxSuperframes != 0 {
		t.Errorf("TxSuperframes = %d, want 0", s.TxSuperframes)
	}
}

// A failed whole send drops that superframe (counted); the next goes
// whole again. Three failures in a row turn the path off: the next
// superframe is cut and sent as datagrams.
func TestPodToVXLANWholeFails(t *testing.T) {
	n, sf := newWholeNet(t)
	setFail := func(err error) {
		sf.mu.Lock()
		sf.fail = err
		sf.mu.Unlock()
	}
	waitDrops := func(want uint64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); n.stats("vxlan").Drops["egress-error"] != want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("vxlan drops %v, want %d egress-error", n.stats("vxlan").Drops, want)
			}
		}
	}
	setFail(errors.New("write: invalid argument"))
	n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
	waitDrops(1)
	setFail(nil)
	n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
	if got, _ := n.vx.wait(t, 1); len(innerOf(t, got[0])) != 4040 {
		t.Fatalf("after one failure: inner packet of %d bytes, want the superframe whole", len(innerOf(t, got[0])))
	}
	if _, err := n.s.VXLANSuperframes(); err != nil {
		t.Fatalf("one failure turned the path off: %v", err)
	}
	setFail(errors.New("write: invalid argument"))
	for i := range maxSuperframeFails {
		n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
		waitDrops(uint64(2 + i))
	}
	setFail(nil)
	n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
	got, _ := n.vx.wait(t, 5)
	if len(got) != 5 || len(innerOf(t, got[4])) != 1040 {
		t.Fatalf("after %d failures in a row: %d datagrams, want the whole one and then 4 segments", maxSuperframeFails, len(got))
	}
	if s := n.stats("vxlan"); s.TxSuperframes != 1 {
		t.Errorf("TxSuperframes %d, want 1", s.TxSuperframes)
	}
	if _, err := n.s.VXLANSuperframes(); err == nil {
		t.Error("VXLANSuperframes: no failure after 3 failed sends in a row")
	}
}

// The tunnel closing under a send (DetachTunnel) is no failure of the path.
func TestPodToVXLANWholeClosed(t *testing.T) {
	n, sf := newWholeNet(t)
	sf.mu.Lock()
	sf.fail = os.ErrClosed
	sf.mu.Unlock()
	for range maxSuperframeFails + 1 {
		n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
	}
	for deadline := time.Now().Add(5 * time.Second); n.stats("vxlan").Drops["egress-error"] != maxSuperframeFails+1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("vxlan drops %v", n.stats("vxlan").Drops)
		}
	}
	if _, err := n.s.VXLANSuperframes(); err != nil {
		t.Errorf("VXLANSuperframes after sends to a closed TAP: %v, want nil", err)
	}
}

// Once what the tunnel sends whole no longer gets through (Err), the
// switch cuts superframes again.
func TestPodToVXLANWholeBroken(t *testing.T) {
	n, sf := newWholeNet(t)
	n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
	n.vx.wait(t, 1)
	sf.mu.Lock()
	sf.broken = errors.New("the kernel forwarded 0 datagrams")
	sf.mu.Unlock()
	n.a.dev.offer(superframe(n.a, "10.0.2.9", 4000, 1000))
	got, _ := n.vx.wait(t, 5)
	if len(got) != 5 || len(innerOf(t, got[4])) != 1040 {
		t.Fatalf("after Err: %d datagrams, want the whole one and then 4 segments", len(got))
	}
	if s := n.stats("vxlan"); s.TxSuperframes != 1 {
		t.Errorf("TxSuperframes = %d, want 1", s.TxSuperframes)
	}
	if attached, err := n.s.VXLANSuperframes(); !attached || err == nil || err.Error() != "the kernel forwarded 0 datagrams" {
		t.Errorf("VXLANSuperframes: %v, %v, want attached and the tunnel's error", attached, err)
	}
}

// A superframe that arrived whole (sent whole over a veth) reaches the pod
// as one, its partial checksum kept and its segment size the tunnel's.
func TestVXLANWholeToPod(t *testing.T) {
	n := newFakeNet(t)
	ip := ipSpec{src: "10.0.2.5", dst: "10.0.0.2", proto: "tcp", payload: 20000, df: true}.build()
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[16:], packet.Fold(packet.PseudoHeaderSum(packet.ProtoTCP, [4]byte(ip[12:16]), [4]byte(ip[16:20]), uint16(len(tcp)))))
	n.vx.offer(nodeVXLAN, vxlanDatagram(ip, encap.DefaultVNI))
	frames, _ := n.b.dev.wait(t, 1)
	h, got := podRx(t, n.b, frames[0])
	want := packet.VirtioNetHdr{Flags: packet.VirtioNetHdrFNeedsCsum, GSOType: packet.GSOTCPv4, HdrLen: ethLen + 40, GSOSize: 1450 - 40, CsumStart: ethLen + 20, CsumOffset: 16}
	if h != want || len(got) != len(ip) {
		t.Errorf("pod b got %d bytes with %+v, want %d with %+v", len(got), h, len(ip), want)
	}
	if s := n.stats("vxlan"); s.GSOFrames != 1 || len(s.Drops) != 0 {
		t.Errorf("vxlan GSOFrames %d drops %v, want 1 and none", s.GSOFrames, s.Drops)
	}
}

// A datagram bigger than the tunnel carries that is no whole superframe
// (a complete checksum: reassembled from fragments) is checked like any
// other: passed on as a plain packet when right, dropped when wrong.
func TestVXLANBigNotWhole(t *testing.T) {
	n := newFakeNet(t)
	ip := ipSpec{src: "10.0.2.5", dst: "10.0.0.2", proto: "tcp", payload: 3000, df: false}.build()
	n.vx.offer(nodeVXLAN, vxlanDatagram(ip, encap.DefaultVNI))
	frames, _ := n.b.dev.wait(t, 1)
	h, got := podRx(t, n.b, frames[0])
	if h.GSOType != packet.GSONone || len(got) != len(ip) {
		t.Errorf("pod b got %d bytes with %+v, want %d as a plain packet", len(got), h, len(ip))
	}
	bad := append([]byte(nil), ip...)
	bad[len(bad)-1] ^= 0xff
	n.vx.offer(nodeVXLAN, vxlanDatagram(bad, encap.DefaultVNI))
	for deadline := time.Now().Add(5 * time.Second); n.stats("vxlan").Drops["bad-inner-checksum"] != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("vxlan drops %v, want bad-inner-checksum", n.stats("vxlan").Drops)
		}
	}
	if s := n.stats("vxlan"); s.GSOFrames != 0 {
		t.Errorf("GSOFrames = %d, want 0", s.GSOFrames)
	}
}
