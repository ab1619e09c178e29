package api

import (
	"net/netip"
	"strings"
	"testing"
)

// TestIPPoolReservedRanges: pools that would hand out addresses no pod can
// use are refused, each naming IPPool.Spec.CIDR and the range. A
// 127.0.0.0/24 pool once gave pods 127.0.0.128.
func TestIPPoolReservedRanges(t *testing.T) {
	tests := []struct {
		cidr string
		want []string // each a whole field error; nil = valid
	}{
		{"127.0.0.0/24", []string{"IPPool.Spec.CIDR = '127.0.0.0/24' (IPPool CIDR overlaps with the loopback range 127.0.0.0/8)"}},
		{"127.0.0.0/8", []string{"(IPPool CIDR overlaps with the loopback range 127.0.0.0/8)"}},
		{"169.254.0.0/20", []string{"(IPPool CIDR overlaps with IPv4 Link Local range 169.254.0.0/16)"}},
		{"224.1.0.0/24", []string{"IPPool.Spec.CIDR = '224.1.0.0/24' (IPPool CIDR overlaps with the multicast range 224.0.0.0/4)"}},
		{"239.255.255.0/24", []string{"the multicast range 224.0.0.0/4"}},
		{"255.255.255.0/24", []string{"IPPool.Spec.CIDR = '255.255.255.0/24' (IPPool CIDR overlaps with the reserved range 240.0.0.0/4 (and the limited broadcast 255.255.255.255))"}},
		{"240.0.0.0/16", []string{"the reserved range 240.0.0.0/4"}},
		{"0.0.0.0/16", []string{"(IPPool CIDR overlaps with the \"this network\" range 0.0.0.0/8)"}},
		{"0.255.255.0/24", []string{"\"this network\" range 0.0.0.0/8"}},
		// Too broad, and covering reserved ranges: every reason is listed.
		{"0.0.0.0/0", []string{"IPPool CIDR is too broad: the prefix length must be at least /8", "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"}},
		{"0.0.0.0/1", []string{"IPPool.Spec.CIDR = '0.0.0.0/1' (IPPool CIDR is too broad: the prefix length must be at least /8)", "0.0.0.0/8", "127.0.0.0/8"}},
		{"128.0.0.0/1", []string{"too broad", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"}},
		{"10.0.0.0/7", []string{"IPPool.Spec.CIDR = '10.0.0.0/7' (IPPool CIDR is too broad: the prefix length must be at least /8)"}},
		// The edges stay valid.
		{"10.0.0.0/8", nil},
		{"1.0.0.0/24", nil},
		{"126.255.255.0/24", nil},
		{"128.0.0.0/24", nil},
		{"169.253.255.0/24", nil},
		{"169.255.0.0/24", nil},
		{"223.255.255.0/24", nil},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			p := pool("p", tt.cidr, nil)
			p.SetDefaults()
			err := p.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got error %q, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", tt.want)
			}
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("got %T %v, want a *ValidationError", err, err)
			}
			for _, f := range ve.Fields {
				if f.Field != "IPPool.Spec.CIDR" {
					t.Errorf("error names field %s, want IPPool.Spec.CIDR: %v", f.Field, f)
				}
			}
			if len(ve.Fields) < len(tt.want) {
				t.Errorf("got %d field errors, want at least %d: %v", len(ve.Fields), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// TestValidatePodIPv4: the address rules of pools, for one address.
func TestValidatePodIPv4(t *testing.T) {
	tests := []struct {
		addr string
		want string // "" = valid
	}{
		{"10.1.2.3", ""},
		{"192.168.0.1", ""},
		{"1.1.1.1", ""},
		{"223.255.255.254", ""},
		{"0.0.0.0", "0.0.0.0 is in the \"this network\" range 0.0.0.0/8, which cannot hold pod addresses"},
		{"0.1.2.3", "0.1.2.3 is in the \"this network\" range 0.0.0.0/8"},
		{"127.0.0.128", "127.0.0.128 is in the loopback range 127.0.0.0/8, which cannot hold pod addresses"},
		{"169.254.1.1", "169.254.1.1 is in IPv4 Link Local range 169.254.0.0/16"},
		{"224.0.0.1", "224.0.0.1 is in the multicast range 224.0.0.0/4"},
		{"239.1.1.1", "the multicast range"},
		{"240.0.0.1", "240.0.0.1 is in the reserved range 240.0.0.0/4"},
		{"255.255.255.255", "255.255.255.255 is in the reserved range 240.0.0.0/4 (and the limited broadcast 255.255.255.255)"},
		{"fd00::1", "fd00::1 is not an IPv4 address"},
		{"::ffff:10.0.0.1", "is not an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			checkErr(t, ValidatePodIPv4(netip.MustParseAddr(tt.addr)), tt.want)
		})
	}
	if err := ValidatePodIPv4(netip.Addr{}); err == nil {
		t.Fatal("zero Addr: got no error")
	}
}

// TestPoolAndPodRulesAgree: an address is refused for a pod exactly when a
// /32 pool of it is refused for its range, so pod add --ip and IPAM
// cannot disagree.
func TestPoolAndPodRulesAgree(t *testing.T) {
	for _, first := range []byte{0, 1, 9, 10, 126, 127, 128, 169, 191, 192, 223, 224, 239, 240, 254, 255} {
		for _, second := range []byte{0, 253, 254, 255} {
			a := netip.AddrFrom4([4]byte{first, second, 1, 1})
			var fe fieldErrors
			checkPoolRangeIPv4(&fe, "f", "x", netip.PrefixFrom(a, 32))
			if podErr := ValidatePodIPv4(a); (podErr != nil) != (len(fe) > 0) {
				t.Errorf("%s: pod check %v, pool check %v", a, podErr, fe)
			}
		}
	}
}
