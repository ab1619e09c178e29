package udpoffload

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// cmsg lays out one control message as the kernel does (native byte
// order; this package runs on little-endian Linux machines).
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	binary.NativeEndian.PutUint64(b[0:], uint64(unix.CmsgLen(len(data))))
	binary.NativeEndian.PutUint32(b[8:], uint32(level))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestGROSize(t *testing.T) {
	size := binary.NativeEndian.AppendUint32(nil, 1400)
	gro := cmsg(unix.SOL_UDP, unix.UDP_GRO, size)
	other := cmsg(unix.SOL_IP, unix.IP_TOS, []byte{0x10})
	for _, tc := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"alone", gro, 1400},
		{"after another message", append(append([]byte(nil), other...), gro...), 1400},
		{"none", other, 0},
		{"empty", nil, 0},
		{"truncated", gro[:unix.CmsgLen(2)], 0},
		{"length past the end", func() []byte {
			b := append([]byte(nil), gro...)
			binary.NativeEndian.PutUint64(b, 64)
			return b
		}(), 0},
	} {
		if got := GROSize(tc.oob); got != tc.want {
			t.Errorf("%s: GROSize = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestSegmentCmsg(t *testing.T) {
	var c SegmentCmsg
	c.Init()
	c.Size = 1400
	b := c.Bytes()
	want := cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, binary.NativeEndian.AppendUint16(nil, 1400))
	if len(b) != unix.CmsgSpace(2) || string(b) != string(want) {
		t.Errorf("UDP_SEGMENT message % x, want % x", b, want)
	}
}

func TestRecvTOS(t *testing.T) {
	tos := cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0xbb})
	gro := cmsg(unix.SOL_UDP, unix.UDP_GRO, binary.NativeEndian.AppendUint32(nil, 1400))
	for _, tc := range []struct {
		name string
		oob  []byte
		want uint8
		ok   bool
	}{
		{"alone", tos, 0xbb, true},
		{"after UDP_GRO", append(append([]byte(nil), gro...), tos...), 0xbb, true},
		{"none", gro, 0, false},
		{"empty", nil, 0, false},
		{"no data", tos[:unix.CmsgLen(0)], 0, false},
	} {
		got, ok := RecvTOS(tc.oob)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: RecvTOS = %#02x, %v, want %#02x, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	// And the other way round: UDP_GRO found after IP_TOS, as the
	// kernel lays them out for a socket with both.
	if got := GROSize(append(append([]byte(nil), tos...), gro...)); got != 1400 {
		t.Errorf("GROSize after IP_TOS = %d, want 1400", got)
	}
}

func TestTOSCmsg(t *testing.T) {
	var c TOSCmsg
	c.Init()
	c.TOS = 0x02
	b := c.Bytes()
	want := cmsg(unix.IPPROTO_IP, unix.IP_TOS, binary.NativeEndian.AppendUint32(nil, 0x02))
	if len(b) != unix.CmsgSpace(4) || string(b) != string(want) {
		t.Errorf("IP_TOS message % x, want % x", b, want)
	}
}
