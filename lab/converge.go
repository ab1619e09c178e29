package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// convergeTimeout bounds the wait for routes between nodes after Up.
const convergeTimeout = 60 * time.Second

// waitRoutes waits until every node routes every pod of every other node
// (BGP has converged), so that a user's first ping after `lab up` works.
// It polls each node's `podnet route list -o json`.
func (l *Lab) waitRoutes(ctx context.Context) error {
	l.mu.Lock()
	st := l.st
	l.mu.Unlock()
	if len(st.Nodes) < 2 || len(st.Pods) == 0 {
		return nil
	}
	start := time.Now()
	l.r.progressf("waiting for routes between nodes (BGP) ...")
	for _, n := range st.Nodes {
		var want []netip.Addr
		for _, p := range st.Pods {
			if p.Node != n.Name && p.IP.IsValid() {
				want = append(want, p.IP)
			}
		}
		for {
			missing, err := l.unrouted(ctx, n, want)
			if err == nil && missing == nil {
				break
			}
			if time.Since(start) > convergeTimeout {
				if err != nil {
					return fmt.Errorf("routes on %s: %w", n.Name, err)
				}
				return fmt.Errorf("routes on %s: no route to %v after %s (see podnet lab exec %s -- podnet node status)",
					n.Name, missing, convergeTimeout, n.Name)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	l.r.progressf("waiting for routes between nodes (BGP) ... done in %.1fs", time.Since(start).Seconds())
	return nil
}

// unrouted returns the addresses of want that node n has no specific
// route for (the catch-all NAT route does not count).
func (l *Lab) unrouted(ctx context.Context, n nodeState, want []netip.Addr) ([]netip.Addr, error) {
	out, err := l.r.runEnv(ctx, []string{"PODNET_SOCKET=" + n.Socket},
		"ip", "netns", "exec", n.Netns, l.st.Binary, "route", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Prefix netip.Prefix `json:"prefix"`
		Kind   string       `json:"kind"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("parse route list: %w", err)
	}
	var missing []netip.Addr
	for _, a := range want {
		ok := false
		for _, r := range routes {
			if r.Prefix.Bits() > 0 && r.Prefix.Contains(a) && r.Kind != "blackhole" {
				ok = true
				break
			}
		}
		if !ok {
			missing = append(missing, a)
		}
	}
	return missing, nil
}
