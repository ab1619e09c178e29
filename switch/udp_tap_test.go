package vswitch

import (
	"encoding/binary"
	"net"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// TestUDPSuperframesTAP: on real TAPs, bursts of one flow's datagrams are
// merged into GSO_UDP_L4 superframes for the receiving pod (when the
// kernel has USO), and the receiving kernel cuts them back exactly: every
// datagram arrives once, with its own size and bytes, in order.
func TestUDPSuperframesTAP(t *testing.T) {
	tn := newTestNet(t)
	a := tn.addPod(t, "a", "10.99.0.1", true)
	b := tn.addPod(t, "b", "10.99.0.2", true)
	uso := tn.port(b).uso
	t.Logf("kernel takes UDP superframes (USO): %v", uso)

	// Resolve the gateway first: datagrams sent while ARP is pending wait
	// in a short queue that a burst overflows.
	if out, err := exec.Command("nsenter", "--net="+a.ns, "ping", "-c", "1", "-W", "2", b.ip.String()).CombinedOutput(); err != nil {
		t.Fatalf("ping a → b: %v\n%s", err, out)
	}

	var rx *net.UDPConn
	err := netnsutil.Do(b.ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: b.ip.AsSlice(), Port: 7001})
		rx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	rx.SetReadBuffer(8 << 20)
	if rc, err := rx.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	}

	const bursts, perBurst = 20, 50
	// Every 7th datagram is shorter: it ends a superframe, and the next
	// starts a new one.
	size := func(seq int) int {
		if seq%7 == 6 {
			return 40
		}
		return 300
	}
	var tx *net.UDPConn
	err = netnsutil.Do(a.ns, func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.ip.AsSlice(), Port: 7001})
		tx = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	pc := ipv4.NewPacketConn(tx)
	seq := 0
	for range bursts {
		msgs := make([]ipv4.Message, perBurst)
		for i := range msgs {
			d := make([]byte, size(seq))
			binary.BigEndian.PutUint32(d, uint32(seq))
			for j := 4; j < len(d); j++ {
				d[j] = byte(seq + j)
			}
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
		time.Sleep(2 * time.Millisecond) // let the TAP's queue drain: no loss
	}

	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for want := 0; want < seq; want++ {
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", want, seq, err)
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
	st := tn.stats("b")
	t.Logf("%d datagrams reached b in %d writes", seq, st.TxFrames)
	if uso && st.TxFrames >= uint64(seq) {
		t.Errorf("%d datagrams in bursts of %d took %d writes: none were merged", seq, perBurst, st.TxFrames)
	}
	if !uso && st.TxFrames != uint64(seq) {
		t.Errorf("without USO: %d writes for %d datagrams", st.TxFrames, seq)
	}
}
