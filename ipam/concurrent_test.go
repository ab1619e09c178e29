package ipam

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"podnet/datastore"
)

// allocate makes n allocations for node from pools, with handles
// "h.<node>.<i mod handles>", and returns them in order.
func allocate(ctx context.Context, m *IPAM, node string, n, handles int, pools []Pool) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, n)
	for i := range n {
		ip, err := m.AutoAssign(ctx, AssignArgs{
			Node: node, HandleID: fmt.Sprintf("h.%s.%d", node, i%handles),
			Attrs: map[string]string{"node": node, "pod": fmt.Sprint("p", i), "type": "pod"},
			Pools: pools,
		})
		if err != nil {
			return out, fmt.Errorf("allocation %d for %s: %w", i, node, err)
		}
		out = append(out, ip)
	}
	return out, nil
}

// checkConsistent checks the whole store after concurrent allocation:
// every address once and inside the pool, blocks affine to one node each
// and holding only that node's addresses (nobody had to borrow), handles
// counting exactly what the blocks hold.
func checkConsistent(t *testing.T, m *IPAM, p Pool, got map[string][]netip.Addr, perHandle int) {
	t.Helper()
	ctx := context.Background()
	seen := map[netip.Addr]string{}
	total := 0
	for node, ips := range got {
		for _, ip := range ips {
			if other, dup := seen[ip]; dup {
				t.Fatalf("%v handed to both %s and %s", ip, other, node)
			}
			if !p.CIDR.Contains(ip) {
				t.Fatalf("%v for %s is outside pool %v", ip, node, p.CIDR)
			}
			seen[ip] = node
			total++
		}
	}
	allocs, err := m.Allocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != total {
		t.Fatalf("store holds %d allocations, allocators got %d", len(allocs), total)
	}
	counts := map[string]map[netip.Prefix]int{}
	for _, a := range allocs {
		if seen[a.IP] != a.Attrs["node"] {
			t.Fatalf("%v: stored for %q, handed to %q", a.IP, a.Attrs["node"], seen[a.IP])
		}
		if a.Borrowed {
			t.Errorf("%v for %s borrowed from %s's block %v", a.IP, a.Attrs["node"], a.BlockOwner, a.Block)
		}
		if counts[a.HandleID] == nil {
			counts[a.HandleID] = map[netip.Prefix]int{}
		}
		counts[a.HandleID][a.Block]++
	}
	// Every block's affinity names one node, the one whose affinity it is.
	usage, err := m.Usage(ctx, []Pool{p})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range usage[0].Blocks {
		if b.Node == "" {
			t.Errorf("block %v has no affinity", b.CIDR)
			continue
		}
		bs, err := m.NodeBlocks(ctx, b.Node)
		if err != nil || !containsPrefix(bs, b.CIDR) {
			t.Errorf("block %v says host:%s, but %s's affinities are %v (%v)", b.CIDR, b.Node, b.Node, bs, err)
		}
	}
	handles, err := m.Handles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(handles) != len(counts) {
		t.Fatalf("got %d handles, want %d", len(handles), len(counts))
	}
	for _, h := range handles {
		n := 0
		for blk, c := range h.Blocks {
			if counts[h.ID][blk] != c {
				t.Errorf("handle %s counts %d in %v, blocks hold %d", h.ID, c, blk, counts[h.ID][blk])
			}
			n += c
		}
		if n != perHandle {
			t.Errorf("handle %s counts %d addresses, want %d", h.ID, n, perHandle)
		}
	}
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// TestConcurrentAllocators runs 8 allocators, each with its own IPAM and
// its own etcd client, against one pool.
func TestConcurrentAllocators(t *testing.T) {
	const allocators, handles = 8, 50
	perNode := 500
	if raceEnabled || testing.Short() {
		perNode = 100
	}
	e := startEtcd(t, false)
	p := pool("p", "10.128.0.0/16", 26)
	ctx := context.Background()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  = map[string][]netip.Addr{}
		errs []error
	)
	for i := range allocators {
		node := fmt.Sprintf("n%d", i+1)
		m := New(openStore(t, e))
		wg.Go(func() {
			ips, err := allocate(ctx, m, node, perNode, handles, []Pool{p})
			mu.Lock()
			defer mu.Unlock()
			got[node] = ips
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	m := New(openStore(t, e))
	checkConsistent(t, m, p, got, perNode/handles)

	// Release everything, concurrently again: half by handle, half by IP.
	for node, ips := range got {
		m := New(openStore(t, e))
		wg.Go(func() {
			var err error
			if node < "n5" {
				for i := range handles {
					if err = m.ReleaseByHandle(ctx, fmt.Sprintf("h.%s.%d", node, i)); err != nil {
						break
					}
				}
			} else {
				var rel []netip.Addr
				if rel, err = m.ReleaseIPs(ctx, ips...); err == nil && len(rel) != len(ips) {
					err = fmt.Errorf("released %d of %d", len(rel), len(ips))
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("release for %s: %w", node, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	usage, err := m.Usage(ctx, []Pool{p})
	if err != nil {
		t.Fatal(err)
	}
	if usage[0].InUse != 0 {
		t.Fatalf("after release: %d in use, want 0", usage[0].InUse)
	}
	if hs, err := m.Handles(ctx); err != nil || len(hs) != 0 {
		t.Fatalf("after release: handles %v %v, want none", hs, err)
	}
}

// helperEnv carries "<etcd endpoint>,<node>,<count>" to a child process.
const helperEnv = "PODNET_IPAM_HELPER"

// TestHelperProcess is not a test: it is a child of
// TestConcurrentProcesses, allocating against the parent's etcd and
// printing each address on a line.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for TestConcurrentProcesses")
	}
	f := strings.Split(spec, ",")
	n, _ := strconv.Atoi(f[2])
	ctx := context.Background()
	s, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{f[0]}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ips, err := allocate(ctx, New(s), f[1], n, 10, []Pool{pool("p", "10.200.0.0/16", 26)})
	w := bufio.NewWriter(os.Stdout)
	for _, ip := range ips {
		fmt.Fprintln(w, "ip", ip)
	}
	w.Flush()
	if err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentProcesses runs 4 allocator processes (this test binary
// again) against one embedded etcd over its unix socket.
func TestConcurrentProcesses(t *testing.T) {
	const procs = 4
	perNode := 500
	if raceEnabled || testing.Short() {
		perNode = 100
	}
	e := startEtcd(t, false)
	type result struct {
		out []byte
		err error
	}
	results := make([]result, procs)
	var wg sync.WaitGroup
	for i := range procs {
		node := fmt.Sprintf("proc%d", i+1)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d", helperEnv, e.Endpoints()[0], node, perNode))
		wg.Go(func() {
			out, err := cmd.CombinedOutput()
			results[i] = result{out, err}
		})
	}
	wg.Wait()
	got := map[string][]netip.Addr{}
	for i, r := range results {
		node := fmt.Sprintf("proc%d", i+1)
		if r.err != nil {
			t.Fatalf("%s: %v\n%s", node, r.err, r.out)
		}
		sc := bufio.NewScanner(bytes.NewReader(r.out))
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "ip "); ok {
				got[node] = append(got[node], netip.MustParseAddr(s))
			}
		}
		if len(got[node]) != perNode {
			t.Fatalf("%s printed %d addresses, want %d:\n%s", node, len(got[node]), perNode, r.out)
		}
	}
	checkConsistent(t, New(openStore(t, e)), pool("p", "10.200.0.0/16", 26), got, perNode/10)
}
