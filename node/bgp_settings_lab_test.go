package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router"
)

// TestBGPSettingsLab: issue items 3 and 5 on a two-node lab.
//   - listenPort moves every node's listener and the mesh dials the new
//     port: sessions and routes come back;
//   - a node's own BGPConfiguration (node.worker2) moves only its
//     listener, and worker1 dials that port;
//   - bindMode NodeIP listens on the node's address only;
//   - a pool with disableBGPExport is advertised to no peer, and is once
//     the flag is cleared.
func TestBGPSettingsLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2})
	ctx := context.Background()
	run := func(target, stdin string, args ...string) string {
		t.Helper()
		var out strings.Builder
		if err := l.Exec(ctx, target, strings.NewReader(stdin), &out, &out, append([]string{"podnet"}, args...)...); err != nil {
			t.Fatalf("podnet %v on %s: %v\n%s", args, target, err, out.String())
		}
		return out.String()
	}
	w1, w2 := l.NodeAddr("worker1"), l.NodeAddr("worker2")
	meshUp := func(what string) {
		t.Helper()
		waitFor(t, 30*time.Second, what+": worker1 session", func() string { return established(t, l, "worker1", w2) })
		waitFor(t, 30*time.Second, what+": worker2 session", func() string { return established(t, l, "worker2", w1) })
		waitFor(t, 10*time.Second, what+": route to test-2", func() string {
			if r, ok := routeTo(t, l, "worker1", blockOf(l, "test-2")); !ok || r.Kind != router.KindRemote || r.NextHop != w2 {
				return fmt.Sprintf("route %+v %v", r, ok)
			}
			return ""
		})
		ping(t, l, "test-1", l.PodIP("test-2"))
	}
	// listening is the sorted local addresses of the TCP listeners in
	// node's namespace.
	listening := func(node string) []string {
		t.Helper()
		out, err := l.Output(ctx, node, "ss", "-ltnH")
		if err != nil {
			t.Fatalf("ss on %s: %v\n%s", node, err, out)
		}
		var addrs []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) >= 4 {
				addrs = append(addrs, f[3])
			}
		}
		slices.Sort(addrs)
		return addrs
	}
	// listensOn says "" when node's BGP listeners are exactly want (by
	// the port of want[0]) and nothing listens on the ports in gone.
	listensOn := func(node string, want []string, gone ...string) string {
		got := listening(node)
		port := want[0][strings.LastIndex(want[0], ":"):]
		var bgpListeners []string
		for _, a := range got {
			if strings.HasSuffix(a, port) {
				bgpListeners = append(bgpListeners, a)
			}
			for _, g := range gone {
				if strings.HasSuffix(a, g) {
					return fmt.Sprintf("%s still listens on %s: %v", node, a, got)
				}
			}
		}
		if !slices.Equal(bgpListeners, want) {
			return fmt.Sprintf("%s listens on %v, want %v (all: %v)", node, bgpListeners, want, got)
		}
		return ""
	}
	everywhere := func(port string) []string { return []string{"0.0.0.0" + port, "[::]" + port} }
	meshUp("start")
	if msg := listensOn("worker1", everywhere(":179")); msg != "" {
		t.Fatal(msg)
	}

	run("worker1", "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {listenPort: 178}\n", "apply", "-f", "-")
	waitFor(t, 20*time.Second, "every node on 178", func() string {
		if msg := listensOn("worker1", everywhere(":178"), ":179"); msg != "" {
			return msg
		}
		return listensOn("worker2", everywhere(":178"), ":179")
	})
	meshUp("listenPort 178")

	// worker2's own port: only worker2 moves, and worker1 dials it (the
	// lower address dials in the mesh).
	if w1.Compare(w2) > 0 {
		t.Fatalf("lab addresses: worker1 %s above worker2 %s, the test expects worker1 to dial", w1, w2)
	}
	run("worker1", "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.worker2}\nspec: {listenPort: 1790}\n", "apply", "-f", "-")
	waitFor(t, 20*time.Second, "worker2 on 1790", func() string {
		if msg := listensOn("worker2", everywhere(":1790"), ":178"); msg != "" {
			return msg
		}
		return listensOn("worker1", everywhere(":178"), ":1790")
	})
	meshUp("node.worker2 listenPort 1790")
	// The session is worker1's connection to worker2's port 1790.
	if out, err := l.Output(ctx, "worker1", "ss", "-tnH", "state", "established", "dst", w2.String()); err != nil || !strings.Contains(string(out), w2.String()+":1790") {
		t.Fatalf("worker1's connections to worker2 (want one to port 1790): %v\n%s", err, out)
	}

	run("worker1", "", "patch", "bgpconfig", "default", "-p", `{"spec":{"bindMode":"NodeIP"}}`)
	waitFor(t, 20*time.Second, "bound to the node address", func() string {
		if msg := listensOn("worker1", []string{w1.String() + ":178"}); msg != "" {
			return msg
		}
		return listensOn("worker2", []string{w2.String() + ":1790"})
	})
	meshUp("bindMode NodeIP")

	// A quiet pool: worker2's block in it reaches no peer. A pod in a
	// second, exported pool added after it is the barrier: once worker1
	// has that block, worker2 has advertised what it had after the
	// quiet pod.
	run("worker2", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: quiet}
spec: {cidr: 10.50.0.0/16, ipipMode: Always, disableBGPExport: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: loud}
spec: {cidr: 10.51.0.0/16, ipipMode: Always}
`, "apply", "-f", "-")
	podBlock := func(pod, pool string) netip.Prefix {
		t.Helper()
		t.Cleanup(func() { removeNetns("worker2-" + pod) })
		var info struct{ IP string }
		out := run("worker2", "", "pod", "add", pod, "--new", "--pool", pool, "-o", "json")
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("pod add -o json: %v\n%s", err, out)
		}
		b, _ := netip.MustParseAddr(info.IP).Prefix(26)
		return b
	}
	quietBlock := podBlock("q"+l.Name(), "quiet")
	loudBlock := podBlock("l"+l.Name(), "loud")
	waitFor(t, 10*time.Second, "route to the exported pool", func() string {
		if r, ok := routeTo(t, l, "worker1", loudBlock); !ok || r.NextHop != w2 {
			return fmt.Sprintf("route to %s: %+v %v", loudBlock, r, ok)
		}
		return ""
	})
	if r, ok := routeTo(t, l, "worker1", quietBlock); ok {
		t.Fatalf("worker1 learned %s from a disableBGPExport pool: %+v", quietBlock, r)
	}
	if r, ok := routeTo(t, l, "worker2", quietBlock); !ok || r.Kind != router.KindBlackhole {
		t.Fatalf("worker2 does not hold its quiet block %s: %+v %v", quietBlock, r, ok)
	}
	run("worker2", "", "patch", "ippool", "quiet", "-p", `{"spec":{"disableBGPExport":false}}`)
	waitFor(t, 10*time.Second, "route to the pool once exported", func() string {
		if r, ok := routeTo(t, l, "worker1", quietBlock); !ok || r.NextHop != w2 {
			return fmt.Sprintf("route to %s: %+v %v", quietBlock, r, ok)
		}
		return ""
	})
	run("worker2", "", "pod", "del", "q"+l.Name())
	run("worker2", "", "pod", "del", "l"+l.Name())
}
