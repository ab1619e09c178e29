package encap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"podnet/internal/packet"
)

// underlayGRO makes node B's veth merge what arrives with GRO, as a NIC
// driver does, which a veth does not by default for two reasons:
//
//   - veth_xmit bypasses the peer's NAPI (and so GRO) for packets from a
//     device with TSO on, unless the receiving side has
//     rx-udp-gro-forwarding or rx-gro-list on (veth_skb_is_eligible_for_gro);
//   - each transmit runs the peer's NAPI poll for that one packet, and
//     napi_complete_done flushes GRO at the end of every poll unless
//     gro_flush_timeout holds the packets for the next one.
func underlayGRO(t testing.TB, u *underlay) {
	t.Helper()
	for _, args := range [][]string{
		{"ethtool", "-K", "veth0", "gro", "on", "rx-udp-gro-forwarding", "on"},
		{"sh", "-c", "echo 200000 > /sys/class/net/veth0/gro_flush_timeout"},
	} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", u.nameB}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v in %s: %v\n%s", args, u.nameB, err, out)
		}
	}
}

const (
	groMSS      = 1400
	groBasePort = 40000
	groBaseSeq  = 1000
)

// tcpSegments returns n inner TCP segments of groMSS bytes from pod A
// to pod B, round-robin over flows (source ports groBasePort+f), each
// flow with consecutive sequence numbers and IP IDs and DF set, as a
// pod's TCP sends them. Payload byte k of flow f's segment s is
// byte(f*7 + s + k), so a merged superpacket can be checked byte by byte.
func tcpSegments(t testing.TB, n, flows int) [][]byte {
	pkts := make([][]byte, n)
	for i := range n {
		f, s := i%flows, i/flows
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: uint16(100*f + s), Flags: layers.IPv4DontFragment,
			Protocol: layers.IPProtocolTCP, SrcIP: podA, DstIP: podB}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(groBasePort + f), DstPort: 5201,
			Seq: uint32(groBaseSeq + s*groMSS), Ack: 1, ACK: true, Window: 1000}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		pay := make([]byte, groMSS)
		for k := range pay {
			pay[k] = byte(f*7 + s + k)
		}
		pkts[i] = serialize(t, ip, tcp, gopacket.Payload(pay))
	}
	return pkts
}

// groStream reads IP-in-IP packets carrying tcpSegments' flows until
// every flow's bytes are in (or the deadline passes), checks that each
// flow's bytes arrive in order and intact, and returns the outer packet
// sizes.
func groStream(t testing.TB, c *IPIPConn, bufs [][]byte, sizes []int, n, flows int) []int {
	t.Helper()
	next := make([]int, flows) // next expected segment byte offset per flow
	want := n / flows * groMSS
	var got []int
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for done := 0; done < flows; {
		k, err := c.ReadBatch(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("ReadBatch after outer packets %v: %v", got, err)
		}
		for i := range k {
			p := bufs[i][:sizes[i]]
			got = append(got, len(p))
			_, inner, r := DecapIPIP(p)
			if r != DecapOK || inner.Protocol() != packet.ProtoTCP {
				t.Fatalf("outer packet %d: %v, inner protocol %d", len(got), r, inner.Protocol())
			}
			tcp := inner.Payload()
			f := int(binary.BigEndian.Uint16(tcp[0:2])) - groBasePort
			off := int(binary.BigEndian.Uint32(tcp[4:8])) - groBaseSeq
			data := tcp[int(tcp[12]>>4)*4:]
			if f < 0 || f >= flows || off != next[f] || len(data)%groMSS != 0 {
				t.Fatalf("flow %d: %d bytes at offset %d, want a multiple of %d at %d", f, len(data), off, groMSS, next[f])
			}
			for k, b := range data {
				s := (off + k) / groMSS
				if b != byte(f*7+s+(off+k)%groMSS) {
					t.Fatalf("flow %d: byte %d differs", f, off+k)
				}
			}
			next[f] += len(data)
			if next[f] == want {
				done++
			}
		}
	}
	return got
}

// TestIPIPConnUnderlayGRO sends 64 TCP segments in IP-in-IP to a node
// whose underlay device merges with GRO, and requires that the receiver
// gets superpackets larger than the 1500-byte MTU that carry each flow's
// bytes in order. With the kernel's outer header this holds for one flow
// (its IDs come from one counter per destination, so they increment);
// with OuterFromInner it holds for interleaved flows too.
func TestIPIPConnUnderlayGRO(t *testing.T) {
	for _, tt := range []struct {
		name  string
		cfg   IPIPConfig
		flows int
	}{
		{"kernel-header/flows=1", IPIPConfig{}, 1},
		{"outer-from-inner/flows=1", IPIPConfig{OuterFromInner: true}, 1},
		{"outer-from-inner/flows=4", IPIPConfig{OuterFromInner: true}, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := newUnderlay(t)
			underlayGRO(t, u)
			a := listen(t, u.nsA, tt.cfg)
			b := listen(t, u.nsB, IPIPConfig{})
			const n = 64
			pkts := tcpSegments(t, n, tt.flows)
			dsts := make([]netip.Addr, n)
			for i := range dsts {
				dsts[i] = u.addrB
			}
			if sent, err := a.WriteBatch(pkts, dsts); sent != n || err != nil {
				t.Fatalf("WriteBatch: got (%d, %v), want (%d, nil)", sent, err, n)
			}
			sizes := groStream(t, b, readBufs(b.BatchSize(), packet.BufferSize), make([]int, b.BatchSize()), n, tt.flows)
			largest := 0
			for _, s := range sizes {
				largest = max(largest, s)
			}
			t.Logf("%d segments arrived as %d outer packets: %v", n, len(sizes), sizes)
			if largest <= 1500 {
				t.Errorf("largest outer packet %d bytes, want a GRO superpacket above the 1500-byte MTU", largest)
			}
		})
	}
}

// TestIPIPConnOuterFromInner checks the outer headers OuterFromInner
// builds, on the wire: DF and (with DF) the ID copied from the inner
// packet, the kernel's TTL, protocol 4, a valid checksum and the source
// routing picked; and that a packet too big for the underlay still
// arrives, fragmented under the kernel's own header.
func TestIPIPConnOuterFromInner(t *testing.T) {
	u := newUnderlay(t)
	for _, local := range []netip.Addr{{}, u.addrA} {
		t.Run(fmt.Sprintf("local=%v", local), func(t *testing.T) {
			a := listen(t, u.nsA, IPIPConfig{OuterFromInner: true, Local: local})
			b := listen(t, u.nsB, IPIPConfig{})
			withID := func(p []byte, id uint16) []byte {
				ip := packet.IPv4(p)
				ip.SetID(id)
				ip.ComputeChecksum()
				return p
			}
			pkts := [][]byte{
				withID(udpPacket(t, podA, podB, []byte("df")), 0x1234),                  // DF: ID copied
				withID(echoRequest(t, podA, podB, 1, 1, []byte("no df")), 0x5678),       // no DF: kernel's ID
				withID(udpPacket(t, podA, podB, make([]byte, 1500-28)), 0x2222),         // DF, too big: kernel header
				withID(echoRequest(t, podA, podB, 1, 2, make([]byte, 1500-28)), 0x3333), // too big: kernel header
			}
			dsts := []netip.Addr{u.addrB, u.addrB, u.addrB, u.addrB}
			if n, err := a.WriteBatch(pkts, dsts); n != len(pkts) || err != nil {
				t.Fatalf("WriteBatch: got (%d, %v), want (%d, nil)", n, err, len(pkts))
			}
			got := readN(t, b, len(pkts), 5*time.Second)
			for _, p := range got {
				outer, inner, r := DecapIPIP(p)
				if r != DecapOK {
					t.Fatalf("DecapIPIP: %v", r)
				}
				i := -1
				for k := range pkts {
					if string(pkts[k]) == string(inner) {
						i = k
					}
				}
				if i < 0 {
					t.Fatalf("received an inner packet that was not sent: %x", []byte(inner))
				}
				if outer.Src() != u.addrA || outer.Dst() != u.addrB || outer.TTL() != 64 || !outer.HeaderChecksumValid() {
					t.Errorf("packet %d: outer %v → %v TTL %d checksum ok %v, want %v → %v TTL 64 valid",
						i, outer.Src(), outer.Dst(), outer.TTL(), outer.HeaderChecksumValid(), u.addrA, u.addrB)
				}
				wantDF := i == 0 // the big ones went out under the kernel's header, DF clear
				if outer.DontFragment() != wantDF {
					t.Errorf("packet %d: outer DF %v, want %v", i, outer.DontFragment(), wantDF)
				}
				if i == 0 && outer.ID() != 0x1234 {
					t.Errorf("packet 0: outer ID %#x, want the inner's 0x1234", outer.ID())
				}
			}
		})
	}
}

// BenchmarkIPIPConnGRO moves 64 TCP segments of 4 interleaved flows per
// round to a node whose underlay merges with GRO (and, for comparison,
// to one that does not) and reports segments per second and the outer
// packets the receiver read per round.
func BenchmarkIPIPConnGRO(b *testing.B) {
	const n, flows = 64, 4
	for _, tt := range []struct {
		name string
		gro  bool
		cfg  IPIPConfig
	}{
		{"rx-gro=off/kernel-header", false, IPIPConfig{}},
		{"rx-gro=on/kernel-header", true, IPIPConfig{}},
		{"rx-gro=on/outer-from-inner", true, IPIPConfig{OuterFromInner: true}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			u := newUnderlay(b)
			if tt.gro {
				underlayGRO(b, u)
			}
			ca := listen(b, u.nsA, tt.cfg)
			cb := listen(b, u.nsB, IPIPConfig{})
			pkts := tcpSegments(b, n, flows)
			dsts := make([]netip.Addr, n)
			for i := range dsts {
				dsts[i] = u.addrB
			}
			bufs := readBufs(cb.BatchSize(), packet.BufferSize)
			sizes := make([]int, len(bufs))
			outer, lost := 0, 0
			b.ReportAllocs()
			b.SetBytes(n * groMSS)
			start := time.Now()
			for b.Loop() {
				if sent, err := ca.WriteBatch(pkts, dsts); sent != n || err != nil {
					b.Fatalf("WriteBatch: %d, %v", sent, err)
				}
				cb.SetReadDeadline(time.Now().Add(time.Second))
				for bytes := 0; bytes < n*groMSS; {
					k, err := cb.ReadBatch(bufs, sizes, 0)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						lost++
						break
					}
					if err != nil {
						b.Fatalf("ReadBatch: %v", err)
					}
					for i := range k {
						bytes += sizes[i] - 60 // outer, inner IPv4 and TCP headers
					}
					outer += k
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N*n)/elapsed.Seconds(), "segments/s")
			b.ReportMetric(float64(outer)/float64(b.N), "rx-packets/round")
			b.ReportMetric(float64(lost), "lost-rounds")
		})
	}
}
