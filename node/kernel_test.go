package node

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"podnet/internal/netnsutil"
	"podnet/lab/labtest"
	"podnet/router"
)

// TestKernelRoutesOwnership checks, in a namespace of its own, that the
// daemon touches only kernel routes of its protocol: stale ones of a
// previous run go at start, an operator's route to a learned prefix and
// the default route are neither replaced nor deleted.
func TestKernelRoutesOwnership(t *testing.T) {
	labtest.RequireRoot(t)
	ns := fmt.Sprintf("podnet-kt-%d", os.Getpid())
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ip("link", "set", "d1", "up")
	ip("link", "set", "d0", "up")
	ip("addr", "add", "10.99.0.1/24", "dev", "d0")
	ip("route", "add", "default", "via", "10.99.0.2")
	ip("route", "add", "10.97.0.0/24", "via", "10.99.0.2", "proto", "static")
	ip("route", "add", "10.98.0.0/24", "via", "10.99.0.2", "proto", "80") // a previous daemon's
	defaultBefore, operatorBefore := ip("route", "show", "default"), ip("route", "show", "10.97.0.0/24")

	n := &Node{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s := newState()
	learned := []router.Route{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Kind: router.KindHost, NextHop: netip.MustParseAddr("10.99.0.99")},
		{Prefix: netip.MustParsePrefix("10.97.0.0/24"), Kind: router.KindHost, NextHop: netip.MustParseAddr("10.99.0.99")},
		{Prefix: netip.MustParsePrefix("10.96.0.0/24"), Kind: router.KindHost, NextHop: netip.MustParseAddr("10.99.0.99")},
	}
	check := func(when string) {
		t.Helper()
		if got := ip("route", "show", "default"); got != defaultBefore {
			t.Errorf("%s: default route %q, was %q", when, got, defaultBefore)
		}
		if got := ip("route", "show", "10.97.0.0/24"); got != operatorBefore {
			t.Errorf("%s: operator's route %q, was %q", when, got, operatorBefore)
		}
	}
	err := netnsutil.Do("/run/netns/"+ns, func() error {
		n.cleanStaleKernelRoutes()
		if got := ip("route", "show", "10.98.0.0/24"); got != "" {
			t.Errorf("stale route of the daemon's protocol left: %q", got)
		}
		n.syncKernelRoutes(s, learned)
		check("installed")
		if got := ip("route", "show", "10.96.0.0/24"); !strings.Contains(got, "via 10.99.0.99") || !strings.Contains(got, "proto 80") {
			t.Errorf("learned route to 10.96.0.0/24: %q", got)
		}
		n.syncKernelRoutes(s, nil)
		check("withdrawn")
		if got := ip("route", "show", "10.96.0.0/24"); got != "" {
			t.Errorf("withdrawn route left: %q", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
