package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"podnet/api"
	"podnet/datastore"
	"podnet/datastore/certs"
	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/ipam"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	"podnet/resources"
)

// TestClusterTLSDaemons is TestClusterTLSFailover with podnet's daemons
// as the clients: a lab of three nodes whose daemons use a 3-member etcd
// cluster (each member in its own namespace on the lab's fabric, TLS with
// client certificates everywhere) add pods without pause, through their
// API, while the leader is killed and later brought back. Then:
//   - no pod address was handed out twice;
//   - every pod whose add was acknowledged is in its daemon's list, has
//     its WorkloadEndpoint and its IPAM allocation, with the same address;
//   - every add that failed left nothing: no pod, WorkloadEndpoint,
//     allocation or namespace;
//   - pods went on being added with two members, and after the third
//     came back it serves the same data;
//   - `podnet ipam check` finds nothing.
func TestClusterTLSDaemons(t *testing.T) {
	labtest.RequireRoot(t)
	bin := labtest.Binary(t)
	prefix := nettest.UniqueName("pndd")

	// Members at 10.77.0.201..203 on the lab fabric's bridge, beside the
	// nodes (10.77.0.11..13).
	var nodes []certs.Node
	var initial, endpoints []string
	for i := 1; i <= 3; i++ {
		name, addr := fmt.Sprintf("m%d", i), fmt.Sprintf("10.77.0.%d", 200+i)
		nodes = append(nodes, certs.Node{Name: name, Hosts: []string{addr}})
		initial = append(initial, fmt.Sprintf("%s=https://%s:2380", name, addr))
		endpoints = append(endpoints, "https://"+addr+":2379")
	}
	pki := makeCerts(t, nodes...)
	ca, cert, key := filepath.Join(pki, certs.CAFile), filepath.Join(pki, certs.ClientFile), filepath.Join(pki, certs.ClientKeyFile)

	l := labtest.Up(t, lab.Config{
		Nodes: 3, NoDaemon: true, Binary: bin,
		DaemonArgs: []string{"--datastore", strings.Join(endpoints, ","),
			"--datastore-ca-file", ca, "--datastore-cert-file", cert, "--datastore-key-file", key},
	})
	fabric := l.Status().Fabric.Netns

	tmp := t.TempDir()
	members := map[string]*member{}
	for i, n := range nodes {
		nsName := fmt.Sprintf("%sm%d", prefix, i+1)
		ns := nettest.Netns(t, nsName)
		port := fmt.Sprintf("e%s", n.Name)
		ip(t, "-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", nsName)
		ip(t, "-n", fabric, "link", "set", port, "master", lab.FabricBridge, "up")
		ip(t, "-n", nsName, "addr", "add", n.Hosts[0]+"/24", "dev", "eth0")
		ip(t, "-n", nsName, "link", "set", "eth0", "up")
		members[n.Name] = &member{
			spec: memberSpec{Name: n.Name, Dir: filepath.Join(tmp, n.Name), PKI: pki, IP: n.Hosts[0], InitialCluster: strings.Join(initial, ",")},
			ns:   ns, log: filepath.Join(tmp, n.Name+".log"),
		}
	}
	// Registered after the namespaces, so it runs before they go.
	t.Cleanup(func() {
		for _, m := range members {
			m.kill()
		}
		if t.Failed() {
			for name, m := range members {
				t.Logf("member %s log tail:\n%s", name, m.logTail())
			}
		}
	})
	for _, m := range members {
		m.start(t)
	}

	// The test's own clients dial from the fabric's namespace.
	fabricDial := func(ctx context.Context, addr string) (c net.Conn, err error) {
		err = netnsutil.Do("/run/netns/"+fabric, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	open := func(eps ...string) *datastore.Store {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			s, err := datastore.Open(context.Background(), datastore.Config{
				Endpoints: eps, DialTimeout: 5 * time.Second, Dialer: fabricDial, CAFile: ca, CertFile: cert, KeyFile: key,
			})
			if err == nil {
				t.Cleanup(func() { s.Close() })
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not serving at %v after 60s: %v", eps, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	start := time.Now()
	admin := open(endpoints...)
	t.Logf("3-member TLS cluster serving after %.1fs", time.Since(start).Seconds())

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	status := l.Status()
	for _, n := range status.Nodes {
		if err := l.StartDaemon(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("3 daemons on the cluster after %.1fs", time.Since(start).Seconds())
	// The lab does not know the pods added here: delete them through
	// their daemons while the cluster still runs (cleanups run last
	// first, so this one comes before the members are killed).
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range status.Nodes {
			wg.Go(func() {
				c := nodeapi.NewClient(n.Socket)
				pods, err := c.Pods()
				if err != nil {
					t.Errorf("cleanup: pods of %s: %v", n.Name, err)
					return
				}
				for _, p := range pods {
					if err := c.DeletePod(p.Name); err != nil {
						t.Errorf("cleanup: delete pod %s of %s: %v", p.Name, n.Name, err)
					}
				}
			})
		}
		wg.Wait()
	})

	leader := func() string {
		t.Helper()
		ms, err := admin.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Leader {
				return m.Name
			}
		}
		t.Fatalf("no leader among %+v", ms)
		return ""
	}

	type podKey struct{ node, pod string }
	var (
		phase     atomic.Int32 // 0 all up, 1 one member down, 2 back
		okByPhase [3]atomic.Int64
		mu        sync.Mutex
		acked     = map[podKey]netip.Addr{}
		failed    = map[podKey]error{}
		longest   time.Duration
	)
	wctx, stopAdding := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for k, n := range status.Nodes {
		c := nodeapi.NewClient(n.Socket)
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				key := podKey{n.Name, fmt.Sprintf("p%d-%d", k+1, i)}
				t0 := time.Now()
				info, err := c.AddPod(nodeapi.AddPodRequest{Name: key.pod, New: true})
				took := time.Since(t0)
				mu.Lock()
				longest = max(longest, took)
				if err != nil {
					failed[key] = err
				} else if a, perr := netip.ParseAddr(info.IP); perr != nil {
					failed[key] = fmt.Errorf("acknowledged with a bad address %q", info.IP)
				} else {
					acked[key] = a
					okByPhase[phase.Load()].Add(1)
				}
				mu.Unlock()
				// A steady stream, not a flood: what matters is adds
				// in flight when the member dies, and fewer pods keep
				// the test short.
				select {
				case <-wctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	stopWorkers := sync.OnceFunc(func() { stopAdding(); wg.Wait() })
	t.Cleanup(stopWorkers)

	time.Sleep(2 * time.Second)
	victim := leader()
	members[victim].kill()
	phase.Store(1)
	killed := time.Now()
	t.Logf("killed the leader %s after %d pods", victim, okByPhase[0].Load())
	time.Sleep(4 * time.Second)
	if now := leader(); now == victim {
		t.Fatalf("leader is still %s after it was killed", victim)
	}
	members[victim].start(t)
	phase.Store(2)
	t.Logf("restarted %s after %.1fs down, %d pods added meanwhile", victim, time.Since(killed).Seconds(), okByPhase[1].Load())
	time.Sleep(4 * time.Second)
	stopWorkers()

	t.Logf("pods: %d before, %d with 2 of 3 members, %d after; %d adds failed; longest add %v",
		okByPhase[0].Load(), okByPhase[1].Load(), okByPhase[2].Load(), len(failed), longest.Round(time.Millisecond))
	if n := okByPhase[1].Load(); n < 5 {
		t.Errorf("only %d pods added while %s was down, want adds to go on with 2 of 3 members", n, victim)
	}
	if n := okByPhase[2].Load(); n < 5 {
		t.Errorf("only %d pods added after %s came back", n, victim)
	}
	for k, err := range failed {
		t.Logf("add %s on %s failed: %v", k.pod, k.node, err)
	}

	// No address twice.
	owner := map[netip.Addr]podKey{}
	for k, a := range acked {
		if o, dup := owner[a]; dup {
			t.Errorf("%v acknowledged to both %v and %v", a, o, k)
		}
		owner[a] = k
	}

	// What the daemons, the WorkloadEndpoints and IPAM hold.
	listed := map[podKey]netip.Addr{}
	for _, n := range status.Nodes {
		pods, err := nodeapi.NewClient(n.Socket).Pods()
		if err != nil {
			t.Fatalf("pods of %s: %v", n.Name, err)
		}
		for _, p := range pods {
			listed[podKey{n.Name, p.Name}], _ = netip.ParseAddr(p.IP)
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	stored := func(via string, s *datastore.Store) (weps map[podKey]netip.Addr, allocs map[string]netip.Addr) {
		rs, _, err := resources.New(s, resources.Options{}).List(rctx, api.KindWorkloadEndpoint)
		if err != nil {
			t.Fatalf("workload endpoints via %s: %v", via, err)
		}
		weps = map[podKey]netip.Addr{}
		for _, r := range rs {
			w := r.(*api.WorkloadEndpoint)
			if len(w.Spec.IPNetworks) != 1 {
				t.Errorf("via %s: %s has addresses %v", via, w.Name, w.Spec.IPNetworks)
				continue
			}
			p, err := netip.ParsePrefix(w.Spec.IPNetworks[0])
			if err != nil {
				t.Errorf("via %s: %s: %v", via, w.Name, err)
			}
			weps[podKey{w.Spec.Node, w.Spec.Workload}] = p.Addr()
		}
		list, err := ipam.New(s).Allocations(rctx)
		if err != nil {
			t.Fatalf("allocations via %s: %v", via, err)
		}
		allocs = map[string]netip.Addr{}
		for _, a := range list {
			if !strings.HasPrefix(a.HandleID, "pod.") {
				continue // the nodes' tunnel addresses
			}
			if _, dup := allocs[a.HandleID]; dup {
				t.Errorf("via %s: handle %s holds two addresses", via, a.HandleID)
			}
			allocs[a.HandleID] = a.IP
		}
		return weps, allocs
	}
	handle := func(k podKey) string { return "pod." + k.node + "." + k.pod }
	weps, allocs := stored("all members", admin)
	for k, a := range acked {
		if got := listed[k]; got != a {
			t.Errorf("pod %s on %s acknowledged with %v; its daemon lists %v", k.pod, k.node, a, got)
		}
		if got := weps[k]; got != a {
			t.Errorf("pod %s on %s acknowledged with %v; its WorkloadEndpoint has %v", k.pod, k.node, a, got)
		}
		if got := allocs[handle(k)]; got != a {
			t.Errorf("pod %s on %s acknowledged with %v; IPAM has %v for %s", k.pod, k.node, a, got, handle(k))
		}
	}
	for k := range failed {
		if a, found := listed[k]; found {
			t.Errorf("failed add of %s on %s: its daemon lists it (%v)", k.pod, k.node, a)
		}
		if a, found := weps[k]; found {
			t.Errorf("failed add of %s on %s left a WorkloadEndpoint (%v)", k.pod, k.node, a)
		}
		if a, found := allocs[handle(k)]; found {
			t.Errorf("failed add of %s on %s left IPAM allocation %v", k.pod, k.node, a)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", lab.HandPodNetnsPrefix(l.Name(), k.node)+k.pod)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed add of %s on %s left its namespace (%v)", k.pod, k.node, err)
		}
	}
	if len(listed) != len(acked) || len(weps) != len(acked) || len(allocs) != len(acked) {
		t.Errorf("%d pods acknowledged; daemons list %d, %d WorkloadEndpoints, %d pod allocations", len(acked), len(listed), len(weps), len(allocs))
	}

	// The member that came back serves the same.
	victimEP := "https://" + members[victim].spec.IP + ":2379"
	vweps, vallocs := stored("the restarted member only", open(victimEP))
	if len(vweps) != len(weps) || len(vallocs) != len(allocs) {
		t.Errorf("the restarted %s alone: %d WorkloadEndpoints, %d allocations; the cluster: %d, %d", victim, len(vweps), len(vallocs), len(weps), len(allocs))
	}

	// podnet ipam check, as an administrator runs it, over TLS.
	cfg := filepath.Join(tmp, "podnet.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf("datastore:\n  endpoints: [%s]\n  caFile: %s\n  certFile: %s\n  keyFile: %s\n",
		strings.Join(endpoints, ", "), ca, cert, key)), 0o600)
	cmd := exec.CommandContext(rctx, "ip", "netns", "exec", fabric, bin, "ipam", "check")
	cmd.Env = append(os.Environ(), "PODNET_CONFIG="+cfg, "PODNET_DATASTORE_ENDPOINTS=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "found 0 problems") {
		t.Errorf("ipam check: %v\n%s", err, out)
	}
}
