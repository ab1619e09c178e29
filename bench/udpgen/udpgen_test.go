package udpgen

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"podnet/internal/procnet"
)

// vethPair makes two namespaces joined by a veth, 10.251.0.1 (sender)
// and 10.251.0.2 (sink), and returns their /run/netns paths.
func vethPair(t *testing.T) (string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	a, b := fmt.Sprintf("pnug%da", os.Getpid()), fmt.Sprintf("pnug%db", os.Getpid())
	cleanup := func() {
		exec.Command("ip", "netns", "del", a).Run()
		exec.Command("ip", "netns", "del", b).Run()
	}
	cleanup()
	t.Cleanup(cleanup)
	for _, s := range [][]string{
		{"netns", "add", a}, {"netns", "add", b},
		{"-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b},
		{"-n", a, "addr", "add", "10.251.0.1/24", "dev", "eth0"},
		{"-n", b, "addr", "add", "10.251.0.2/24", "dev", "eth0"},
		{"-n", a, "link", "set", "eth0", "up"}, {"-n", b, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", s, err, out)
		}
	}
	// A link set up is not carrying packets until the kernel's link
	// watcher has activated its queue, up to a second later.
	for try := 0; ; try++ {
		err := exec.Command("ip", "netns", "exec", a, "ping", "-c1", "-W1", "10.251.0.2").Run()
		if err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("10.251.0.2 does not answer over the veth: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "/run/netns/" + a, "/run/netns/" + b
}

var sinkAddr = netip.MustParseAddrPort("10.251.0.2:5400")

// udpCounters reads the kernel's UDP counters of the namespace at nsPath:
// datagrams delivered to sockets and datagrams sent.
func udpCounters(t *testing.T, nsPath string) (in, out uint64) {
	t.Helper()
	b, err := exec.Command("ip", "netns", "exec", filepath.Base(nsPath), "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatalf("read /proc/net/snmp in %s: %v", nsPath, err)
	}
	if in, err = procnet.Counter(string(b), "Udp", "InDatagrams"); err == nil {
		out, err = procnet.Counter(string(b), "Udp", "OutDatagrams")
	}
	if err != nil {
		t.Fatalf("UDP counters in %s: %v", nsPath, err)
	}
	return in, out
}

// TestSinkCountsExactly sends a fixed number of packets and checks both
// ends against the kernel's own counters: the sender sent exactly that
// many (OutDatagrams in its namespace), and the sink counted exactly the
// datagrams the kernel handed to its reads (InDatagrams in its
// namespace). At 40 kpps a veth normally loses nothing, so those are the
// same number; on a heavily loaded machine (or under the race detector)
// the sink's socket buffers may overflow, which is logged. Packets of
// another run must not count.
func TestSinkCountsExactly(t *testing.T) {
	src, dst := vethPair(t)
	sink, err := Listen(dst, sinkAddr.Port(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for i, payload := range []int{18, 64, 1400} {
		run := uint32(100 + i)
		sink.Begin(run)
		_, out0 := udpCounters(t, src)
		in0, _ := udpCounters(t, dst)
		const want = 20000
		rep, err := Send(SendConfig{Netns: src, Dst: sinkAddr, Payload: payload, Sockets: 3, Rate: 40000, Packets: want, Run: run})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Sent != want {
			t.Fatalf("payload %d: sent %d, want %d", payload, rep.Sent, want)
		}
		// Rate pacing: 20000 packets at 40 kpps take about half a second.
		if rep.Elapsed < 400*time.Millisecond {
			t.Errorf("payload %d: %d packets at 40 kpps took %s, want about 500ms (pacing broken)", payload, want, rep.Elapsed)
		}
		_, out1 := udpCounters(t, src)
		if out1-out0 != want {
			t.Errorf("payload %d: kernel counted %d datagrams sent, generator says %d", payload, out1-out0, want)
		}
		// Wait until neither the sink's count nor the kernel's moves.
		var delivered, got uint64
		for stable, deadline := 0, time.Now().Add(5*time.Second); stable < 3 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			in1, _ := udpCounters(t, dst)
			g := sink.Received()
			if in1-in0 == delivered && g == got {
				stable++
			} else {
				stable = 0
			}
			delivered, got = in1-in0, g
		}
		if got := sink.Received(); got != delivered {
			t.Errorf("payload %d: sink counted %d, kernel delivered %d to its sockets (read errors: %d)", payload, got, delivered, sink.errs.Load())
		}
		if delivered != want {
			t.Logf("payload %d: the kernel delivered %d of %d (dropped on the way: a loaded machine)", payload, delivered, want)
		}
		if delivered < want/2 {
			t.Errorf("payload %d: only %d of %d delivered at 40 kpps over a veth", payload, delivered, want)
		}
	}
	// Stragglers of another run are not counted.
	sink.Begin(7)
	if _, err := Send(SendConfig{Netns: src, Dst: sinkAddr, Payload: 64, Packets: 1000, Rate: 50000, Run: 6}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := sink.Received(); got != 0 {
		t.Errorf("sink counted %d packets of run 6 while counting run 7", got)
	}
}

// TestSearchFindsLossFreeRate runs a short search over the veth: its
// best trial must lose under 1 % at a rate well above what a paced
// sender trivially reaches, and the unpaced first trial must have been
// tried.
func TestSearchFindsLossFreeRate(t *testing.T) {
	src, dst := vethPair(t)
	sink, err := Listen(dst, sinkAddr.Port(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	res, err := Search(context.Background(), sink, SearchConfig{
		Send:  SendConfig{Netns: src, Dst: sinkAddr, Payload: 18, Sockets: 2},
		Trial: 300 * time.Millisecond, Trials: 5,
	}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range res.Trials {
		t.Logf("offered %.0f sent %.0f recv %.0f pps, loss %.2f%%", tr.OfferedPPS, tr.SentPPS, tr.RecvPPS, tr.LossPct)
	}
	if res.Trials[0].OfferedPPS != 0 {
		t.Errorf("first trial offered %.0f pps, want 0 (unpaced)", res.Trials[0].OfferedPPS)
	}
	if !res.Best.Passed() || res.Best.LossPct >= MaxLossPct {
		t.Fatalf("best trial %+v did not pass", res.Best)
	}
	// A veth between two namespaces carries far more than 10 kpps even
	// on a busy 2-core VM; less means the generator is broken.
	if res.Best.RecvPPS < 10000 {
		t.Errorf("best rate %.0f pps, want > 10000", res.Best.RecvPPS)
	}
}

func TestSendConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SendConfig
	}{
		{"payload too small", SendConfig{Dst: sinkAddr, Payload: 4, Packets: 1}},
		{"payload too big", SendConfig{Dst: sinkAddr, Payload: 9000, Packets: 1}},
		{"no destination", SendConfig{Payload: 64, Packets: 1}},
		{"unbounded", SendConfig{Dst: sinkAddr, Payload: 64}},
		{"negative rate", SendConfig{Dst: sinkAddr, Payload: 64, Packets: 1, Rate: -1}},
	} {
		if _, err := Send(tc.cfg); err == nil {
			t.Errorf("%s: Send(%+v) succeeded, want an error", tc.name, tc.cfg)
		}
	}
}
