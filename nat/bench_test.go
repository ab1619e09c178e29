package nat

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// udpSink binds a UDP socket in R that never reads: datagrams to it cost
// no replies (no allocations on the reply path while measuring).
func udpSink(tb testing.TB, tp *topo) netip.AddrPort {
	tb.Helper()
	_, pc := tp.listen(tb, "udp4", "10.252.0.2:8")
	tb.Cleanup(func() { pc.Close() })
	return netip.AddrPortFrom(remoteAddr, 8)
}

// TestHandleUDPAllocs: forwarding a datagram, or a superframe of them, of
// an existing flow does not allocate.
func TestHandleUDPAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	tp := newTopo(t)
	n, _ := newNAT(t, tp, Config{})
	sink := udpSink(t, tp)
	pkt := buildUDP(netip.AddrPortFrom(podAddr, 5000), sink, make([]byte, 100))
	n.Handle(pkt, 0) // opens the flow
	if a := testing.AllocsPerRun(1000, func() { n.Handle(pkt, 0) }); a != 0 {
		t.Errorf("Handle allocates %v times per UDP datagram, want 0", a)
	}
	burst := buildUDP(netip.AddrPortFrom(podAddr, 5000), sink, make([]byte, 16*64))
	if a := testing.AllocsPerRun(1000, func() { n.Handle(burst, 64) }); a != 0 {
		t.Errorf("Handle allocates %v times per UDP superframe, want 0", a)
	}
	if got := n.Stats().Drops["send-error"]; got != 0 {
		t.Errorf("send-error = %d", got)
	}
}

func BenchmarkHandleUDP(b *testing.B) {
	for _, size := range []int{64, 512, 1400} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			tp := newTopo(b)
			n, _ := newNAT(b, tp, Config{})
			pkt := buildUDP(netip.AddrPortFrom(podAddr, 5000), udpSink(b, tp), make([]byte, size))
			n.Handle(pkt, 0)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				n.Handle(pkt, 0)
			}
			b.StopTimer()
			b.ReportMetric(float64(n.Stats().Drops["send-error"])/float64(b.N), "drops/op")
		})
	}
}

// BenchmarkTCPConnect measures new connections per second through the
// NAT: pod stack dial, host dial, handshake, close.
func BenchmarkTCPConnect(b *testing.B) {
	tp := newTopo(b)
	n, d := newNAT(b, tp, Config{})
	pod := newPodStack(b, n, d)
	echo := netip.AddrPortFrom(remoteAddr, 9)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := pod.dial(b.Context(), echo)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conn/s")
}

// BenchmarkTCPDownload measures remote-to-pod throughput through the NAT:
// one HTTP GET of 64 MiB per op (a new connection each time). The gVisor
// pod stack on the other end costs about as much as the NAT's own.
func BenchmarkTCPDownload(b *testing.B) {
	const size = 64 << 20
	tp := newTopo(b)
	n, d := newNAT(b, tp, Config{})
	pod := newPodStack(b, n, d)
	cl := pod.httpClient()
	url := "http://10.252.0.2/bytes?n=" + strconv.Itoa(size)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp, err := cl.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || got != size {
			b.Fatalf("read %d, %v", got, err)
		}
	}
	b.ReportMetric(float64(size)*8*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gbit/s")
}

// TestRecvmsgAllocs: reading a reply and its control messages does not
// allocate (unix.Recvmsg would, for the source address).
func TestRecvmsgAllocs(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf, oob := make([]byte, 2048), make([]byte, 128)
	msg := []byte("reply")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := unix.Write(fds[0], msg); err != nil {
			panic(err)
		}
		n, _, _, err := recvmsg(fds[1], buf, oob, unix.MSG_DONTWAIT)
		if err != nil || string(buf[:n]) != "reply" {
			panic(fmt.Sprint(n, err))
		}
	})
	if allocs != 0 {
		t.Errorf("recvmsg allocates %v times per read, want 0", allocs)
	}
	if _, _, _, err := recvmsg(fds[1], buf, oob, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Errorf("empty socket: %v, want EAGAIN", err)
	}
}
