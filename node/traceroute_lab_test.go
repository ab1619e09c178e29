package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/router"
)

// TestTracerouteAcrossTunnels: a packet whose TTL runs out on the far
// node's switch is answered with ICMP time-exceeded from that node, over
// IP-in-IP and VXLAN alike, so traceroute across the overlay shows every
// hop (gateway, remote node, pod) instead of a silent "*".
func TestTracerouteAcrossTunnels(t *testing.T) {
	labtest.RequireRoot(t)
	for _, tc := range []struct {
		encap string
		want  router.Encap
	}{{lab.EncapIPIP, router.EncapIPIP}, {lab.EncapVXLAN, router.EncapVXLAN}} {
		t.Run(tc.encap, func(t *testing.T) {
			l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2, Encap: tc.encap})
			ip2 := l.PodIP("test-2")
			waitFor(t, 30*time.Second, "tunnel route on worker1", func() string {
				if r, ok := routeTo(t, l, "worker1", blockOf(l, "test-2")); !ok || r.Encap != tc.want {
					return fmt.Sprintf("route %+v", r)
				}
				return ""
			})
			ping(t, l, "test-1", ip2)
			// TTL 1 dies on the pod's own switch; TTL 2 on the far one.
			for ttl, from := range map[string]string{"1": "169.254.1.1", "2": l.NodeAddr("worker2").String()} {
				out, _ := l.Output(context.Background(), "test-1", "ping", "-n", "-c", "1", "-W", "2", "-t", ttl, ip2.String())
				if !strings.Contains(string(out), "From "+from) || !strings.Contains(string(out), "Time to live exceeded") {
					t.Errorf("ping -t %s to %s: want time exceeded from %s:\n%s", ttl, ip2, from, out)
				}
			}
		})
	}
}
