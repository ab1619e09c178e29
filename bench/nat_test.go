package bench

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"podnet/lab/labtest"
)

// TestConnLoop runs the new-connections test between two namespaces on a
// veth pair: the client is a podnet process in the first namespace, every
// connection it counts must have reached the listener's namespace, and a
// client that cannot connect fails with its error.
func TestConnLoop(t *testing.T) {
	needRoot(t)
	bin := labtest.Binary(t)
	cfg := &Config{LabPrefix: testPrefix(t)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg, down, err := buildVeth(ctx, cfg)
	defer down()
	if err != nil {
		t.Fatal(err)
	}
	res, err := connLoop(ctx, bin, tg.client, tg.server, tg.addr.String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connections == 0 || res.Seconds < 1 {
		t.Fatalf("connect-loop: %+v", res)
	}
	if b, err := exec.Command("ip", "netns", "exec", tg.client, "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").Output(); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Errorf("client namespace's tcp_tw_reuse: %q, %v; want 1", b, err)
	}
	if opens := passiveOpens(t, tg.server); opens < uint64(res.Connections) {
		t.Errorf("client counted %d connections, the server's namespace opened %d", res.Connections, opens)
	}

	// The listener is in the client's namespace, the client dials its
	// own namespace's address: refused, and the error says which.
	_, err = connLoop(ctx, bin, tg.server, tg.client, tg.addr.String(), 1)
	if err == nil || !strings.Contains(err.Error(), "connection 0") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("refused connection: %v", err)
	}
}

// passiveOpens is the TcpPassiveOpens counter of netns ns.
func passiveOpens(t *testing.T, ns string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nstat", "-asz", "TcpPassiveOpens").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "TcpPassiveOpens" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("nstat: no TcpPassiveOpens in %q", out)
	return 0
}
