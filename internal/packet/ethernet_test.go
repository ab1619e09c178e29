package packet

import (
	"strings"
	"testing"
)

func TestParseMAC(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    MAC
		wantErr string
	}{
		{"gateway", "ee:ee:ee:ee:ee:ee", GatewayMAC, ""},
		{"upper", "02:AB:cd:00:10:FF", MAC{0x02, 0xab, 0xcd, 0x00, 0x10, 0xff}, ""},
		{"dashes", "02-ab-cd-00-10-ff", MAC{0x02, 0xab, 0xcd, 0x00, 0x10, 0xff}, ""},
		{"mixed separators", "02:ab-cd:00:10:ff", MAC{}, "six hex pairs"},
		{"short", "02:ab:cd:00:10", MAC{}, "six hex pairs"},
		{"eui64", "02:ab:cd:00:10:ff:00:01", MAC{}, "six hex pairs"},
		{"bad hex", "02:ab:cd:00:10:fg", MAC{}, "six hex pairs"},
		{"dots", "02ab.cd00.10ff.", MAC{}, "six hex pairs"},
		{"empty", "", MAC{}, "six hex pairs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMAC(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err: got %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v, want %v, nil", got, err, tt.want)
			}
			// Round trip through String (lowercase, colons).
			if back, err := ParseMAC(got.String()); err != nil || back != got {
				t.Errorf("round trip %q: got %v, %v", got.String(), back, err)
			}
		})
	}
}

func TestMACString(t *testing.T) {
	if got, want := (MAC{0x02, 0xab, 0, 0x10, 0xee, 0xff}).String(), "02:ab:00:10:ee:ff"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !BroadcastMAC.IsBroadcast() || !BroadcastMAC.IsMulticast() || GatewayMAC.IsMulticast() {
		t.Error("broadcast/multicast classification wrong")
	}
}

func TestEthernetView(t *testing.T) {
	f := ethFrame(GatewayMAC, podMAC, EtherTypeIPv6, []byte{1, 2})
	e := Ethernet(f)
	if e.Dst() != GatewayMAC || e.Src() != podMAC || e.EtherType() != EtherTypeIPv6 {
		t.Fatalf("got dst %v src %v type %#x", e.Dst(), e.Src(), e.EtherType())
	}
	e.SetDst(podMAC)
	e.SetSrc(GatewayMAC)
	e.SetEtherType(EtherTypeIPv4)
	if e.Dst() != podMAC || e.Src() != GatewayMAC || e.EtherType() != EtherTypeIPv4 {
		t.Fatalf("after set: got dst %v src %v type %#x", e.Dst(), e.Src(), e.EtherType())
	}
	if p := e.Payload(); len(p) != 2 || p[0] != 1 {
		t.Errorf("payload: got %v", p)
	}
}
