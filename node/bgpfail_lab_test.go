package node_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	"podnet/router/bgp"
)

// TestBGPFailureKeepsView: when a node's BGP speaker cannot start (its
// port is taken), the rest of what the datastore says still reaches the
// node: a new VXLAN pool opens its VXLAN socket. Node status says why
// BGP is down, and BGP comes back once the port is free.
func TestBGPFailureKeepsView(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2})
	ctx := context.Background()
	run := func(stdin string, args ...string) { t.Helper(); mustPodnet(t, l, stdin, args...) }
	// Something else holds the port worker2's speaker is moved to.
	var squatter net.Listener
	if err := netnsutil.Do(nsPath(t, l, "worker2"), func() (err error) {
		squatter, err = net.Listen("tcp4", ":1791")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	run("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.worker2}\nspec: {listenPort: 1791}\n", "apply", "-f", "-")
	waitFor(t, 30*time.Second, "worker2 status names the BGP failure", func() string {
		var peers []bgp.PeerStatus
		err := nodeClient(t, l, "worker2").Get(nodeapi.PathBGPPeers, &peers)
		if err == nil || !strings.Contains(err.Error(), "start BGP speaker") || !strings.Contains(err.Error(), "in use") {
			return fmt.Sprintf("node status: %v", err)
		}
		return ""
	})

	run("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.123.0.0/16, vxlanMode: Always}\n", "apply", "-f", "-")
	waitFor(t, 30*time.Second, "worker2 opens its VXLAN socket", func() string {
		out, err := l.Output(ctx, "worker2", "ss", "-lunH")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(string(out), ":4789") {
			return "UDP listeners: " + strings.TrimSpace(string(out))
		}
		return ""
	})

	squatter.Close()
	run("", "delete", "bgpconfiguration", "node.worker2")
	waitFor(t, 45*time.Second, "worker2's session with worker1 is back", func() string { return established(t, l, "worker2", l.NodeAddr("worker1")) })
}
