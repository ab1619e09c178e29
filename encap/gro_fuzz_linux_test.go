package encap

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// udpMaxSegments is the kernel's limit of segments in one UDP_SEGMENT
// send (UDP_MAX_SEGMENTS, 64 before Linux 6.4's 128).
const udpMaxSegments = 64

// FuzzGROSplit sends an arbitrary payload as one UDP_SEGMENT (GSO) send of
// an arbitrary segment size over loopback to a UDP_GRO core, which the
// kernel delivers as one coalesced datagram, and reads it with vectors of
// arbitrary size at an arbitrary offset. The segments must be the payload
// cut at every segSize bytes: their total length the payload's, each at
// most segSize and all but the last exactly that, in order, with the
// sender as source. A marker datagram sent after it must come next,
// whole: nothing of the split is left pending.
func FuzzGROSplit(f *testing.F) {
	f.Add([]byte("0123456789abcdef"), uint16(4), uint8(1), uint8(0))
	f.Add(bytes.Repeat([]byte{0xa5}, 1400*5+17), uint16(1400), uint8(3), uint8(14))
	f.Add(bytes.Repeat([]byte{7}, 64), uint16(1), uint8(64), uint8(0))
	f.Add([]byte{}, uint16(100), uint8(2), uint8(0))
	f.Add([]byte("short"), uint16(1000), uint8(1), uint8(200))

	ns, _ := coreNetns(f)
	rx := openCore(f, ns, udpSpec(false, true))
	if !rx.gro {
		f.Fatalf("UDP_GRO not on (kernel %s): the split cannot be exercised", osRelease())
	}
	var tx int
	if err := netnsutil.Do(ns, func() error {
		var err error
		tx, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Bind(tx, &unix.SockaddrInet4{Addr: loopback.As4()})
	}); err != nil {
		f.Fatalf("sender socket: %v", err)
	}
	f.Cleanup(func() { unix.Close(tx) })
	sa, err := unix.Getsockname(tx)
	if err != nil {
		f.Fatal(err)
	}
	txPort := uint16(sa.(*unix.SockaddrInet4).Port)
	to := &unix.SockaddrInet4{Port: int(rx.local.Port()), Addr: rx.local.Addr().As4()}
	const vecMax = 64
	bufs := readBufs(vecMax, 1<<16)
	sizes := make([]int, vecMax)
	marker := []byte("marker: end of the fuzzed send")

	f.Fuzz(func(t *testing.T, payload []byte, segSize uint16, vec, offset uint8) {
		if len(payload) > 65507-28 { // the largest UDP payload over IPv4
			payload = payload[:65507-28]
		}
		seg := max(int(segSize), 1, (len(payload)+udpMaxSegments-1)/udpMaxSegments)
		var oob []byte
		if len(payload) > seg {
			oob = make([]byte, unix.CmsgSpace(2))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(seg)
		}
		if err := unix.Sendmsg(tx, payload, oob, to, 0); err != nil {
			t.Fatalf("send %d bytes in segments of %d: %v", len(payload), seg, err)
		}
		if err := unix.Sendto(tx, marker, 0, to); err != nil {
			t.Fatalf("send marker: %v", err)
		}
		n := 1 + int(vec)%vecMax
		off := int(offset)
		if err := rx.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		var got [][]byte
		total, sawMarker, coalesced := 0, false, false
		for !sawMarker {
			k, err := rx.ReadBatch(bufs[:n], sizes[:n], off)
			if err != nil {
				t.Fatalf("ReadBatch after %d segments (%d bytes of %d): %v", len(got), total, len(payload), err)
			}
			for j := range rx.pend {
				coalesced = coalesced || rx.rseg[j] < rx.rsize[j]
			}
			srcs := rx.Sources()
			if len(srcs) != k {
				t.Fatalf("Sources: %d entries for %d datagrams", len(srcs), k)
			}
			for i := range k {
				d := bufs[i][off : off+sizes[i]]
				if srcs[i] != loopback || rx.sports[i] != txPort {
					t.Fatalf("datagram %d from %v:%d, want %v:%d", len(got), srcs[i], rx.sports[i], loopback, txPort)
				}
				if sawMarker {
					t.Fatalf("datagram of %d bytes after the marker", len(d))
				}
				if total == len(payload) && len(got) > 0 || len(payload) == 0 && len(got) == 1 {
					if !bytes.Equal(d, marker) {
						t.Fatalf("after the payload's %d segments: got %d bytes %q, want the marker", len(got), len(d), d)
					}
					sawMarker = true
					continue
				}
				if len(d) > seg {
					t.Fatalf("segment %d: %d bytes, more than the segment size %d", len(got), len(d), seg)
				}
				if total+len(d) < len(payload) && len(d) != seg {
					t.Fatalf("segment %d: %d bytes, want %d (only the last may be short)", len(got), len(d), seg)
				}
				if total+len(d) > len(payload) || !bytes.Equal(d, payload[total:total+len(d)]) {
					t.Fatalf("segment %d (%d bytes at %d) is not the payload's bytes there (payload %d bytes)", len(got), len(d), total, len(payload))
				}
				total += len(d)
				got = append(got, d)
			}
		}
		want := max(1, (len(payload)+seg-1)/seg)
		if len(got) != want || total != len(payload) {
			t.Fatalf("got %d segments of %d bytes in all, want %d of %d", len(got), total, want, len(payload))
		}
		if want > 1 && !coalesced {
			t.Fatalf("%d bytes in segments of %d arrived uncoalesced: the split was not exercised", len(payload), seg)
		}
		if rx.pslot < rx.pend {
			t.Fatalf("split state left pending: slot %d of %d", rx.pslot, rx.pend)
		}
	})
}

// FuzzGROSegment checks groSegment, which walks control messages by hand,
// against a plain reading of the same bytes: the UDP_GRO segment size of
// the first well-formed cmsg chain, or 0.
func FuzzGROSegment(f *testing.F) {
	gro := func(v int32, before ...[2]int32) []byte {
		var b []byte
		for _, lt := range before {
			c := make([]byte, unix.CmsgSpace(4))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			h.Level, h.Type = lt[0], lt[1]
			h.SetLen(unix.CmsgLen(4))
			b = append(b, c...)
		}
		c := make([]byte, unix.CmsgSpace(4))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
		h.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(c[unix.CmsgLen(0):], uint32(v))
		return append(b, c...)
	}
	f.Add(gro(1400), uint16(64))
	f.Add(gro(1400), uint16(10))
	f.Add(gro(512, [2]int32{unix.SOL_IP, unix.IP_TOS}), uint16(64))
	f.Add([]byte{}, uint16(0))
	f.Add(make([]byte, 64), uint16(64))
	f.Fuzz(func(t *testing.T, raw []byte, n uint16) {
		var ctrl [8]uint64 // as batchConn.rctrl: one slot's control space
		b := unsafe.Slice((*byte)(unsafe.Pointer(&ctrl[0])), len(ctrl)*8)
		copy(b, raw)
		got := groSegment(ctrl[:], uint64(n))
		if want := slowGROSegment(b[:min(int(n), len(b))]); got != want {
			t.Fatalf("groSegment(% x, %d) = %d, want %d", b, n, got, want)
		}
	})
}

// slowGROSegment reads b as a chain of cmsghdrs (64-bit: len, level,
// type, data, each padded to 8 bytes) and returns the first UDP_GRO
// value; a malformed header ends the chain.
func slowGROSegment(b []byte) int {
	for off := 0; off+16 <= len(b); {
		l := binary.NativeEndian.Uint64(b[off:])
		level := int32(binary.NativeEndian.Uint32(b[off+8:]))
		typ := int32(binary.NativeEndian.Uint32(b[off+12:]))
		if l < 16 || l > uint64(len(b)-off) {
			return 0
		}
		if level == unix.SOL_UDP && typ == unix.UDP_GRO && l >= 20 {
			return int(int32(binary.NativeEndian.Uint32(b[off+16:])))
		}
		off += int((l + 7) &^ 7)
	}
	return 0
}
