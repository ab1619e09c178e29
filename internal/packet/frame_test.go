package packet

import (
	"bytes"
	"testing"
)

func TestParseIPv4Frame(t *testing.T) {
	ip := buildICMPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, ICMPEcho, 0, 0x00010001, []byte("ping"))
	frame := ethFrame(GatewayMAC, podMAC, EtherTypeIPv4, ip)
	padded := append(append([]byte(nil), frame...), make([]byte, 60-len(frame))...)
	tests := []struct {
		name    string
		frame   []byte
		want    ParseError
		wantLen int
	}{
		{"ok", frame, ParseOK, len(ip)},
		{"ok padding removed", padded, ParseOK, len(ip)},
		{"short ethernet", frame[:13], ErrTooShort, 0},
		{"ethernet only", frame[:14], ErrTooShort, 0},
		{"ipv6", ethFrame(GatewayMAC, podMAC, EtherTypeIPv6, ip), ErrUnsupportedEtherType, 0},
		{"vlan", ethFrame(GatewayMAC, podMAC, EtherTypeVLAN, ip), ErrUnsupportedEtherType, 0},
		{"truncated ip", frame[:len(frame)-1], ErrBadTotalLength, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, r := ParseIPv4Frame(tt.frame)
			if r != tt.want || len(got) != tt.wantLen {
				t.Fatalf("got len %d %v, want len %d %v", len(got), r, tt.wantLen, tt.want)
			}
			if r == ParseOK && !bytes.Equal(got, ip) {
				t.Errorf("got %x, want %x", []byte(got), ip)
			}
		})
	}
}

func TestParseARPFrame(t *testing.T) {
	frame := arpRequestFrame(podMAC, podA, switchIP)
	mod := func(i int, v byte) []byte {
		c := append([]byte(nil), frame...)
		c[EthernetHeaderLen+i] = v
		return c
	}
	tests := []struct {
		name  string
		frame []byte
		want  ParseError
	}{
		{"ok padded", frame, ParseOK},
		{"ok exact", frame[:ARPFrameLen], ParseOK},
		{"short ethernet", frame[:10], ErrTooShort},
		{"short arp", frame[:ARPFrameLen-1], ErrTooShort},
		{"ipv4 ethertype", ethFrame(BroadcastMAC, podMAC, EtherTypeIPv4, frame[14:]), ErrUnsupportedEtherType},
		{"htype 6", mod(1, 6), ErrBadARP},
		{"ptype ipv6", mod(2, 0x86), ErrBadARP},
		{"hlen 8", mod(4, 8), ErrBadARP},
		{"plen 16", mod(5, 16), ErrBadARP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, r := ParseARPFrame(tt.frame)
			if r != tt.want {
				t.Fatalf("got %v, want %v", r, tt.want)
			}
			if r == ParseOK && len(a) != ARPLen {
				t.Errorf("len: got %d, want %d", len(a), ARPLen)
			}
		})
	}
}

func TestAllocsParseIPv4Frame(t *testing.T) {
	frame := ethFrame(GatewayMAC, podMAC, EtherTypeIPv4,
		buildTCPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, tcpSpec{flags: TCPFlagACK}, make([]byte, 1000)))
	got := testing.AllocsPerRun(100, func() {
		if _, r := ParseIPv4Frame(frame); r != ParseOK {
			panic(r)
		}
	})
	if got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}

func FuzzParseIPv4Frame(f *testing.F) {
	f.Add(ethFrame(GatewayMAC, podMAC, EtherTypeIPv4, buildICMPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, ICMPEcho, 0, 1, []byte("ping"))))
	f.Add(ethFrame(GatewayMAC, podMAC, EtherTypeIPv4, buildTCPv4(ipv4Spec{ttl: 64, src: podA, dst: podB, options: []byte{1, 1, 1, 1}}, tcpSpec{flags: TCPFlagSYN, options: []byte{2, 4, 5, 0xb4}}, nil)))
	f.Add(ethFrame(GatewayMAC, podMAC, EtherTypeIPv4, buildUDPv4(ipv4Spec{ttl: 1, src: podA, dst: podB}, 1, 2, make([]byte, 3))))
	f.Add(arpRequestFrame(podMAC, podA, switchIP))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		ip, r := ParseIPv4Frame(frame)
		if r != ParseOK {
			if ip != nil {
				t.Fatalf("reason %v but non-nil view", r)
			}
			return
		}
		hl, tl := ip.HeaderLen(), ip.TotalLen()
		if !(IPv4MinHeaderLen <= hl && hl <= tl && tl == len(ip) && len(ip) <= len(frame)-EthernetHeaderLen) {
			t.Fatalf("header %d total %d len %d frame %d", hl, tl, len(ip), len(frame))
		}
		// Everything a caller does next must not panic either.
		_ = ip.Payload()
		_ = ip.HeaderChecksumValid()
		if ValidateTransport(ip) == ParseOK {
			_ = TransportChecksum(ip)
			_ = TransportChecksumValid(ip)
		}
		ip.DecrementTTL()
	})
}

func FuzzParseARPFrame(f *testing.F) {
	f.Add(arpRequestFrame(podMAC, podA, switchIP))
	f.Add(arpRequestFrame(podMAC, podA, switchIP)[:ARPFrameLen])
	f.Add(ethFrame(GatewayMAC, podMAC, EtherTypeIPv4, buildIPv4(ipv4Spec{ttl: 64, src: podA, dst: podB}, nil)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		a, r := ParseARPFrame(frame)
		if r != ParseOK {
			return
		}
		if len(a) != ARPLen || !a.IsValid() {
			t.Fatalf("OK but len %d valid %v", len(a), a.IsValid())
		}
		var dst [ARPFrameLen]byte
		if n := BuildARPReply(dst[:], a, GatewayMAC); n != ARPFrameLen {
			t.Fatalf("reply: got %d bytes", n)
		}
		rep, r := ParseARPFrame(dst[:])
		if r != ParseOK || rep.Op() != ARPReply || rep.TargetIP() != a.SenderIP() ||
			rep.SenderIP() != a.TargetIP() || rep.TargetMAC() != a.SenderMAC() {
			t.Fatalf("reply does not answer the request: %v %x", r, dst)
		}
	})
}
