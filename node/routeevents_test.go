package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"podnet/router/bgp"
)

func path(prefix, peer string) bgp.Path {
	return bgp.Path{Prefix: netip.MustParsePrefix(prefix), Peer: netip.MustParseAddr(peer), NextHop: netip.MustParseAddr(peer), Best: true}
}

// TestRouteEvents feeds successive learned sets and checks the log lines.
func TestRouteEvents(t *testing.T) {
	var buf bytes.Buffer
	ev := &routeEvents{
		log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})),
		last: map[netip.Prefix]bgp.Path{}, tokens: routeEventBurst,
	}
	now := time.Unix(1000, 0)
	steps := []struct {
		name  string
		paths []bgp.Path
		want  []string
	}{
		{"first", []bgp.Path{path("10.0.1.0/26", "172.16.0.1")},
			[]string{`level=INFO msg="route added" prefix=10.0.1.0/26 peer=172.16.0.1 nextHop=172.16.0.1`}},
		{"unchanged", []bgp.Path{path("10.0.1.0/26", "172.16.0.1")}, nil},
		{"one more", []bgp.Path{path("10.0.1.0/26", "172.16.0.1"), path("10.0.2.0/26", "172.16.0.2")},
			[]string{`level=INFO msg="route added" prefix=10.0.2.0/26 peer=172.16.0.2 nextHop=172.16.0.2`}},
		{"next hop moves", []bgp.Path{path("10.0.1.0/26", "172.16.0.3"), path("10.0.2.0/26", "172.16.0.2")},
			[]string{
				`level=INFO msg="route withdrawn" prefix=10.0.1.0/26 peer=172.16.0.1 nextHop=172.16.0.1`,
				`level=INFO msg="route added" prefix=10.0.1.0/26 peer=172.16.0.3 nextHop=172.16.0.3`,
			}},
		{"all gone", nil,
			[]string{
				`level=INFO msg="route withdrawn" prefix=10.0.1.0/26 peer=172.16.0.3 nextHop=172.16.0.3`,
				`level=INFO msg="route withdrawn" prefix=10.0.2.0/26 peer=172.16.0.2 nextHop=172.16.0.2`,
			}},
	}
	for _, st := range steps {
		buf.Reset()
		ev.update(st.paths, now)
		got := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if buf.Len() == 0 {
			got = nil
		}
		if strings.Join(got, "\n") != strings.Join(st.want, "\n") {
			t.Errorf("%s: logged\n%s\nwant\n%s", st.name, strings.Join(got, "\n"), strings.Join(st.want, "\n"))
		}
	}

	// A flood: 3*burst prefixes at once log burst lines and one summary.
	buf.Reset()
	var flood []bgp.Path
	for i := range 3 * routeEventBurst {
		flood = append(flood, path(fmt.Sprintf("10.1.%d.%d/32", i/256, i%256), "172.16.0.9"))
	}
	now = now.Add(routeEventRefill) // a full budget again
	ev.update(flood, now)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != routeEventBurst+1 {
		t.Fatalf("flood of %d: logged %d lines, want %d", len(flood), len(lines), routeEventBurst+1)
	}
	if want := fmt.Sprintf(`msg="route events not logged" added=%d withdrawn=0`, 2*routeEventBurst); !strings.Contains(lines[routeEventBurst], want) {
		t.Errorf("flood summary: got %q, want it to contain %q", lines[routeEventBurst], want)
	}
	// After the refill period the budget is back.
	buf.Reset()
	ev.update(nil, now.Add(routeEventRefill))
	if n := strings.Count(buf.String(), "\n"); n != routeEventBurst+1 {
		t.Errorf("after refill, withdrawing the flood logged %d lines, want %d", n, routeEventBurst+1)
	}
}
