package packet

import (
	"bytes"
	"errors"
	"testing"
)

func TestVirtioNetHdrRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    VirtioNetHdr
		wire []byte
	}{
		{"zero", VirtioNetHdr{}, make([]byte, 10)},
		{"tso", VirtioNetHdr{Flags: VirtioNetHdrFNeedsCsum, GSOType: GSOTCPv4 | GSOECN, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16},
			[]byte{1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, VirtioNetHdrLen)
			tt.h.Encode(b)
			if !bytes.Equal(b, tt.wire) {
				t.Fatalf("Encode: got %x, want %x", b, tt.wire)
			}
			var got VirtioNetHdr
			if err := got.Decode(append(tt.wire, 0xff)); err != nil || got != tt.h {
				t.Fatalf("Decode: got %+v, %v, want %+v", got, err, tt.h)
			}
		})
	}
	var h VirtioNetHdr
	if err := h.Decode(make([]byte, 9)); !errors.Is(err, ErrBadVirtioHeader) {
		t.Errorf("short: got %v, want %v", err, ErrBadVirtioHeader)
	}
}

func FuzzVirtioDecode(f *testing.F) {
	b := make([]byte, VirtioNetHdrLen)
	VirtioNetHdr{Flags: 1, GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.Encode(b)
	f.Add(b)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h VirtioNetHdr
		err := h.Decode(b)
		if len(b) < VirtioNetHdrLen {
			if err == nil || ReasonOf(err) != ErrBadVirtioHeader {
				t.Fatalf("short input: got %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("got %v for %d bytes", err, len(b))
		}
		out := make([]byte, VirtioNetHdrLen)
		h.Encode(out)
		if !bytes.Equal(out, b[:VirtioNetHdrLen]) {
			t.Fatalf("round trip: got %x, want %x", out, b[:VirtioNetHdrLen])
		}
	})
}
