package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
)

// newVXLANUnderlay is newUnderlay on its own subnet, so VXLAN and IPIP
// tests never share addresses:
//
//	netns A ("node A")                      netns B ("node B")
//	veth0 10.251.0.1/24 ─────────────────── veth0 10.251.0.2/24
//	VXLANConn :4789                         VXLANConn :4789, or the kernel's vx0
//
// Both namespaces are removed when the test ends, also on failure.
func newVXLANUnderlay(t testing.TB) *underlay {
	t.Helper()
	u := &underlay{
		nameA: nettest.UniqueName("vxA"),
		nameB: nettest.UniqueName("vxB"),
		addrA: netip.MustParseAddr("10.251.0.1"),
		addrB: netip.MustParseAddr("10.251.0.2"),
	}
	u.nsA = nettest.Netns(t, u.nameA)
	u.nsB = nettest.Netns(t, u.nameB)
	ip(t, "-n", u.nameA, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", u.nameB)
	ip(t, "-n", u.nameA, "addr", "add", "10.251.0.1/24", "dev", "veth0")
	ip(t, "-n", u.nameB, "addr", "add", "10.251.0.2/24", "dev", "veth0")
	ip(t, "-n", u.nameA, "link", "set", "veth0", "up")
	ip(t, "-n", u.nameB, "link", "set", "veth0", "up")
	// Resolve the neighbours both ways up front, so the first batch does
	// not wait in the kernel's ARP queue (unres_qlen_bytes) and get cut.
	if out, err := exec.Command("ip", "netns", "exec", u.nameA, "ping", "-c1", "-W5", "10.251.0.2").CombinedOutput(); err != nil {
		t.Fatalf("ping 10.251.0.2 from %s: %v\n%s", u.nameA, err, out)
	}
	return u
}

// listenVXLAN opens a VXLANConn inside the namespace at nsPath and closes
// it when the test ends.
func listenVXLAN(t testing.TB, nsPath string, cfg VXLANConfig) *VXLANConn {
	t.Helper()
	var c *VXLANConn
	if err := netnsutil.Do(nsPath, func() (err error) {
		c, err = ListenVXLAN(cfg)
		return err
	}); err != nil {
		t.Fatalf("ListenVXLAN in %s: %v", nsPath, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// vxlanDatagram returns the UDP payload for inner: EncapVXLAN run on a
// buffer with headroom, as the switch will.
func vxlanDatagram(inner []byte, vni uint32) []byte {
	buf := make([]byte, packet.Headroom+len(inner))
	copy(buf[packet.Headroom:], inner)
	return buf[EncapVXLAN(buf, packet.Headroom, vni):]
}

// rxDatagram is one datagram ReadBatch returned, copied out.
type rxDatagram struct {
	payload []byte
	src     netip.Addr
	port    uint16
}

// readVXLAN reads until want datagrams have arrived or timeout passes,
// with vectors of vec buffers. It returns copies and whether any
// recvmmsg slot held coalesced (GRO) datagrams.
func readVXLAN(t testing.TB, c *VXLANConn, want, vec int, timeout time.Duration) (got []rxDatagram, coalesced bool) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := readBufs(vec, 4096)
	sizes := make([]int, vec)
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, packet.Headroom)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(got), want, err)
		}
		srcs, ports := c.Sources(), c.SourcePorts()
		if len(srcs) != n || len(ports) != n {
			t.Fatalf("Sources: %d, SourcePorts: %d, want %d", len(srcs), len(ports), n)
		}
		for i := range n {
			p := append([]byte(nil), bufs[i][packet.Headroom:packet.Headroom+sizes[i]]...)
			got = append(got, rxDatagram{p, srcs[i], ports[i]})
		}
		// Same package: peek at the split state (no reader runs
		// concurrently) to learn whether GRO merged anything.
		for j := range c.pend {
			coalesced = coalesced || c.rseg[j] < c.rsize[j]
		}
	}
	return got, coalesced
}

// indexedFrame is an inner frame from A's VTEP to B's whose UDP payload
// starts with index i, padded to size bytes of UDP payload.
func indexedFrame(t testing.TB, i, size int) []byte {
	payload := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(payload, uint32(i))
	for k := 4; k < len(payload); k++ {
		payload[k] = byte(i + k)
	}
	return innerFrame(t, vtepA, vtepB, payload)
}

// frameIndex reads the index back with gopacket.
func frameIndex(t testing.TB, frame []byte) int {
	t.Helper()
	pk := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if udp == nil || len(udp.Payload) < 4 {
		t.Fatalf("inner frame is not Ethernet/IPv4/UDP: %v", pk)
	}
	return int(binary.BigEndian.Uint32(udp.Payload))
}

// TestVXLANConnVeth sends 200 VXLAN datagrams from node A to node B in one
// WriteBatch, with runs of equal sizes (GSO material: a run longer than 64
// and heavier than 65000 bytes, a run ending in a short one) and a tail
// alternating between two ports on B, and checks each arrives once,
// decapsulates to exactly the frame sent and names A as its source. It
// runs with both offloads, with GSO alone and with neither.
func TestVXLANConnVeth(t *testing.T) {
	for _, tt := range []struct {
		name     string
		gso, gro bool // at A, at B
	}{
		{name: "gso-gro", gso: true, gro: true},
		// The kernel segments A's GSO datagrams at B's socket.
		{name: "gso-only", gso: true},
		{name: "plain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := newVXLANUnderlay(t)
			a := listenVXLAN(t, u.nsA, VXLANConfig{DisableGSO: !tt.gso, DisableGRO: !tt.gro})
			cfgB := VXLANConfig{Local: u.addrB, DisableGSO: !tt.gso, DisableGRO: !tt.gro}
			b := listenVXLAN(t, u.nsB, cfgB)
			cfgB.Port = 4790
			b2 := listenVXLAN(t, u.nsB, cfgB)
			if a.GSO() != tt.gso || b.GRO() != tt.gro {
				t.Fatalf("offloads: GSO %v, GRO %v; want %v, %v (kernel %s)", a.GSO(), b.GRO(), tt.gso, tt.gro, osRelease())
			}

			const count = 200
			size := func(i int) int {
				switch {
				case i < 70:
					return 1350 // 70 × ~1400: split by 65000 bytes
				case i < 100:
					return 8 + i*7 // all different
				case i < 180:
					return 100 // 80 equal: split by 64 segments
				case i < 190:
					if i == 189 {
						return 50 // the short last one
					}
					return 300
				default:
					return 300
				}
			}
			toB := netip.AddrPortFrom(u.addrB, VXLANPort)
			toB2 := netip.AddrPortFrom(u.addrB, 4790)
			frames := make([][]byte, count)
			pkts := make([][]byte, count)
			dsts := make([]netip.AddrPort, count)
			wantB := 0
			for i := range count {
				frames[i] = indexedFrame(t, i, size(i))
				pkts[i] = vxlanDatagram(frames[i], DefaultVNI)
				dsts[i] = toB
				if i >= 190 && (i/2)%2 == 0 {
					dsts[i] = toB2
				}
				if dsts[i] == toB {
					wantB++
				}
			}
			n, err := a.WriteBatch(pkts, dsts)
			if err != nil || n != count {
				t.Fatalf("WriteBatch: got (%d, %v), want (%d, nil)", n, err, count)
			}

			gotB, coalesced := readVXLAN(t, b, wantB, b.BatchSize(), 5*time.Second)
			gotB2, _ := readVXLAN(t, b2, count-wantB, b2.BatchSize(), 5*time.Second)
			if want := tt.gso && tt.gro; coalesced != want {
				t.Errorf("B received coalesced datagrams: %v, want %v", coalesced, want)
			}
			seen := make([]bool, count)
			for k, got := range append(gotB, gotB2...) {
				inner, r := DecapVXLAN(got.payload, DefaultVNI)
				if r != DecapOK {
					t.Fatalf("datagram %d: DecapVXLAN: got %v, want ok (%x)", k, r, got.payload)
				}
				i := frameIndex(t, inner)
				if i >= count || seen[i] {
					t.Fatalf("frame index %d out of range or repeated", i)
				}
				seen[i] = true
				if string(inner) != string(frames[i]) {
					t.Errorf("frame %d:\ngot  %x\nwant %x", i, []byte(inner), frames[i])
				}
				if wantB2 := dsts[i] == toB2; wantB2 != (k >= len(gotB)) {
					t.Errorf("frame %d arrived at the wrong port", i)
				}
				if got.src != u.addrA || got.port != VXLANPort {
					t.Errorf("frame %d: source %v:%d, want %v:%d", i, got.src, got.port, u.addrA, VXLANPort)
				}
			}
		})
	}
}

func osRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// TestVXLANConnGROLeftovers reads coalesced datagrams with vectors of 3
// buffers: what does not fit must come out of later ReadBatch calls, in
// order within each coalesced datagram, before the socket is read again.
func TestVXLANConnGROLeftovers(t *testing.T) {
	u := newVXLANUnderlay(t)
	a := listenVXLAN(t, u.nsA, VXLANConfig{})
	b := listenVXLAN(t, u.nsB, VXLANConfig{})
	if !a.GSO() || !b.GRO() {
		t.Fatalf("offloads: GSO %v, GRO %v; want both (kernel %s)", a.GSO(), b.GRO(), osRelease())
	}
	const count = 40
	pkts := make([][]byte, count)
	dsts := make([]netip.AddrPort, count)
	for i := range pkts {
		pkts[i] = vxlanDatagram(indexedFrame(t, i, 500), DefaultVNI)
		dsts[i] = netip.AddrPortFrom(u.addrB, VXLANPort)
	}
	if n, err := a.WriteBatch(pkts, dsts); n != count || err != nil {
		t.Fatalf("WriteBatch: got (%d, %v), want (%d, nil)", n, err, count)
	}
	got, coalesced := readVXLAN(t, b, count, 3, 5*time.Second)
	if !coalesced {
		t.Fatalf("nothing coalesced: the leftover path was not exercised")
	}
	// One sendmmsg message, one GSO skb over the veth, one GRO datagram:
	// the order is the send order.
	for k, d := range got {
		inner, r := DecapVXLAN(d.payload, DefaultVNI)
		if r != DecapOK {
			t.Fatalf("datagram %d: %v", k, r)
		}
		if i := frameIndex(t, inner); i != k {
			t.Errorf("datagram %d carries frame %d", k, i)
		}
	}
}

// TestVXLANConnOversize sends equal-sized datagrams too big for the veth's
// 1500-byte MTU: the kernel cannot segment them, so WriteBatch resends
// them plainly (the kernel fragments them, DF is clear) and keeps GSO on.
func TestVXLANConnOversize(t *testing.T) {
	u := newVXLANUnderlay(t)
	a := listenVXLAN(t, u.nsA, VXLANConfig{})
	b := listenVXLAN(t, u.nsB, VXLANConfig{})
	dst := netip.AddrPortFrom(u.addrB, VXLANPort)
	var pkts [][]byte
	for i := range 4 {
		pkts = append(pkts, vxlanDatagram(indexedFrame(t, i, 1600), DefaultVNI))
	}
	for i := 4; i < 8; i++ { // then a normal run that GSO can take
		pkts = append(pkts, vxlanDatagram(indexedFrame(t, i, 1000), DefaultVNI))
	}
	dsts := []netip.AddrPort{dst, dst, dst, dst, dst, dst, dst, dst}
	if n, err := a.WriteBatch(pkts, dsts); n != len(pkts) || err != nil {
		t.Fatalf("WriteBatch: got (%d, %v), want (%d, nil)", n, err, len(pkts))
	}
	if !a.GSO() {
		t.Errorf("GSO turned off by an oversize run, want it kept")
	}
	// Same package: the EMSGSIZE path, not luck, sent the first run.
	// Packet 4 is shorter, so it ended that run as its last segment and
	// was resent plainly with it; 5..7 went out as one GSO message.
	if a.wplainUntil != 5 {
		t.Errorf("plain resend covered packets before %d, want 5", a.wplainUntil)
	}
	got, _ := readVXLAN(t, b, len(pkts), b.BatchSize(), 5*time.Second)
	seen := map[int]bool{}
	for _, d := range got {
		inner, r := DecapVXLAN(d.payload, DefaultVNI)
		if r != DecapOK {
			t.Fatalf("DecapVXLAN: %v", r)
		}
		i := frameIndex(t, inner)
		if string(d.payload) != string(pkts[i]) {
			t.Errorf("datagram %d differs from what was sent", i)
		}
		seen[i] = true
	}
	if len(seen) != len(pkts) {
		t.Errorf("got %d distinct datagrams, want %d", len(seen), len(pkts))
	}
}

// TestVXLANConnRefused mixes packets WriteBatch or the kernel must refuse
// with good ones: the good ones go out, the count says how many, and the
// joined error names each refused packet.
func TestVXLANConnRefused(t *testing.T) {
	u := newVXLANUnderlay(t)
	a := listenVXLAN(t, u.nsA, VXLANConfig{BatchSize: 4})
	b := listenVXLAN(t, u.nsB, VXLANConfig{})

	good := vxlanDatagram(indexedFrame(t, 0, 10), DefaultVNI)
	toB := netip.AddrPortFrom(u.addrB, VXLANPort)
	noRoute := netip.MustParseAddrPort("10.99.0.1:4789") // A has no route there
	pkts := [][]byte{good, good, nil, good, good, good, good, good}
	dsts := []netip.AddrPort{toB, noRoute, toB, netip.MustParseAddrPort("[fd00::1]:4789"), toB, {}, netip.AddrPortFrom(u.addrB, 0), toB}
	n, err := a.WriteBatch(pkts, dsts)
	if n != 3 {
		t.Errorf("WriteBatch sent: got %d, want 3", n)
	}
	if err == nil {
		t.Fatalf("WriteBatch error: got nil, want the refused packets")
	}
	for _, want := range []string{"packet 1 to 10.99.0.1:4789", "packet 2 is empty", "packet 3: destination [fd00::1]:4789",
		"packet 5: destination invalid AddrPort", "packet 6: destination 10.251.0.2:0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WriteBatch error %q does not contain %q", err, want)
		}
	}
	got, _ := readVXLAN(t, b, 3, b.BatchSize(), 5*time.Second)
	for _, d := range got {
		if string(d.payload) != string(good) {
			t.Errorf("received %x, want %x", d.payload, good)
		}
	}
	if _, err := a.WriteBatch(pkts, dsts[:1]); err == nil {
		t.Errorf("WriteBatch with too few destinations: got nil error")
	}
}

// TestVXLANConnClose checks that Close wakes a blocked reader with
// os.ErrClosed, is idempotent, and that later calls fail the same way.
func TestVXLANConnClose(t *testing.T) {
	u := newVXLANUnderlay(t)
	for _, cfg := range []VXLANConfig{{}, {DisableGRO: true, DisableGSO: true}} {
		c := listenVXLAN(t, u.nsA, cfg)
		bufs := readBufs(4, 2048)
		sizes := make([]int, 4)
		done := make(chan error, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ReadBatch(bufs, sizes, 0)
			done <- err
		}()
		time.Sleep(50 * time.Millisecond) // let the reader park in the poller
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("blocked ReadBatch after Close: got %v, want os.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("ReadBatch still blocked 5s after Close")
		}
		wg.Wait()
		if err := c.Close(); err != nil {
			t.Errorf("second Close: got %v, want nil", err)
		}
		if _, err := c.ReadBatch(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
			t.Errorf("ReadBatch after Close: got %v, want os.ErrClosed", err)
		}
		pkt := vxlanDatagram(indexedFrame(t, 0, 10), DefaultVNI)
		if _, err := c.WriteBatch([][]byte{pkt}, []netip.AddrPort{netip.AddrPortFrom(u.addrB, VXLANPort)}); !errors.Is(err, os.ErrClosed) {
			t.Errorf("WriteBatch after Close: got %v, want os.ErrClosed", err)
		}
	}
}

func TestVXLANConnDeadline(t *testing.T) {
	u := newVXLANUnderlay(t)
	c := listenVXLAN(t, u.nsA, VXLANConfig{})
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	bufs := readBufs(1, 2048)
	if _, err := c.ReadBatch(bufs, make([]int, 1), 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadBatch past deadline: got %v, want os.ErrDeadlineExceeded", err)
	}
	if _, err := c.ReadBatch(bufs, make([]int, 1), 2048); err == nil {
		t.Errorf("ReadBatch with offset at end of buffer: got nil error")
	}
	if len(c.Sources()) != 0 {
		t.Errorf("Sources after a failed ReadBatch: got %v, want none", c.Sources())
	}
}

func TestListenVXLANConfig(t *testing.T) {
	u := newVXLANUnderlay(t)
	tests := []struct {
		name string
		cfg  VXLANConfig
		want string // error substring, "" for success
	}{
		{name: "defaults", cfg: VXLANConfig{}},
		{name: "bound", cfg: VXLANConfig{Local: u.addrA, Port: 8472, BatchSize: 8, SocketBuffer: 1 << 20}},
		{name: "send-only", cfg: VXLANConfig{Local: u.addrA, Port: 8473, SendOnly: true}},
		{name: "IPv6 local", cfg: VXLANConfig{Local: netip.MustParseAddr("fd00::1")}, want: "not an IPv4 address"},
		{name: "negative batch", cfg: VXLANConfig{BatchSize: -1}, want: "BatchSize -1"},
		{name: "huge batch", cfg: VXLANConfig{BatchSize: 5000}, want: "BatchSize 5000"},
		{name: "bad port", cfg: VXLANConfig{Port: 70000}, want: "Port 70000"},
		{name: "foreign local", cfg: VXLANConfig{Local: netip.MustParseAddr("10.1.2.3")}, want: "bind 10.1.2.3:4789"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c *VXLANConn
			err := netnsutil.Do(u.nsA, func() (err error) { c, err = ListenVXLAN(tt.cfg); return err })
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ListenVXLAN: %v", err)
				}
				defer c.Close()
				wantBatch := cmpOr(tt.cfg.BatchSize, DefaultBatchSize)
				if c.BatchSize() != wantBatch {
					t.Errorf("BatchSize: got %d, want %d", c.BatchSize(), wantBatch)
				}
				if got := int(c.LocalAddr().Port()); got != cmpOr(tt.cfg.Port, VXLANPort) {
					t.Errorf("LocalAddr port: got %d, want %d", got, cmpOr(tt.cfg.Port, VXLANPort))
				}
				// A socket that receives is non-blocking: recvmmsg on it
				// is a raw system call (recvBatch), which must not block.
				c.raw.Control(func(fd uintptr) {
					fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
					if nb := err == nil && fl&unix.O_NONBLOCK != 0; nb == tt.cfg.SendOnly {
						t.Errorf("socket flags %#x (%v) with SendOnly %v: want non-blocking exactly when it receives", fl, err, tt.cfg.SendOnly)
					}
				})
				_, rerr := c.ReadBatch(make([][]byte, 1), make([]int, 1), 0)
				if refused := rerr != nil && strings.Contains(rerr.Error(), "only sends"); refused != tt.cfg.SendOnly {
					t.Errorf("ReadBatch on a conn with SendOnly %v: got %v", tt.cfg.SendOnly, rerr)
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("ListenVXLAN: got nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ListenVXLAN error: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("port in use", func(t *testing.T) {
		listenVXLAN(t, u.nsA, VXLANConfig{})
		err := netnsutil.Do(u.nsA, func() error {
			c, err := ListenVXLAN(VXLANConfig{})
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("second ListenVXLAN on 4789: got %v, want EADDRINUSE", err)
		}
	})
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// TestVXLANConnAllocs requires WriteBatch and ReadBatch to allocate
// nothing once warmed up, with the offloads and without.
func TestVXLANConnAllocs(t *testing.T) {
	u := newVXLANUnderlay(t)
	for _, cfg := range []VXLANConfig{{}, {DisableGSO: true, DisableGRO: true}} {
		t.Run(fmt.Sprintf("gso=%v", !cfg.DisableGSO), func(t *testing.T) {
			a := listenVXLAN(t, u.nsA, cfg)
			b := listenVXLAN(t, u.nsB, cfg)
			defer a.Close()
			defer b.Close()

			const per, runs = 16, 50
			pkts := make([][]byte, per)
			dsts := make([]netip.AddrPort, per)
			for i := range pkts {
				pkts[i] = vxlanDatagram(indexedFrame(t, i, 200), DefaultVNI)
				dsts[i] = netip.AddrPortFrom(u.addrB, VXLANPort)
			}
			bufs := readBufs(b.BatchSize(), 2048)
			sizes := make([]int, len(bufs))
			// Warm up: one round trip, so the poller and both conns are set up.
			if n, err := a.WriteBatch(pkts[:1], dsts[:1]); n != 1 || err != nil {
				t.Fatalf("warm-up WriteBatch: %d, %v", n, err)
			}
			readVXLAN(t, b, 1, 1, 5*time.Second)

			// AllocsPerRun calls f runs+1 times; everything stays queued
			// in B's 4 MiB receive buffer for the read phase.
			allocs := testing.AllocsPerRun(runs, func() {
				if n, err := a.WriteBatch(pkts, dsts); n != per || err != nil {
					t.Fatalf("WriteBatch: %d, %v", n, err)
				}
			})
			if allocs != 0 {
				t.Errorf("WriteBatch allocs per run: got %v, want 0", allocs)
			}
			b.SetReadDeadline(time.Now().Add(5 * time.Second))
			allocs = testing.AllocsPerRun(runs, func() {
				for got := 0; got < per; {
					n, err := b.ReadBatch(bufs[:per-got], sizes, 0)
					if err != nil {
						t.Fatalf("ReadBatch: %v", err)
					}
					_ = b.Sources()
					got += n
				}
			})
			if allocs != 0 {
				t.Errorf("ReadBatch allocs per run: got %v, want 0", allocs)
			}
		})
	}
}

// BenchmarkVXLANConn moves batches of 64 VXLAN datagrams of 1400 bytes
// from node A to node B across the veth (one WriteBatch, then ReadBatch
// until all 64 are in) and reports packets per second, with UDP GSO and
// GRO, with GSO alone (B's kernel segments) and with neither.
func BenchmarkVXLANConn(b *testing.B) {
	const batch, size = 64, 1400
	for _, tt := range []struct {
		name string
		cfg  VXLANConfig
	}{
		{"gso-gro", VXLANConfig{}},
		{"gso-only", VXLANConfig{DisableGRO: true}},
		{"plain", VXLANConfig{DisableGSO: true, DisableGRO: true}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			u := newVXLANUnderlay(b)
			ca := listenVXLAN(b, u.nsA, tt.cfg)
			cb := listenVXLAN(b, u.nsB, tt.cfg)
			bufs := readBufs(batch, 2048)
			sizes := make([]int, batch)
			pkts := make([][]byte, batch)
			dsts := make([]netip.AddrPort, batch)
			for i := range pkts {
				// UDP payload = 8 VXLAN + 14 Ethernet + 20 IPv4 + 8 UDP + data.
				pkts[i] = vxlanDatagram(indexedFrame(b, i, size-50), DefaultVNI)
				dsts[i] = netip.AddrPortFrom(u.addrB, VXLANPort)
			}
			if len(pkts[0]) != size {
				b.Fatalf("datagram size %d, want %d", len(pkts[0]), size)
			}
			lost := 0
			b.ReportAllocs()
			b.SetBytes(int64(batch * size))
			start := time.Now()
			for b.Loop() {
				if n, err := ca.WriteBatch(pkts, dsts); n != batch || err != nil {
					b.Fatalf("WriteBatch: %d, %v", n, err)
				}
				cb.SetReadDeadline(time.Now().Add(time.Second))
				for got := 0; got < batch; {
					n, err := cb.ReadBatch(bufs[:batch-got], sizes, 0)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						lost += batch - got
						break
					}
					if err != nil {
						b.Fatalf("ReadBatch: %v", err)
					}
					got += n
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "packets/s")
			b.ReportMetric(float64(lost)/float64(b.N*batch), "loss")
		})
	}
}

// TestGROSegment feeds the hand-written cmsg walker well-formed and
// malformed control buffers: it must find UDP_GRO behind other messages
// and give 0, never a wild read, for anything broken.
func TestGROSegment(t *testing.T) {
	// cmsg lays out one control message as the kernel does.
	cmsg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, unix.CmsgSpace(len(data)))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(len(data)))
		copy(b[unix.CmsgLen(0):], data)
		return b
	}
	seg := func(n int32) []byte { return binary.NativeEndian.AppendUint32(nil, uint32(n)) }
	gro := cmsg(unix.SOL_UDP, unix.UDP_GRO, seg(1400))
	other := cmsg(unix.SOL_IP, unix.IP_TTL, seg(64))
	badLen := append([]byte(nil), gro...)
	binary.NativeEndian.PutUint64(badLen, 200) // longer than the buffer
	tiny := append([]byte(nil), gro...)
	binary.NativeEndian.PutUint64(tiny, 4) // shorter than a cmsghdr
	tests := []struct {
		name string
		ctrl []byte
		n    int // Controllen; -1 means len(ctrl)
		want int
	}{
		{"none", nil, 0, 0},
		{"gro", gro, -1, 1400},
		{"after another", append(append([]byte(nil), other...), gro...), -1, 1400},
		{"other only", other, -1, 0},
		{"cut short", gro, 18, 0},
		{"length past buffer", badLen, -1, 0},
		{"length below header", tiny, -1, 0},
		{"controllen past buffer", gro, 1000, 1400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf [8]uint64
			b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), 64)
			copy(b, tt.ctrl)
			n := tt.n
			if n < 0 {
				n = len(tt.ctrl)
			}
			if got := groSegment(buf[:], uint64(n)); got != tt.want {
				t.Errorf("groSegment: got %d, want %d", got, tt.want)
			}
		})
	}
}

// Sockets opened with ReusePort share a port: each datagram reaches one
// of them, flows (outer source ports here) spread over all, and a
// socket that holds the port alone keeps it from them.
func TestVXLANConnReusePort(t *testing.T) {
	u := newVXLANUnderlay(t)
	const port, flows = 8479, 64
	rx := []*VXLANConn{
		listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB, Port: port, ReusePort: true}),
		listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB, Port: port, ReusePort: true}),
	}
	// One datagram from each of flows source ports: the kernel hashes
	// each 4-tuple to one socket, so both get some (a miss has odds of
	// 2^-63).
	dst := netip.AddrPortFrom(u.addrB, port)
	for i := range flows {
		c := listenVXLAN(t, u.nsA, VXLANConfig{Local: u.addrA, Port: AnyPort, SendOnly: true})
		if n, err := c.WriteBatch([][]byte{vxlanDatagram(indexedFrame(t, i, 100), DefaultVNI)}, []netip.AddrPort{dst}); n != 1 {
			t.Fatalf("send from flow %d: %d sent, %v", i, n, err)
		}
	}
	seen := make(map[int]bool)
	counts := make([]int, len(rx))
	for k, c := range rx {
		if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		bufs, sizes := readBufs(8, 4096), make([]int, 8)
		for {
			n, err := c.ReadBatch(bufs, sizes, packet.Headroom)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("socket %d: %v", k, err)
				}
				break
			}
			for i := range n {
				eth, reason := DecapVXLAN(bufs[i][packet.Headroom:packet.Headroom+sizes[i]], DefaultVNI)
				if reason != DecapOK {
					t.Fatalf("socket %d: decap: %v", k, reason)
				}
				idx := frameIndex(t, eth)
				if seen[idx] {
					t.Fatalf("flow %d's datagram read twice", idx)
				}
				seen[idx] = true
				counts[k]++
			}
		}
	}
	if len(seen) != flows || counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("%d of %d datagrams read, per socket %v: want all, spread over both", len(seen), flows, counts)
	}
	t.Logf("per socket: %v", counts)

	t.Run("group on a port another group holds", func(t *testing.T) {
		// As a second daemon in the namespace would: refused, not joined.
		var got []*VXLANConn
		err := netnsutil.Do(u.nsB, func() (err error) {
			got, err = ListenVXLANGroup(VXLANConfig{Local: u.addrB, Port: port}, 2)
			return err
		})
		for _, c := range got {
			c.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("ListenVXLANGroup on a port a group holds: got %v, want EADDRINUSE", err)
		}
	})
	t.Run("group", func(t *testing.T) {
		var got []*VXLANConn
		err := netnsutil.Do(u.nsB, func() (err error) {
			got, err = ListenVXLANGroup(VXLANConfig{Local: u.addrB, Port: port + 2}, 3)
			return err
		})
		for _, c := range got {
			defer c.Close()
		}
		if err != nil || len(got) != 3 {
			t.Fatalf("ListenVXLANGroup of 3: %d sockets, %v", len(got), err)
		}
	})
	t.Run("port held alone", func(t *testing.T) {
		listenVXLAN(t, u.nsB, VXLANConfig{Local: u.addrB, Port: port + 1})
		err := netnsutil.Do(u.nsB, func() error {
			c, err := ListenVXLAN(VXLANConfig{Local: u.addrB, Port: port + 1, ReusePort: true})
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("ReusePort socket on a port held alone: got %v, want EADDRINUSE", err)
		}
	})
}
