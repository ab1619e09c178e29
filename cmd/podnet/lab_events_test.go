package main

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router/bgp"
)

// TestLabBGPVisibility checks, in a 2-node lab, that `node status --routes`
// shows each node's block received by the other and advertised by itself,
// and that `lab events` prints a pool's mode change and the route event
// that a pod on a new block causes on the other node (which its daemon
// logs too).
func TestLabBGPVisibility(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, HTTPServer: lab.HTTPBuiltin})
	bin := labtest.Binary(t)
	cfg := filepath.Join(t.TempDir(), "podnet.cfg")
	if err := os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := l.Status()
	socket := map[string]string{}
	logPath := map[string]string{}
	for _, n := range st.Nodes {
		socket[n.Name], logPath[n.Name] = n.Socket, n.Log
	}
	env := func(extra ...string) []string {
		return append(append(os.Environ(), "PODNET_CONFIG="+cfg, "PODNET_LAB="+l.Name(),
			"PODNET_DATASTORE_ENDPOINTS="+l.Datastore()), extra...)
	}
	run := func(extra []string, stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env(extra...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("podnet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	block := func(pod string) netip.Prefix {
		p, err := l.PodIP(pod).Prefix(26) // the default pool's block size
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	w1, w2 := l.NodeAddr("worker1"), l.NodeAddr("worker2")
	b1, b2 := block("test-1"), block("test-2")

	// node status --routes, table and JSON, on both nodes.
	for _, tc := range []struct {
		node        string
		peer        netip.Addr
		own, theirs netip.Prefix
	}{
		{"worker1", w2, b1, b2},
		{"worker2", w1, b2, b1},
	} {
		sock := []string{"PODNET_SOCKET=" + socket[tc.node]}
		var rows []struct {
			bgp.PeerStatus
			Received, Advertised []netip.Prefix
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := run(sock, "", "node", "status", "--routes", "-o", "json")
			if err := json.Unmarshal([]byte(out), &rows); err != nil {
				t.Fatalf("%s: node status --routes -o json: %v\n%s", tc.node, err, out)
			}
			if len(rows) == 1 && rows[0].Address == tc.peer && slices.Contains(rows[0].Received, tc.theirs) &&
				slices.Contains(rows[0].Advertised, tc.own) && !slices.Contains(rows[0].Received, tc.own) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: node status --routes -o json = %+v, want peer %v with %v received and %v advertised", tc.node, rows, tc.peer, tc.theirs, tc.own)
			}
			time.Sleep(200 * time.Millisecond)
		}
		out := run(sock, "", "node", "status", "--routes")
		for _, want := range []string{"Peer " + tc.peer.String() + " (node-to-node mesh)", "received (", "advertised ("} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: node status --routes: no %q in\n%s", tc.node, want, out)
			}
		}
		recv := lineWith(out, "received (")
		adv := lineWith(out, "advertised (")
		if !strings.Contains(recv, tc.theirs.String()) || !strings.Contains(adv, tc.own.String()) {
			t.Errorf("%s: node status --routes: want %v received and %v advertised, got\n%s", tc.node, tc.theirs, tc.own, out)
		}
	}

	// lab events while a pool's mode changes and a pod on a new pool's
	// block comes up on worker1.
	ev := exec.Command(bin, "lab", "events", "--seconds", "20")
	ev.Env = env()
	pipe, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ev.Stderr = ev.Stdout
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ev.Process.Kill(); ev.Wait() })
	var (
		mu    sync.Mutex
		lines []string
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
	}()
	waitLine := func(desc string, match func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			i := slices.IndexFunc(lines, match)
			var l string
			if i >= 0 {
				l = lines[i]
			}
			mu.Unlock()
			if i >= 0 {
				return l
			}
			time.Sleep(100 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("lab events: no line with %s in\n%s", desc, strings.Join(lines, "\n"))
		return ""
	}
	waitLine("the start", func(s string) bool { return strings.Contains(s, "watching 2 node log(s)") })

	run(nil, "", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"ipipMode":"Never"}}`)
	waitLine("the mode change", func(s string) bool {
		return strings.Contains(s, " datastore ") && strings.HasSuffix(s, "pool default-ipv4-ippool: ipipMode Always → Never")
	})

	const evPool = "10.123.0.0/24"
	run(nil, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: evt\nspec:\n  cidr: "+evPool+"\n  ipipMode: Never\n",
		"create", "-f", "-")
	waitLine("the new pool", func(s string) bool { return strings.Contains(s, "pool evt created: cidr "+evPool) })
	out := run(nil, "", "lab", "pod", "add", "evt1", "--node", "worker1", "--pool", "evt")
	if !strings.Contains(out, "pod evt1 added on worker1: 10.123.0.") {
		t.Fatalf("lab pod add evt1: got %q, want an address of %s on worker1", out, evPool)
	}
	l2, err := lab.Open(l.Name())
	if err != nil {
		t.Fatal(err)
	}
	newBlock, err := l2.PodIP("evt1").Prefix(26)
	if err != nil {
		t.Fatal(err)
	}
	want := "route added     " + newBlock.String() + " from peer " + w1.String() + ", next hop " + w1.String()
	line := waitLine("worker2's route event for "+newBlock.String(), func(s string) bool {
		return strings.Contains(s, " worker2 ") && strings.HasSuffix(s, want)
	})
	t.Logf("lab events: %s", line)
	// The other daemon logged it itself.
	b, err := os.ReadFile(logPath["worker2"])
	if err != nil {
		t.Fatal(err)
	}
	logged := slices.ContainsFunc(strings.Split(string(b), "\n"), func(s string) bool {
		return strings.Contains(s, ` level=INFO msg="route added" `) && strings.Contains(s, " prefix="+newBlock.String()+" ") &&
			strings.Contains(s, " peer="+w1.String()+" ") && strings.HasSuffix(s, " nextHop="+w1.String())
	})
	if !logged {
		t.Errorf("worker2's daemon log has no route added line for %v from %v", newBlock, w1)
	}
	// worker1 originates the block: no event for it there.
	mu.Lock()
	for _, s := range lines {
		if strings.Contains(s, " worker1 ") && strings.Contains(s, newBlock.String()) {
			t.Errorf("lab events: worker1 logged a route event for its own block: %s", s)
		}
	}
	mu.Unlock()

	// --seconds ends it with success.
	<-done
	if err := ev.Wait(); err != nil {
		t.Errorf("lab events --seconds 20: %v", err)
	}
}

func lineWith(out, sub string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
