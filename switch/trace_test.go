package vswitch

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"podnet/encap"
	"podnet/internal/packet"
)

// TestTraceAgreesWithDataPath traces packets, then sends the very same
// packets through the running switch and checks that what happens is
// what the trace said.
func TestTraceAgreesWithDataPath(t *testing.T) {
	ip := netip.MustParseAddr
	cases := []struct {
		name    string
		q       TraceQuery
		verdict string
		drop    string
		icmp    string
		egress  string // the port name whose counters must move
	}{
		{"pod to pod", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.0.2")}, "deliver", "", "", "b"},
		{"pod to ipip", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.1.5"), Proto: "tcp", Port: 80}, "encapsulate", "", "", "ipip"},
		{"pod to vxlan", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.2.5"), Proto: "udp", Port: 53}, "encapsulate", "", "", "vxlan"},
		{"pod to outside", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("198.51.100.1")}, "nat", "", "", "nat"},
		{"pod to node", TraceQuery{Src: ip("10.0.0.3"), Dst: ip("172.16.0.1")}, "host", "", "", "host"},
		{"pool without nat", TraceQuery{Src: ip("10.5.0.1"), Dst: ip("198.51.100.1")}, "drop", "nat-not-allowed", "communication administratively prohibited", ""},
		{"blackhole", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.4.1")}, "drop", "blackhole", "", ""},
		{"ttl", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.0.2"), TTL: 1}, "drop", "ttl-exceeded", "time exceeded (TTL)", ""},
		{"too big", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.1.1"), Size: 1500, DF: true}, "drop", "frag-needed", "fragmentation needed, mtu 1480", ""},
		{"spoofed", TraceQuery{From: "a", Src: ip("10.0.0.9"), Dst: ip("10.0.0.2")}, "drop", "spoofed-source", "", ""},
		{"host to pod", TraceQuery{From: "host", Src: ip("172.16.0.1"), Dst: ip("10.0.0.3")}, "deliver", "", "", "c"},
		{"node to pod", TraceQuery{From: "vxlan", Node: nodeVXLAN, Src: ip("10.0.2.5"), Dst: ip("10.0.0.2")}, "deliver", "", "", "b"},
		{"stranger", TraceQuery{From: "vxlan", Node: stranger, Src: ip("10.0.2.5"), Dst: ip("10.0.0.2")}, "drop", "unknown-source", "", ""},
		{"foreign source", TraceQuery{From: "ipip", Node: nodeIPIP, Src: ip("10.0.2.5"), Dst: ip("10.0.0.2")}, "drop", "foreign-inner-source", "", ""},
		{"transit", TraceQuery{From: "ipip", Node: nodeIPIP, Src: ip("10.0.1.5"), Dst: ip("10.0.2.5")}, "drop", "no-transit", "", ""},
		{"ce over not-ect", TraceQuery{From: "vxlan", Node: nodeVXLAN, Src: ip("10.0.2.5"), Dst: ip("10.0.0.2"), OuterECN: "ce"}, "drop", "ecn-not-ect", "", ""},
		{"ce over ect0", TraceQuery{From: "ipip", Node: nodeIPIP, Src: ip("10.0.1.5"), Dst: ip("10.0.0.2"), Proto: "tcp", ECN: "ect0", OuterECN: "ce"}, "deliver", "", "", "b"},
		{"ect1 pod to vxlan", TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.2.5"), ECN: "ect1"}, "encapsulate", "", "", "vxlan"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNet(t)
			before := n.s.Stats()
			res, err := n.s.Trace(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before, n.s.Stats()) {
				t.Errorf("Trace moved counters")
			}
			if res.Verdict != tc.verdict || res.Drop != tc.drop || res.ICMP != tc.icmp {
				t.Fatalf("trace: verdict %q drop %q icmp %q, want %q %q %q\n%+v", res.Verdict, res.Drop, res.ICMP, tc.verdict, tc.drop, tc.icmp, res)
			}
			// The probe: the same packet through the running switch.
			buf, size, err := buildTracePacket(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			pkt := buf[packet.Headroom : packet.Headroom+size]
			outer, err := parseECN("outer ECN", tc.q.OuterECN, packet.TunnelECN(pkt[1]))
			if err != nil {
				t.Fatal(err)
			}
			in := tc.q.From
			switch in {
			case "host":
				n.host.offer(pkt)
			case "ipip":
				n.ipip.offer(ipipPacketTOS(tc.q.Node, outer, pkt))
			case "vxlan":
				n.vx.offerTOS(tc.q.Node, outer, vxlanDatagram(pkt, encap.DefaultVNI))
			default:
				pods := map[netip.Addr]*fakePod{n.a.ip: n.a, n.b.ip: n.b, n.c.ip: n.c, n.d.ip: n.d}
				p := pods[tc.q.Src]
				if in == "a" {
					p = n.a
				}
				in = p.dev.name
				p.dev.offer(podFrame(p, pkt))
			}
			if tc.verdict == "drop" {
				n.waitDrop(t, in, dropByName(t, tc.drop), 0)
				return
			}
			switch tc.egress {
			case "nat":
				n.nat.wait(t, 1)
			case "host":
				n.host.wait(t, 1)
			case "ipip":
				n.ipip.wait(t, 1)
			case "vxlan":
				n.vx.wait(t, 1)
			case "b":
				n.b.dev.wait(t, 1)
			case "c":
				n.c.dev.wait(t, 1)
			}
		})
	}
}

func dropByName(t *testing.T, name string) DropReason {
	for r := DropReason(0); r < numDropReasons; r++ {
		if r.String() == name {
			return r
		}
	}
	t.Fatalf("no drop reason %q", name)
	return 0
}

func TestTraceErrors(t *testing.T) {
	n := newFakeNet(t)
	for _, q := range []TraceQuery{
		{Src: netip.MustParseAddr("::1"), Dst: netip.MustParseAddr("10.0.0.1")},
		{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Proto: "sctp"},
		{From: "nobody", Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2")},
		{From: "vxlan", Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2")},
		{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Size: 10},
		{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), ECN: "ect2"},
		{From: "vxlan", Node: nodeVXLAN, Src: netip.MustParseAddr("10.0.2.5"), Dst: netip.MustParseAddr("10.0.0.2"), OuterECN: "CE"},
	} {
		if _, err := n.s.Trace(q); err == nil {
			t.Errorf("Trace(%+v): no error", q)
		}
	}
}

// The trace says what ECN does on the way: the outer field a tunnel
// writes, and what an outer mark does to the packet on arrival.
func TestTraceECN(t *testing.T) {
	n := newFakeNet(t)
	ip := netip.MustParseAddr
	res, err := n.s.Trace(TraceQuery{Src: ip("10.0.0.1"), Dst: ip("10.0.2.5"), ECN: "ce"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Outer, "ECN ect0") {
		t.Errorf("a CE packet into VXLAN: outer %q, want it to say ECN ect0 (CE leaves as ECT(0))", res.Outer)
	}
	for _, tc := range []struct {
		q    TraceQuery
		step string
	}{
		{TraceQuery{From: "ipip", Node: nodeIPIP, Src: ip("10.0.1.5"), Dst: ip("10.0.0.2"), ECN: "ect0", OuterECN: "ce"}, "outer ce over ect0: the packet goes on as ce"},
		{TraceQuery{From: "vxlan", Node: nodeVXLAN, Src: ip("10.0.2.5"), Dst: ip("10.0.0.2"), ECN: "ect1"}, "outer ect1 over ect1: unchanged"},
		{TraceQuery{From: "vxlan", Node: nodeVXLAN, Src: ip("10.0.2.5"), Dst: ip("10.0.0.2"), OuterECN: "ce"}, "outer ce over not-ect: a congestion mark on a packet that does not do ECN, dropped"},
	} {
		res, err := n.s.Trace(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range res.Steps {
			found = found || s.Check == "ECN (RFC 6040)" && s.Result == tc.step
		}
		if !found {
			t.Errorf("trace %+v: no step %q in %+v", tc.q, tc.step, res.Steps)
		}
	}
}
