package nettest

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// The UDP helpers below number datagrams: datagram k starts with k (big
// endian), and byte j of it is byte(k+j), so ReadSeq can check each one
// for order, size and content.

// ListenUDP opens a UDP socket on ip:port in namespace ns with an 8 MiB
// receive buffer, closed when the test ends.
func ListenUDP(t testing.TB, ns string, ip netip.Addr, port int) *net.UDPConn {
	t.Helper()
	var rx *net.UDPConn
	err := netnsutil.Do(ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip.AsSlice(), Port: port})
		rx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	if rc, err := rx.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	}
	return rx
}

// dialUDP opens a UDP socket in namespace ns connected to dst:port,
// closed when the test ends.
func dialUDP(t testing.TB, ns string, dst netip.Addr, port int) *net.UDPConn {
	t.Helper()
	var tx *net.UDPConn
	err := netnsutil.Do(ns, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: port})
		tx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	return tx
}

// datagram writes numbered datagram seq into d.
func datagram(d []byte, seq int) {
	binary.BigEndian.PutUint32(d, uint32(seq))
	for j := 4; j < len(d); j++ {
		d[j] = byte(seq + j)
	}
}

// SendBursts sends, from namespace ns to dst:port, `bursts` bursts of
// perBurst numbered datagrams each in sendmmsg calls, datagram k
// size(k) bytes (at least 4), pausing 2 ms between bursts so that no
// queue on the way overflows. It returns how many it sent.
func SendBursts(t testing.TB, ns string, dst netip.Addr, port, bursts, perBurst int, size func(int) int) int {
	t.Helper()
	pc := ipv4.NewPacketConn(dialUDP(t, ns, dst, port))
	seq := 0
	for range bursts {
		msgs := make([]ipv4.Message, perBurst)
		for i := range msgs {
			d := make([]byte, size(seq))
			datagram(d, seq)
			msgs[i].Buffers = [][]byte{d}
			seq++
		}
		for sent := 0; sent < len(msgs); {
			n, err := pc.WriteBatch(msgs[sent:], 0)
			if err != nil {
				t.Fatalf("sendmmsg: %v", err)
			}
			sent += n
		}
		time.Sleep(2 * time.Millisecond)
	}
	return seq
}

// SendSegmented sends, from namespace ns to dst:port, `sends` buffers of
// segs numbered datagrams of segSize bytes and one of tail bytes each,
// with UDP_SEGMENT: the kernel cuts each buffer into its datagrams, or
// hands it whole to a device with USO. After each send, sent is called
// with the first datagram's number and how many the send held.
func SendSegmented(t testing.TB, ns string, dst netip.Addr, port, sends, segs, segSize, tail int, sent func(first, n int)) {
	t.Helper()
	tx := dialUDP(t, ns, dst, port)
	rc, err := tx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, segSize) })
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	seq := 0
	for range sends {
		first := seq
		buf := make([]byte, 0, segs*segSize+tail)
		for i := 0; i <= segs; i++ {
			n := segSize
			if i == segs {
				n = tail
			}
			d := make([]byte, n)
			datagram(d, seq)
			buf = append(buf, d...)
			seq++
		}
		if _, err := tx.Write(buf); err != nil {
			t.Fatalf("send %d bytes with UDP_SEGMENT %d: %v", len(buf), segSize, err)
		}
		sent(first, seq-first)
	}
}

// SegmentedSizes is the size of numbered datagram k as SendSegmented
// sends them: segs of segSize bytes, then one of tail, each send.
func SegmentedSizes(segs, segSize, tail int) func(int) int {
	return func(k int) int {
		if k%(segs+1) == segs {
			return tail
		}
		return segSize
	}
}

// ReadSeq reads count datagrams from rx and checks that they are
// datagrams first, first+1, ... in order, datagram k size(k) bytes long,
// with the bytes the senders above write.
func ReadSeq(t testing.TB, rx *net.UDPConn, first, count int, size func(int) int) {
	t.Helper()
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for want := first; want < first+count; want++ {
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", want, err)
		}
		got := int(binary.BigEndian.Uint32(buf))
		if got != want || n != size(want) {
			t.Fatalf("datagram %d: got seq %d of %d bytes, want %d bytes", want, got, n, size(want))
		}
		for j := 4; j < n; j++ {
			if buf[j] != byte(want+j) {
				t.Fatalf("datagram %d: byte %d differs", want, j)
			}
		}
	}
}
