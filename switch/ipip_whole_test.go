package vswitch

import (
	"errors"
	"net/netip"
	"sync"
	"testing"

	"podnet/encap"
	"podnet/internal/packet"
	"podnet/router"
)

// fakeIPIPSuperframes stands for encap.IPIPTap (encap's tests run the real
// one): Frame claims the same headroom, and Send puts the inner superframe
// (what the kernel would cut up) into the IP-in-IP socket's sink, so a
// test sees superframes and ordinary packets in the order they left.
type fakeIPIPSuperframes struct {
	ipip *fakeIPIP

	mu     sync.Mutex
	gsos   []packet.VirtioNetHdr
	fail   error // Send returns it
	broken error // Err returns it
}

func (f *fakeIPIPSuperframes) Frame(buf []byte, ip int, dst netip.Addr, gso packet.VirtioNetHdr) ([]byte, bool) {
	if ip < encap.IPIPTapHeadroom {
		return nil, false
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

func (f *fakeIPIPSuperframes) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.broken
}

// newIPIPWholeNet is newFakeNet whose IP-in-IP tunnel sends superframes
// whole through sf.
func newIPIPWholeNet(t testing.TB) (*fakeNet, *fakeIPIPSuperframes) {
	t.Helper()
	n := newFakeNet(t)
	if err := n.s.DetachTunnel(router.EncapIPIP); err != nil {
		t.Fatal(err)
	}
	n.ipip = &fakeIPIP{fakeQueue: newFakeQueue()}
	sf := &fakeIPIPSuperframes{ipip: n.ipip}
	if err := n.s.AttachUnderlay(UnderlayConfig{Conn: n.ipip, MTU: 1500, LocalAddr: nodeSelf, Superframes: sf}); err != nil {
		t.Fatal(err)
	}
	return n, sf
}

// A pod's superframe toward an IP-in-IP route leaves whole, between the
// packets that came before and after it, to the route's node.
func TestPodToIPIPWhole(t *testing.T) {
	n, sf := newIPIPWholeNet(t)
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
	n, sf := newIPIPWholeNet(t)
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
	n, sf := newIPIPWholeNet(t)
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
