package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/packet"
)

// readBufs returns n packet buffers and their views at offset 0.
func readBufs(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs
}

// readN reads until want packets have arrived or the deadline passes, and
// returns copies of them (outer header included).
func readN(t testing.TB, c *IPIPConn, want int, timeout time.Duration) [][]byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := readBufs(c.BatchSize(), packet.BufferSize)
	sizes := make([]int, len(bufs))
	var got [][]byte
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, packet.Headroom)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d packets: %v", len(got), want, err)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][packet.Headroom:packet.Headroom+sizes[i]]...))
		}
	}
	return got
}

// TestIPIPConnVeth sends 100 pod packets from node A to node B in one
// WriteBatch and checks B gets each one back intact, inside an outer header
// the kernel built from A's underlay address.
func TestIPIPConnVeth(t *testing.T) {
	u := newUnderlay(t)
	a := listen(t, u.nsA, IPIPConfig{})
	b := listen(t, u.nsB, IPIPConfig{Local: u.addrB})

	const count = 100
	pkts := make([][]byte, count)
	dsts := make([]netip.Addr, count)
	for i := range pkts {
		payload := make([]byte, 8+i*13) // sizes 8..1295
		binary.BigEndian.PutUint32(payload, uint32(i))
		pkts[i] = udpPacket(t, podA, podB, payload)
		dsts[i] = u.addrB
	}
	n, err := a.WriteBatch(pkts, dsts)
	if err != nil || n != count {
		t.Fatalf("WriteBatch: got (%d, %v), want (%d, nil)", n, err, count)
	}

	seen := make([]bool, count)
	for _, p := range readN(t, b, count, 5*time.Second) {
		outer, inner, r := DecapIPIP(p)
		if r != DecapOK {
			t.Fatalf("DecapIPIP: got %v, want ok (%x)", r, p)
		}
		if got := outer.Src(); got != u.addrA {
			t.Errorf("outer source: got %v, want %v", got, u.addrA)
		}
		if got := outer.Dst(); got != u.addrB {
			t.Errorf("outer destination: got %v, want %v", got, u.addrB)
		}
		// IP_PMTUDISC_DONT: the outer header leaves with DF clear although
		// every inner packet has DF set.
		if outer.DontFragment() {
			t.Errorf("outer DF set, want clear (IP_PMTUDISC_DONT)")
		}
		if !outer.HeaderChecksumValid() {
			t.Errorf("outer header checksum invalid")
		}
		// Check the inner packet with gopacket, independently of our views.
		pk := gopacket.NewPacket(inner, layers.LayerTypeIPv4, gopacket.Default)
		udp, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp == nil || len(udp.Payload) < 4 {
			t.Fatalf("inner is not IPv4/UDP: %v", pk)
		}
		i := int(binary.BigEndian.Uint32(udp.Payload))
		if i >= count || seen[i] {
			t.Fatalf("inner packet index %d out of range or repeated", i)
		}
		seen[i] = true
		if string(inner) != string(pkts[i]) {
			t.Errorf("inner packet %d:\ngot  %x\nwant %x", i, []byte(inner), pkts[i])
		}
	}
	// B's sending socket got a copy of each too (it holds them all
	// without its filter: checked by mutation), and dropped it.
	waitDrops(t, b.sendRaw, 0)
}

// TestIPIPConnFragmentsOuter checks the documented DF choice end to end: an
// inner packet as large as the underlay MTU does not fit once wrapped, so
// the sending kernel fragments the outer packet and the receiving kernel
// reassembles it before the raw socket sees it.
func TestIPIPConnFragmentsOuter(t *testing.T) {
	u := newUnderlay(t)
	a := listen(t, u.nsA, IPIPConfig{})
	b := listen(t, u.nsB, IPIPConfig{})

	inner := udpPacket(t, podA, podB, make([]byte, 1500-28)) // 1500 bytes, DF set
	if n, err := a.WriteBatch([][]byte{inner}, []netip.Addr{u.addrB}); n != 1 || err != nil {
		t.Fatalf("WriteBatch: got (%d, %v), want (1, nil)", n, err)
	}
	p := readN(t, b, 1, 5*time.Second)[0]
	_, got, r := DecapIPIP(p)
	if r != DecapOK || string(got) != string(inner) {
		t.Fatalf("DecapIPIP: got %v with %d bytes, want ok with the %d-byte inner packet", r, len(got), len(inner))
	}
}

// TestIPIPConnRefused mixes packets the kernel or WriteBatch must refuse
// with good ones: the good ones go out, the count says how many, and the
// joined error names each refused packet.
func TestIPIPConnRefused(t *testing.T) {
	u := newUnderlay(t)
	a := listen(t, u.nsA, IPIPConfig{BatchSize: 4})
	b := listen(t, u.nsB, IPIPConfig{})

	good := udpPacket(t, podA, podB, []byte("good"))
	noRoute := netip.MustParseAddr("10.99.0.1") // A has no route there
	pkts := [][]byte{good, good, nil, good, good, good, good}
	dsts := []netip.Addr{u.addrB, noRoute, u.addrB, netip.MustParseAddr("fd00::1"), u.addrB, {}, u.addrB}
	n, err := a.WriteBatch(pkts, dsts)
	if n != 3 {
		t.Errorf("WriteBatch sent: got %d, want 3", n)
	}
	if err == nil {
		t.Fatalf("WriteBatch error: got nil, want the refused packets")
	}
	for _, want := range []string{"packet 1 to 10.99.0.1", "packet 2 is empty", "packet 3: destination fd00::1", "packet 5: destination invalid IP"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WriteBatch error %q does not contain %q", err, want)
		}
	}
	for _, p := range readN(t, b, 3, 5*time.Second) {
		if _, inner, r := DecapIPIP(p); r != DecapOK || string(inner) != string(good) {
			t.Errorf("received: got %v %x, want ok %x", r, []byte(inner), good)
		}
	}
}

// TestIPIPConnClose checks that Close wakes a blocked reader with
// os.ErrClosed, is idempotent, and that later calls fail the same way.
func TestIPIPConnClose(t *testing.T) {
	u := newUnderlay(t)
	c := listen(t, u.nsA, IPIPConfig{})

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
	pkt := udpPacket(t, podA, podB, nil)
	if _, err := c.WriteBatch([][]byte{pkt}, []netip.Addr{u.addrB}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteBatch after Close: got %v, want os.ErrClosed", err)
	}
}

func TestIPIPConnDeadline(t *testing.T) {
	u := newUnderlay(t)
	c := listen(t, u.nsA, IPIPConfig{})
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	bufs := readBufs(1, 2048)
	if _, err := c.ReadBatch(bufs, make([]int, 1), 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadBatch past deadline: got %v, want os.ErrDeadlineExceeded", err)
	}
	if _, err := c.ReadBatch(bufs, make([]int, 1), 2048); err == nil {
		t.Errorf("ReadBatch with offset at end of buffer: got nil error")
	}
}

func TestListenIPIPConfig(t *testing.T) {
	u := newUnderlay(t)
	tests := []struct {
		name string
		cfg  IPIPConfig
		want string // error substring, "" for success
	}{
		{name: "defaults", cfg: IPIPConfig{}},
		{name: "bound", cfg: IPIPConfig{Local: u.addrA, BatchSize: 8}},
		{name: "own outer header", cfg: IPIPConfig{Local: u.addrA, OuterFromInner: true}},
		{name: "IPv6 local", cfg: IPIPConfig{Local: netip.MustParseAddr("fd00::1")}, want: "not an IPv4 address"},
		{name: "negative batch", cfg: IPIPConfig{BatchSize: -1}, want: "BatchSize -1"},
		{name: "huge batch", cfg: IPIPConfig{BatchSize: 5000}, want: "BatchSize 5000"},
		{name: "foreign local", cfg: IPIPConfig{Local: netip.MustParseAddr("10.1.2.3")}, want: "bind 10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c *IPIPConn
			err := netnsutil.Do(u.nsA, func() (err error) { c, err = ListenIPIP(tt.cfg); return err })
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ListenIPIP: %v", err)
				}
				defer c.Close()
				wantBatch := tt.cfg.BatchSize
				if wantBatch == 0 {
					wantBatch = DefaultBatchSize
				}
				if c.BatchSize() != wantBatch {
					t.Errorf("BatchSize: got %d, want %d", c.BatchSize(), wantBatch)
				}
				// Sends go out on their own socket: IP-in-IP, blocking
				// (off the netpoller) with a send timeout, IP_HDRINCL
				// only for OuterFromInner.
				if c.send == c.file {
					t.Fatalf("sends on the receiving socket")
				}
				// The receiving socket is non-blocking: recvmmsg on it is
				// a raw system call (recvBatch), which must not block.
				c.raw.Control(func(fd uintptr) {
					if fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
						t.Errorf("receiving socket flags %#x (%v): want non-blocking", fl, err)
					}
				})
				c.sendRaw.Control(func(fd uintptr) {
					proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
					fl, ferr := unix.FcntlInt(fd, unix.F_GETFL, 0)
					if err != nil || ferr != nil || proto != unix.IPPROTO_IPIP || fl&unix.O_NONBLOCK != 0 {
						t.Errorf("sending socket: protocol %d (%v), flags %#x (%v); want IPPROTO_IPIP, blocking", proto, err, fl, ferr)
					}
					tv, err := unix.GetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_SNDTIMEO)
					if err != nil || time.Duration(tv.Nano()) != sendTimeout {
						t.Errorf("sending socket SO_SNDTIMEO: %v (%v), want %v", time.Duration(tv.Nano()), err, sendTimeout)
					}
					hdr, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_HDRINCL)
					if err != nil || (hdr != 0) != tt.cfg.OuterFromInner {
						t.Errorf("sending socket IP_HDRINCL %d (%v), want it on only with OuterFromInner", hdr, err)
					}
				})
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("ListenIPIP: got nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ListenIPIP error: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestIPIPConnAllocs requires WriteBatch and ReadBatch to allocate nothing
// once warmed up, with the kernel's outer header and with our own.
func TestIPIPConnAllocs(t *testing.T) {
	u := newUnderlay(t)
	for _, cfg := range []IPIPConfig{{}, {OuterFromInner: true}} {
		t.Run(fmt.Sprintf("outer-from-inner=%v", cfg.OuterFromInner), func(t *testing.T) {
			a := listen(t, u.nsA, cfg)
			b := listen(t, u.nsB, IPIPConfig{})
			defer a.Close()
			defer b.Close()

			const per, runs = 16, 50
			pkts := make([][]byte, per)
			dsts := make([]netip.Addr, per)
			for i := range pkts {
				pkts[i] = udpPacket(t, podA, podB, make([]byte, 200))
				dsts[i] = u.addrB
			}
			bufs := readBufs(b.BatchSize(), 2048)
			sizes := make([]int, len(bufs))
			// Warm up: one round trip, so the poller and both conns are set up.
			if n, err := a.WriteBatch(pkts[:1], dsts[:1]); n != 1 || err != nil {
				t.Fatalf("warm-up WriteBatch: %d, %v", n, err)
			}
			readN(t, b, 1, 5*time.Second)

			// AllocsPerRun calls f runs+1 times; each writes per packets, all of
			// which stay queued on B's 4 MiB receive buffer for the read phase.
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
					got += n
				}
			})
			if allocs != 0 {
				t.Errorf("ReadBatch allocs per run: got %v, want 0", allocs)
			}
		})
	}
}

// BenchmarkIPIPConn moves batches of 64 pod packets from node A to node B
// across the veth (one WriteBatch, then ReadBatch until all 64 are in) and
// reports packets per second, for inner packet sizes up to 1400 bytes.
func BenchmarkIPIPConn(b *testing.B) {
	u := newUnderlay(b)
	ca := listen(b, u.nsA, IPIPConfig{})
	cb := listen(b, u.nsB, IPIPConfig{})
	batch := ca.BatchSize()
	bufs := readBufs(batch, 2048)
	sizes := make([]int, batch)
	dsts := make([]netip.Addr, batch)
	for i := range dsts {
		dsts[i] = u.addrB
	}
	for _, size := range []int{128, 512, 1400} {
		b.Run(fmt.Sprintf("inner=%d", size), func(b *testing.B) {
			pkts := make([][]byte, batch)
			for i := range pkts {
				pkts[i] = udpPacket(b, podA, podB, make([]byte, size-28))
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
