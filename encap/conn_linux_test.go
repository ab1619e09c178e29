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
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
)

// The core's tests run in one fresh namespace per test, over its
// loopback (and, for a writer that must block, a veth pair whose egress
// is throttled): no transport, no header, just datagrams.

// protoExperiment is the raw sockets' IP protocol: 253 is reserved for
// experimentation (RFC 3692), so no kernel handler answers it with ICMP
// errors that would land on the socket as sk_err, as an IP-in-IP packet
// would with the ipip module loaded but no tunnel up.
const protoExperiment = 253

var loopback = netip.MustParseAddr("127.0.0.1")

func rawSpec() socketSpec {
	return socketSpec{name: "raw", typ: unix.SOCK_RAW, proto: protoExperiment}
}

func udpSpec(gso, gro bool) socketSpec {
	return socketSpec{name: "udp", typ: unix.SOCK_DGRAM, proto: unix.IPPROTO_UDP,
		local: loopback, port: AnyPort, gso: gso, gro: gro}
}

// coreNetns is a namespace with lo up, removed when the test ends.
func coreNetns(t testing.TB) (path, name string) {
	t.Helper()
	name = nettest.UniqueName("core")
	return nettest.Netns(t, name), name
}

// openCore opens a core in the namespace at nsPath and closes it when
// the test ends.
func openCore(t testing.TB, nsPath string, s socketSpec) *batchConn {
	t.Helper()
	c := new(batchConn)
	if err := netnsutil.Do(nsPath, func() error { return c.open(s) }); err != nil {
		t.Fatalf("open %s core in %s: %v", s.name, nsPath, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// numbered returns n datagrams of the given sizes, each starting with
// its index so the receiver can tell them apart (sizes are ≥ 4).
func numbered(sizes ...int) [][]byte {
	pkts := make([][]byte, len(sizes))
	for i, size := range sizes {
		p := make([]byte, size)
		binary.BigEndian.PutUint32(p, uint32(i))
		for k := 4; k < size; k++ {
			p[k] = byte(i ^ k)
		}
		pkts[i] = p
	}
	return pkts
}

// repeat returns n copies of size, for numbered.
func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// readCore reads until want datagrams have arrived, with vectors of vec
// buffers, and returns copies of what arrived (minus hdr bytes of IP
// header a raw socket delivers), their sources, and whether any slot
// held datagrams GRO had coalesced.
func readCore(t testing.TB, c *batchConn, want, vec, hdr int) (got [][]byte, srcs []netip.Addr, coalesced bool) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := readBufs(vec, 1<<16)
	sizes := make([]int, vec)
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(got), want, err)
		}
		if len(c.Sources()) != n {
			t.Fatalf("Sources: %d entries for %d datagrams", len(c.Sources()), n)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][hdr:sizes[i]]...))
		}
		srcs = append(srcs, c.Sources()...)
		for j := range c.pend { // no reader runs concurrently
			coalesced = coalesced || c.rseg[j] < c.rsize[j]
		}
	}
	return got, srcs, coalesced
}

// TestBatchConnRoundTrip sends one batch over loopback on each socket
// kind and offload setting the core supports and checks every datagram
// arrives once, in order, intact, with the sender as its source.
func TestBatchConnRoundTrip(t *testing.T) {
	ns, _ := coreNetns(t)
	for _, tt := range []struct {
		name string
		spec socketSpec
		hdr  int // what the socket delivers before the payload
	}{
		{"raw", rawSpec(), 20},
		{"udp-plain", udpSpec(false, false), 0},
		{"udp-gso-gro", udpSpec(true, true), 0},
		{"udp-gso-only", udpSpec(true, false), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := openCore(t, ns, tt.spec)
			b := openCore(t, ns, tt.spec)
			// 70 equal (more than one GSO message), a short last, then
			// all different.
			sizes := append(repeat(70, 900), 300)
			for i := range 30 {
				sizes = append(sizes, 4+i*37)
			}
			pkts := numbered(sizes...)
			var n int
			var err error
			if tt.spec.typ == unix.SOCK_RAW {
				dsts := make([]netip.Addr, len(pkts))
				for i := range dsts {
					dsts[i] = loopback
				}
				n, err = a.writeToAddrs(pkts, dsts)
			} else {
				dsts := make([]netip.AddrPort, len(pkts))
				for i := range dsts {
					dsts[i] = b.local
				}
				n, err = a.writeToAddrPorts(pkts, dsts)
			}
			if n != len(pkts) || err != nil {
				t.Fatalf("write: got (%d, %v), want (%d, nil)", n, err, len(pkts))
			}
			got, srcs, _ := readCore(t, b, len(pkts), b.BatchSize(), tt.hdr)
			for i, p := range got {
				if string(p) != string(pkts[i]) {
					t.Fatalf("datagram %d: got %d bytes %x…, want %d bytes %x…", i, len(p), p[:min(8, len(p))], len(pkts[i]), pkts[i][:8])
				}
				if srcs[i] != loopback {
					t.Errorf("datagram %d: source %v, want %v", i, srcs[i], loopback)
				}
			}
		})
	}
}

// TestBatchConnQueueDrops: datagrams that arrive while the receive
// socket's buffer is full are dropped by the kernel, and QueueDrops
// counts exactly those: with nothing reading, every datagram sent is
// either queued or counted.
func TestBatchConnQueueDrops(t *testing.T) {
	ns, _ := coreNetns(t)
	for _, spec := range []socketSpec{rawSpec(), udpSpec(false, false)} {
		t.Run(spec.name, func(t *testing.T) {
			const sent = 300
			a := openCore(t, ns, spec)
			small := spec
			small.buffer = 4096 // the kernel doubles it: a few datagrams
			b := openCore(t, ns, small)
			base, err := b.QueueDrops()
			if err != nil {
				t.Fatal(err)
			}
			pkts := numbered(repeat(sent, 200)...)
			var n int
			if spec.typ == unix.SOCK_RAW {
				dsts := make([]netip.Addr, sent)
				for i := range dsts {
					dsts[i] = loopback
				}
				n, err = a.writeToAddrs(pkts, dsts)
			} else {
				dsts := make([]netip.AddrPort, sent)
				for i := range dsts {
					dsts[i] = b.local
				}
				n, err = a.writeToAddrPorts(pkts, dsts)
			}
			if n != sent || err != nil {
				t.Fatalf("write: got (%d, %v), want (%d, nil)", n, err, sent)
			}
			// Read until a pause, then count: whatever the kernel still
			// had to deliver after the send has been queued or dropped.
			queued := 0
			bufs, sizes := readBufs(b.BatchSize(), 2048), make([]int, b.BatchSize())
			for {
				b.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := b.ReadBatch(bufs, sizes, 0)
				if err != nil {
					break
				}
				queued += n
			}
			drops, err := b.QueueDrops()
			if err != nil {
				t.Fatal(err)
			}
			drops -= base
			t.Logf("%d datagrams queued, %d dropped", queued, drops)
			if drops == 0 || queued == 0 {
				t.Fatalf("%d queued and %d dropped of %d: the buffer should hold some and not all", queued, drops, sent)
			}
			if uint64(queued)+drops != sent {
				t.Errorf("%d queued + %d dropped, want the %d sent", queued, drops, sent)
			}
		})
	}
}

// TestBatchConnReadWholeBatch: one ReadBatch returns everything queued,
// up to the batch, although only the first rawRecvSlots slots are read
// with a raw system call and the rest with an ordinary one (recvBatch);
// in order, with the right sizes and sources.
func TestBatchConnReadWholeBatch(t *testing.T) {
	ns, _ := coreNetns(t)
	a := openCore(t, ns, udpSpec(false, false))
	b := openCore(t, ns, udpSpec(false, false))
	const queued, vec = 3*rawRecvSlots + 1, 4 * rawRecvSlots
	pkts := numbered(repeat(queued, 200)...)
	dsts := make([]netip.AddrPort, len(pkts))
	for i := range dsts {
		dsts[i] = b.local
	}
	if n, err := a.writeToAddrPorts(pkts, dsts); n != len(pkts) || err != nil {
		t.Fatalf("write: got (%d, %v), want (%d, nil)", n, err, len(pkts))
	}
	// Loopback delivers each datagram within the sending call (the
	// softirq runs as the send returns), so all of them are queued now.
	bufs, sizes := readBufs(vec, 2048), make([]int, vec)
	n, err := b.ReadBatch(bufs, sizes, 0)
	if err != nil || n != queued {
		t.Fatalf("ReadBatch with %d datagrams queued: got (%d, %v), want all of them in one call", queued, n, err)
	}
	for i := range n {
		if sizes[i] != len(pkts[i]) || string(bufs[i][:sizes[i]]) != string(pkts[i]) || b.Sources()[i] != loopback {
			t.Fatalf("datagram %d: %d bytes from %v, want datagram %d (%d bytes) from %v", i, sizes[i], b.Sources()[i], i, len(pkts[i]), loopback)
		}
	}
}

// TestFillWriteGSO checks how the core groups packets into UDP_SEGMENT
// messages, without sending: equal runs to one destination become one
// message, limited to 64 segments, 65000 bytes and the batch; a shorter
// packet ends its run; anything else starts a new message.
func TestFillWriteGSO(t *testing.T) {
	ns, _ := coreNetns(t)
	x := netip.MustParseAddrPort("127.0.0.1:5000")
	y := netip.MustParseAddrPort("127.0.0.2:5000")
	type msg struct{ segs, seg int } // seg: the UDP_SEGMENT size, 0 for a plain message
	tests := []struct {
		name       string
		gso        bool
		batch      int
		sizes      []int
		dsts       []netip.AddrPort // nil: all to x
		plainUntil int
		want       []msg
		next       int // where the next chunk starts; 0 means len(sizes)
		refused    int // packets refused without a syscall
	}{
		{name: "equal run", gso: true, sizes: repeat(5, 100), want: []msg{{5, 100}}},
		{name: "short last", gso: true, sizes: []int{100, 100, 50, 100}, want: []msg{{3, 100}, {1, 0}}},
		{name: "longer ends run", gso: true, sizes: []int{100, 200, 200}, want: []msg{{1, 0}, {2, 200}}},
		{name: "destination change", gso: true, sizes: repeat(4, 100), dsts: []netip.AddrPort{x, x, y, y}, want: []msg{{2, 100}, {2, 100}}},
		{name: "64 segments", gso: true, batch: 128, sizes: repeat(70, 100), want: []msg{{64, 100}, {6, 100}}},
		{name: "65000 bytes", gso: true, sizes: repeat(50, 1400), want: []msg{{46, 1400}, {4, 1400}}},
		{name: "batch bounds iovecs", gso: true, batch: 8, sizes: repeat(20, 100), want: []msg{{8, 100}}, next: 8},
		{name: "empty packet", gso: true, sizes: []int{100, 0, 100}, want: []msg{{1, 0}, {1, 0}}, refused: 1},
		{name: "gso off", sizes: repeat(3, 100), want: []msg{{1, 0}, {1, 0}, {1, 0}}},
		{name: "plain until", gso: true, sizes: repeat(6, 100), plainUntil: 3, want: []msg{{1, 0}, {1, 0}, {1, 0}, {3, 100}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := udpSpec(tt.gso, false)
			s.batch = tt.batch
			c := openCore(t, ns, s)
			if c.gso.Load() != tt.gso {
				t.Fatalf("GSO: got %v, want %v (kernel %s)", c.gso.Load(), tt.gso, osRelease())
			}
			pkts := make([][]byte, len(tt.sizes))
			for i, size := range tt.sizes {
				pkts[i] = make([]byte, size)
			}
			dsts := tt.dsts
			if dsts == nil {
				dsts = make([]netip.AddrPort, len(pkts))
				for i := range dsts {
					dsts[i] = x
				}
			}
			c.writeMu.Lock()
			defer c.writeMu.Unlock()
			c.wpkts, c.wports, c.wplainUntil, c.werrs = pkts, dsts, tt.plainUntil, nil
			next := c.fillWrite(0)
			defer c.clearWriteIovs()

			var got []msg
			for j := range c.wcount {
				h := &c.whdrs[j].Hdr
				m := msg{segs: int(h.Iovlen)}
				if h.Controllen > 0 {
					m.seg = int(c.wctrl[j].seg.Size)
				}
				if m.segs != c.wsegs[j] {
					t.Errorf("message %d: iovlen %d, wsegs %d", j, m.segs, c.wsegs[j])
				}
				got = append(got, m)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("messages (segments, segment size): got %v, want %v", got, tt.want)
			}
			wantNext := tt.next
			if wantNext == 0 {
				wantNext = len(tt.sizes)
			}
			if next != wantNext {
				t.Errorf("next chunk starts at %d, want %d", next, wantNext)
			}
			if len(c.werrs) != tt.refused {
				t.Errorf("refused: got %v, want %d", c.werrs, tt.refused)
			}
		})
	}
}

// TestBatchConnGROSplit sends runs the kernel keeps coalesced on
// loopback (a GSO send arrives at a UDP_GRO socket as one datagram) and
// reads them with vectors of several sizes: every datagram must come out
// of its own buffer, in order, with the right length and source, also
// when a coalesced slot spans several ReadBatch calls.
func TestBatchConnGROSplit(t *testing.T) {
	ns, _ := coreNetns(t)
	for _, vec := range []int{1, 3, 64} {
		t.Run(fmt.Sprintf("vec=%d", vec), func(t *testing.T) {
			a := openCore(t, ns, udpSpec(true, false))
			b := openCore(t, ns, udpSpec(false, true))
			if !a.gso.Load() || !b.gro {
				t.Fatalf("offloads: GSO %v, GRO %v; want both (kernel %s)", a.gso.Load(), b.gro, osRelease())
			}
			sizes := append(repeat(10, 500), 200) // one message, short last
			sizes = append(sizes, repeat(5, 300)...)
			sizes = append(sizes, 1000)
			pkts := numbered(sizes...)
			dsts := make([]netip.AddrPort, len(pkts))
			for i := range dsts {
				dsts[i] = b.local
			}
			if n, err := a.writeToAddrPorts(pkts, dsts); n != len(pkts) || err != nil {
				t.Fatalf("write: got (%d, %v), want (%d, nil)", n, err, len(pkts))
			}
			got, srcs, coalesced := readCore(t, b, len(pkts), vec, 0)
			if !coalesced {
				t.Errorf("no slot held coalesced datagrams: the split was not exercised")
			}
			if len(got) != len(pkts) {
				t.Fatalf("got %d datagrams, want %d", len(got), len(pkts))
			}
			for i, p := range got {
				if string(p) != string(pkts[i]) {
					t.Errorf("datagram %d: got %d bytes (index %d), want %d bytes", i, len(p), binary.BigEndian.Uint32(p), len(pkts[i]))
				}
				if srcs[i] != loopback {
					t.Errorf("datagram %d: source %v, want %v", i, srcs[i], loopback)
				}
			}
			if ports := b.sports[:b.nsrc]; len(ports) > 0 && ports[0] != a.local.Port() {
				t.Errorf("source port: got %d, want %d", ports[0], a.local.Port())
			}
		})
	}
}

// TestBatchConnGRODirect: with UDP_GRO on, datagrams that come one per
// slot are read straight into the caller's buffers (the scratch stays
// untouched); a batch with a coalesced slot in the middle comes out
// whole and in order, and turns the scratch on; directAfter batches
// without coalesced slots turn it off again. Buffers too small for a
// slot always go through the scratch.
func TestBatchConnGRODirect(t *testing.T) {
	ns, _ := coreNetns(t)
	plain := openCore(t, ns, udpSpec(false, false))
	gso := openCore(t, ns, udpSpec(true, false))
	b := openCore(t, ns, udpSpec(false, true))
	if !gso.gso.Load() || !b.gro {
		t.Fatalf("offloads: GSO %v, GRO %v; want both (kernel %s)", gso.gso.Load(), b.gro, osRelease())
	}
	send := func(c *batchConn, pkts [][]byte) {
		t.Helper()
		dsts := make([]netip.AddrPort, len(pkts))
		for i := range dsts {
			dsts[i] = b.local
		}
		if n, err := c.writeToAddrPorts(pkts, dsts); n != len(pkts) || err != nil {
			t.Fatalf("write: got (%d, %v), want (%d, nil)", n, err, len(pkts))
		}
	}
	check := func(what string, got, want [][]byte) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: got %d datagrams, want %d", what, len(got), len(want))
		}
		for i := range got {
			if string(got[i]) != string(want[i]) {
				t.Errorf("%s: datagram %d: got %d bytes, want %d", what, i, len(got[i]), len(want[i]))
			}
		}
	}
	sentinel := func() {
		for i := range b.scratch {
			b.scratch[i] = 0xa5
		}
	}
	untouched := func() bool {
		for _, v := range b.scratch {
			if v != 0xa5 {
				return false
			}
		}
		return true
	}

	// One per slot: straight into the buffers.
	sentinel()
	pkts := numbered(100, 1400, 9000, 60000)
	send(plain, pkts)
	got, _, _ := readCore(t, b, len(pkts), 64, 0)
	check("one per slot", got, pkts)
	if !b.direct || !untouched() {
		t.Errorf("one per slot: direct %v, scratch untouched %v; want both", b.direct, untouched())
	}

	// plain, a coalesced burst, plain, queued before the read: one
	// recvmmsg returns them in three slots.
	want := numbered(append(append([]int{700}, repeat(5, 300)...), 800)...)
	send(plain, want[:1])
	send(gso, want[1:6])
	send(plain, want[6:])
	got, _, coalesced := readCore(t, b, len(want), 64, 0)
	check("coalesced in the middle", got, want)
	if !coalesced || b.direct {
		t.Errorf("coalesced in the middle: coalesced %v, direct %v; want true, false", coalesced, b.direct)
	}
	if b.nsrc != len(want) {
		t.Fatalf("coalesced in the middle: the last read returned %d datagrams, want all %d in one", b.nsrc, len(want))
	}
	for i, port := range b.sports[:b.nsrc] {
		from := plain
		if i >= 1 && i <= 5 {
			from = gso
		}
		if port != from.local.Port() {
			t.Errorf("coalesced in the middle: datagram %d from port %d, want %d", i, port, from.local.Port())
		}
	}

	// directAfter batches of one datagram each turn direct reads on again.
	for i := range directAfter {
		if b.direct {
			t.Fatalf("direct again after %d plain batches, want %d", i, directAfter)
		}
		p := numbered(200 + i)
		send(plain, p)
		got, _, _ := readCore(t, b, 1, 64, 0)
		check("plain batch", got, p)
	}
	if !b.direct {
		t.Errorf("not direct after %d plain batches", directAfter)
	}

	// At an offset, as the switch reads (room for headers before each).
	sentinel()
	const off = 128
	pkts = numbered(300, 65000)
	send(plain, pkts)
	bufs, sizes := readBufs(4, off+1<<16), make([]int, 4)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < len(pkts); {
		n, err := b.ReadBatch(bufs, sizes, off)
		if err != nil {
			t.Fatalf("at offset %d: %v", off, err)
		}
		for i := range n {
			if string(bufs[i][off:off+sizes[i]]) != string(pkts[got]) {
				t.Errorf("at offset %d: datagram %d: got %d bytes, want %d", off, got, sizes[i], len(pkts[got]))
			}
			got++
		}
	}
	if !b.direct || !untouched() {
		t.Errorf("at offset %d: direct %v, scratch untouched %v; want both", off, b.direct, untouched())
	}

	// Buffers smaller than a slot: the scratch, whatever the mode.
	sentinel()
	p := numbered(500)
	send(plain, p)
	bufs, sizes = readBufs(4, 2048), make([]int, 4)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.ReadBatch(bufs, sizes, 0)
	if err != nil || n != 1 || string(bufs[0][:sizes[0]]) != string(p[0]) {
		t.Fatalf("small buffers: got (%d, %v), want the datagram", n, err)
	}
	if untouched() {
		t.Errorf("small buffers: the scratch was not used")
	}
}

// TestBatchConnPartialSend puts an unroutable destination in the middle
// of a batch: sendmmsg stops there and returns the count before it, the
// core pins the error on that packet and sends the rest, in order.
func TestBatchConnPartialSend(t *testing.T) {
	ns, _ := coreNetns(t)
	noRoute := netip.MustParseAddr("10.99.0.1") // the namespace has only lo
	for _, tt := range []struct {
		name string
		spec socketSpec
		hdr  int
		want string
	}{
		{"raw", rawSpec(), 20, "encap: raw write: packet 2 to 10.99.0.1: network is unreachable"},
		{"udp", udpSpec(false, false), 0, "encap: udp write: packet 2 to 10.99.0.1:9: network is unreachable"},
		{"udp-gso", udpSpec(true, false), 0, "encap: udp write: packet 2 to 10.99.0.1:9: network is unreachable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := openCore(t, ns, tt.spec)
			b := openCore(t, ns, tt.spec)
			pkts := numbered(100, 100, 100, 100, 100)
			var n int
			var err error
			if tt.spec.typ == unix.SOCK_RAW {
				n, err = a.writeToAddrs(pkts, []netip.Addr{loopback, loopback, noRoute, loopback, loopback})
			} else {
				to := b.local
				n, err = a.writeToAddrPorts(pkts, []netip.AddrPort{to, to, netip.AddrPortFrom(noRoute, 9), to, to})
			}
			if n != 4 {
				t.Errorf("sent: got %d, want 4", n)
			}
			if err == nil || err.Error() != tt.want {
				t.Errorf("error: got %v, want %q", err, tt.want)
			}
			if !errors.Is(err, unix.ENETUNREACH) {
				t.Errorf("error %v does not wrap ENETUNREACH", err)
			}
			got, _, _ := readCore(t, b, 4, b.BatchSize(), tt.hdr)
			for k, i := range []int{0, 1, 3, 4} {
				if string(got[k]) != string(pkts[i]) {
					t.Errorf("datagram %d: got index %d, want %d", k, binary.BigEndian.Uint32(got[k]), i)
				}
			}
		})
	}
}

// TestBatchConnCloseReader closes each kind of core while a reader is
// parked in the poller: the reader wakes with os.ErrClosed, and every
// later call fails the same way.
func TestBatchConnCloseReader(t *testing.T) {
	ns, _ := coreNetns(t)
	for _, tt := range []struct {
		name string
		spec socketSpec
	}{
		{"raw", rawSpec()},
		{"udp-gro", udpSpec(true, true)},
		{"udp-plain", udpSpec(false, false)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := openCore(t, ns, tt.spec)
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
				if err != os.ErrClosed {
					t.Errorf("blocked ReadBatch after Close: got %v, want os.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("ReadBatch still blocked 5s after Close")
			}
			wg.Wait()
			if err := c.Close(); err != nil {
				t.Errorf("second Close: got %v, want nil", err)
			}
			if _, err := c.ReadBatch(bufs, sizes, 0); err != os.ErrClosed {
				t.Errorf("ReadBatch after Close: got %v, want os.ErrClosed", err)
			}
			var err error
			if tt.spec.typ == unix.SOCK_RAW {
				_, err = c.writeToAddrs(bufs[:1], []netip.Addr{loopback})
			} else {
				_, err = c.writeToAddrPorts(bufs[:1], []netip.AddrPort{netip.AddrPortFrom(loopback, 9)})
			}
			if err != os.ErrClosed {
				t.Errorf("write after Close: got %v, want os.ErrClosed", err)
			}
		})
	}
}

// throttledPath adds a veth pair to the namespace whose egress w0 sends
// 1000 bytes a second (tbf), toward a neighbour that is resolved
// statically: a writer with a small send buffer fills it within a few
// datagrams and then waits in the poller. What leaves w0 arrives at w1
// in the same namespace and is dropped there (not local, no forwarding).
//
//	netns: w0 10.252.0.1/24 (tbf 8kbit) ── w1; 10.252.0.2 → 02:00:00:00:00:02 on w0
func throttledPath(t testing.TB, name string) netip.AddrPort {
	return slowPath(t, name, "w", 252, "8kbit")
}

// stalledPath is like throttledPath (s0 ── s1, 10.253.0.0/24), but its
// egress drains a byte a second: a socket sending there fills its buffer
// and it stays full for the rest of the test.
func stalledPath(t testing.TB, name string) netip.AddrPort {
	return slowPath(t, name, "s", 253, "8bit")
}

// slowPath builds a throttledPath: veth pair dev0 ── dev1, dev0 at
// 10.N.0.1/24 with egress rate limited to rate, and 10.N.0.2 resolved
// statically on it. It returns 10.N.0.2:9.
func slowPath(t testing.TB, name, dev string, n byte, rate string) netip.AddrPort {
	t.Helper()
	d0, d1 := dev+"0", dev+"1"
	local, far := netip.AddrFrom4([4]byte{10, n, 0, 1}), netip.AddrFrom4([4]byte{10, n, 0, 2})
	ip(t, "-n", name, "link", "add", d0, "type", "veth", "peer", "name", d1)
	ip(t, "-n", name, "addr", "add", local.String()+"/24", "dev", d0)
	ip(t, "-n", name, "link", "set", d0, "up")
	ip(t, "-n", name, "link", "set", d1, "up")
	ip(t, "-n", name, "neigh", "add", far.String(), "lladdr", "02:00:00:00:00:02", "dev", d0, "nud", "permanent")
	if out, err := exec.Command("tc", "-n", name, "qdisc", "add", "dev", d0, "root", "tbf",
		"rate", rate, "burst", "1600", "limit", "1000000").CombinedOutput(); err != nil {
		t.Fatalf("tc qdisc add tbf: %v\n%s", err, out)
	}
	return netip.AddrPortFrom(far, 9)
}

// heldUpWrite returns 1000 datagrams of 64 bytes, all to a throttledPath
// in the namespace name: far more than a 4 KiB send buffer holds, so a
// write of them has to wait for buffer space.
func heldUpWrite(t testing.TB, name string) ([][]byte, []netip.AddrPort) {
	t.Helper()
	dst := throttledPath(t, name)
	pkts := numbered(repeat(1000, 64)...)
	dsts := make([]netip.AddrPort, len(pkts))
	for i := range dsts {
		dsts[i] = dst
	}
	return pkts, dsts
}

// TestBatchConnBlockedWriter fills the send buffer so that sendmmsg
// stops part-way with EAGAIN and the writer waits for buffer space: a
// write deadline then ends the wait with os.ErrDeadlineExceeded and the
// count sent so far, and Close ends it with os.ErrClosed.
func TestBatchConnBlockedWriter(t *testing.T) {
	ns, name := coreNetns(t)
	pkts, dsts := heldUpWrite(t, name)
	s := udpSpec(false, false)
	s.local = netip.Addr{}
	s.buffer = 4096 // the kernel doubles it and keeps a floor of a few KiB

	t.Run("deadline", func(t *testing.T) {
		c := openCore(t, ns, s)
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		start := time.Now()
		n, err := c.writeToAddrPorts(pkts, dsts)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("write past deadline: got %v, want os.ErrDeadlineExceeded", err)
		}
		if n < 1 || n >= len(pkts) {
			t.Errorf("sent before the deadline: got %d, want some but not all of %d", n, len(pkts))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("write returned %v after a 100ms deadline", d)
		}
	})
	t.Run("close", func(t *testing.T) {
		c := openCore(t, ns, s)
		type result struct {
			n   int
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := c.writeToAddrPorts(pkts, dsts)
			done <- result{n, err}
		}()
		waitSendBufferFull(t, c.sendRaw) // the writer waits for space
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case r := <-done:
			if r.err != os.ErrClosed {
				t.Errorf("blocked write after Close: got %v, want os.ErrClosed", r.err)
			}
			if r.n >= len(pkts) {
				t.Errorf("sent %d of %d: the writer never blocked", r.n, len(pkts))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("write still blocked 5s after Close")
		}
	})
}

// TestBatchConnSendOnly checks a send-only conn: it sends like any other,
// from a blocking socket off the netpoller (no EPOLLOUT wake-ups per
// datagram), drops whatever arrives at its port instead of queueing it,
// refuses reads and write deadlines, and a write the send buffer holds up
// gives up after sendTimeout, or at Close, instead of waiting per
// message.
func TestBatchConnSendOnly(t *testing.T) {
	ns, name := coreNetns(t)
	s := udpSpec(true, false)
	s.sendOnly = true
	a := openCore(t, ns, s)
	b := openCore(t, ns, udpSpec(false, false))

	// It sends; its socket is blocking, so os did not put it on the poller.
	pkts := numbered(repeat(8, 100)...)
	dsts := make([]netip.AddrPort, len(pkts))
	for i := range dsts {
		dsts[i] = b.local
	}
	if n, err := a.writeToAddrPorts(pkts, dsts); n != len(pkts) || err != nil {
		t.Fatalf("write: %d, %v; want %d, nil", n, err, len(pkts))
	}
	readCore(t, b, len(pkts), len(pkts), 0)
	a.raw.Control(func(fd uintptr) {
		if fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
			t.Errorf("send-only socket flags %#x (%v): non-blocking, it would be on the netpoller", fl, err)
		}
	})

	// What arrives at its port is dropped, not queued for no reader.
	back := make([]netip.AddrPort, len(pkts))
	for i := range back {
		back[i] = a.local
	}
	if n, err := b.writeToAddrPorts(pkts, back); n != len(pkts) || err != nil {
		t.Fatalf("write to the send-only port: %d, %v", n, err)
	}
	waitDrops(t, a.raw, len(pkts))
	if _, err := a.ReadBatch(readBufs(1, 2048), make([]int, 1), 0); err == nil || !strings.Contains(err.Error(), "only sends") {
		t.Errorf("ReadBatch on a send-only conn: got %v, want an error saying it only sends", err)
	}
	if err := a.SetWriteDeadline(time.Now().Add(time.Second)); err == nil {
		t.Errorf("SetWriteDeadline on a blocking sender: got nil, want an error")
	}

	// Held up: a throttled egress and a small buffer.
	many, far := heldUpWrite(t, name)
	s.local, s.buffer = netip.Addr{}, 4096
	t.Run("timeout", func(t *testing.T) {
		c := openCore(t, ns, s)
		start := time.Now()
		n, err := c.writeToAddrPorts(many, far)
		d := time.Since(start)
		if !errors.Is(err, unix.EAGAIN) || !strings.Contains(err.Error(), "send buffer full") {
			t.Errorf("held-up write: got %v, want send buffer full wrapping EAGAIN", err)
		}
		if n < 1 || n >= len(many) {
			t.Errorf("sent: got %d, want some but not all of %d", n, len(many))
		}
		// Waiting sendTimeout per message would take minutes.
		if d < sendTimeout/2 || d > 10*sendTimeout {
			t.Errorf("held-up write returned after %v, want about sendTimeout (%v) once, not per message", d, sendTimeout)
		}
	})
	// A write of one or two packets first tries without blocking (and
	// without the scheduler); on a full buffer it must still wait like
	// any other write, not fail at once.
	t.Run("small write waits", func(t *testing.T) {
		c := openCore(t, ns, s)
		stalled := stalledPath(t, name)
		fill := make([]netip.AddrPort, len(many))
		for i := range fill {
			fill[i] = stalled
		}
		if n, err := c.writeToAddrPorts(many, fill); n == 0 || !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("filling the buffer toward a stalled path: %d sent, %v; want some, then send buffer full", n, err)
		}
		start := time.Now()
		n, err := c.writeToAddrPorts(many[:1], fill[:1])
		d := time.Since(start)
		if n != 0 || !errors.Is(err, unix.EAGAIN) {
			t.Errorf("one packet on a full buffer: %d sent, %v; want 0 and send buffer full", n, err)
		}
		if d < sendTimeout/2 {
			t.Errorf("one packet on a full buffer gave up after %v, want a wait of about sendTimeout (%v)", d, sendTimeout)
		}
	})
	t.Run("close", func(t *testing.T) {
		c := openCore(t, ns, s)
		done := make(chan error, 1)
		go func() {
			_, err := c.writeToAddrPorts(many, far)
			done <- err
		}()
		waitSendBufferFull(t, c.sendRaw) // the writer blocks in sendmmsg
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		// Closing the file alone would leave the writer in sendmmsg
		// until space frees or sendTimeout runs out, message after
		// message; Close shuts the socket down, which wakes it at once.
		select {
		case err := <-done:
			if err != os.ErrClosed {
				t.Errorf("blocked write after Close: got %v, want os.ErrClosed", err)
			}
		case <-time.After(sendTimeout / 2):
			t.Fatal("write still blocked half a sendTimeout after Close")
		}
	})
}

// waitDrops waits until the socket behind rc has dropped at least want
// packets (SO_MEMINFO), for a socket whose filter drops all it receives:
// the drops prove the packets arrived and went nowhere. Nothing may be
// queued on it either. Raw sockets do not count what their filter drops:
// for them pass want 0, after the packets have reached a sibling socket
// (the kernel hands a raw packet to every matching socket in one pass),
// and only the empty queue is checked.
func waitDrops(t testing.TB, rc syscall.RawConn, want int) {
	t.Helper()
	var mem sockMeminfo
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if mem = meminfo(t, rc); int(mem[memDrops]) >= want {
			break
		}
	}
	if int(mem[memDrops]) < want || mem[memRmemAlloc] != 0 {
		t.Errorf("socket dropped %d packets and holds %d bytes: want at least %d dropped, nothing held", mem[memDrops], mem[memRmemAlloc], want)
	}
}

// sockMeminfo is what getsockopt(SO_MEMINFO) fills in, up to the drops.
type sockMeminfo [9]uint32

// Indices into sockMeminfo (SK_MEMINFO_*).
const (
	memRmemAlloc = 0
	memWmemAlloc = 2
	memSndbuf    = 3
	memDrops     = 8
)

func meminfo(t testing.TB, rc syscall.RawConn) sockMeminfo {
	t.Helper()
	var mem sockMeminfo
	rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(mem))
		if _, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem)), uintptr(unsafe.Pointer(&size)), 0); errno != 0 {
			t.Fatalf("getsockopt SO_MEMINFO: %v", errno)
		}
	})
	return mem
}

// waitSendBufferFull waits until the socket behind rc has as much queued
// for sending as its buffer holds: a writer on it then waits for space.
func waitSendBufferFull(t testing.TB, rc syscall.RawConn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if mem := meminfo(t, rc); mem[memWmemAlloc] >= mem[memSndbuf] {
			return
		}
	}
	t.Fatal("send buffer never filled up")
}

// TestBatchConnMapErr checks the error mapping every syscall result
// passes through: anything from a closed socket is os.ErrClosed itself,
// the rest names the transport and operation and keeps its cause.
func TestBatchConnMapErr(t *testing.T) {
	for _, tt := range []struct {
		name   string
		closed bool
		err    error
		want   string // "" means os.ErrClosed itself
		is     error
	}{
		{name: "EBADF", err: unix.EBADF},
		{name: "poll closing", err: fmt.Errorf("read: %w", os.ErrClosed)},
		{name: "closed flag", closed: true, err: unix.EAGAIN},
		{name: "unreachable", err: unix.ENETUNREACH, want: "encap: t read: network is unreachable", is: unix.ENETUNREACH},
		{name: "deadline", err: os.ErrDeadlineExceeded, want: "encap: t read: i/o timeout", is: os.ErrDeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &batchConn{name: "t"}
			c.closed.Store(tt.closed)
			got := c.mapErr("read", tt.err)
			if tt.want == "" {
				if got != os.ErrClosed {
					t.Errorf("got %v, want os.ErrClosed", got)
				}
				return
			}
			if got.Error() != tt.want || !errors.Is(got, tt.is) {
				t.Errorf("got %q, want %q wrapping %v", got, tt.want, tt.is)
			}
		})
	}
}

// TestOpenErrors checks that every bad socketSpec is refused with an
// error naming the transport and the field, before a socket exists.
func TestOpenErrors(t *testing.T) {
	ns, _ := coreNetns(t)
	for _, tt := range []struct {
		name string
		edit func(*socketSpec)
		want string
	}{
		{"batch", func(s *socketSpec) { s.batch = 1025 }, "encap: udp: BatchSize 1025 outside [1, 1024]"},
		{"local", func(s *socketSpec) { s.local = netip.MustParseAddr("::1") }, "encap: udp: Local ::1 is not an IPv4 address"},
		{"port", func(s *socketSpec) { s.port = -2 }, "encap: udp: Port -2 outside [1, 65535]"},
		{"bind", func(s *socketSpec) { s.local = netip.MustParseAddr("10.9.9.9"); s.port = 7 }, "encap: udp: bind 10.9.9.9:7: cannot assign requested address"},
		{"header on UDP", func(s *socketSpec) { s.header, s.sender = 20, true }, "encap: udp: own outer header of 20 bytes: needs a raw socket"},
		{"header without sender", func(s *socketSpec) { s.typ, s.proto, s.header = unix.SOCK_RAW, protoExperiment, 20 }, "encap: udp: own outer header of 20 bytes: needs a raw socket with a separate sender"},
		{"send-only with sender", func(s *socketSpec) { s.sender, s.sendOnly = true, true }, "encap: udp: a send-only conn with a separate sender"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := udpSpec(true, true)
			tt.edit(&s)
			c := new(batchConn)
			err := netnsutil.Do(ns, func() error { return c.open(s) })
			if err == nil {
				c.Close()
				t.Fatalf("open: got nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("open: got %q, want %q", err, tt.want)
			}
		})
	}
}

// TestBatchConnAllocs requires the core's write and read to allocate
// nothing once warmed up, on each socket kind and offload setting.
func TestBatchConnAllocs(t *testing.T) {
	ns, _ := coreNetns(t)
	for _, tt := range []struct {
		name   string
		spec   socketSpec
		buf    int
		direct bool // read straight into the buffers (readDirect)
	}{
		{"raw", rawSpec(), 2048, false},
		{"udp-gso-gro", udpSpec(true, true), 2048, false},
		// Sent one by one, read into 64-KiB buffers.
		{"udp-gro-direct", udpSpec(false, true), 1 << 16, true},
		{"udp-plain", udpSpec(false, false), 2048, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := openCore(t, ns, tt.spec)
			b := openCore(t, ns, tt.spec)
			const per, runs = 16, 50
			pkts := numbered(repeat(per, 200)...)
			addrs := make([]netip.Addr, per)
			ports := make([]netip.AddrPort, per)
			for i := range per {
				addrs[i], ports[i] = loopback, b.local
			}
			write := func() (int, error) {
				if tt.spec.typ == unix.SOCK_RAW {
					return a.writeToAddrs(pkts, addrs)
				}
				return a.writeToAddrPorts(pkts, ports)
			}
			bufs := readBufs(b.BatchSize(), tt.buf)
			sizes := make([]int, len(bufs))
			// Warm up: one round trip, so the poller and both cores are set up.
			if n, err := write(); n != per || err != nil {
				t.Fatalf("warm-up write: %d, %v", n, err)
			}
			readCore(t, b, per, per, 0)

			// AllocsPerRun calls f runs+1 times; everything stays queued
			// in b's 4 MiB receive buffer for the read phase.
			allocs := testing.AllocsPerRun(runs, func() {
				if n, err := write(); n != per || err != nil {
					t.Fatalf("write: %d, %v", n, err)
				}
			})
			if allocs != 0 {
				t.Errorf("write allocs per run: got %v, want 0", allocs)
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
			if b.gro && b.direct != tt.direct {
				t.Errorf("read straight into the buffers: %v, want %v", b.direct, tt.direct)
			}
		})
	}
}
