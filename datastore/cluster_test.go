package datastore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"podnet/datastore"
	"podnet/datastore/certs"
	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/ipam"
)

// memberEnv carries a memberSpec (JSON) to a child process of the test
// binary, which then runs one etcd member instead of the tests.
const memberEnv = "PODNET_TEST_ETCD_MEMBER"

type memberSpec struct {
	Name, Dir, PKI, IP, InitialCluster string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(memberEnv); spec != "" {
		os.Exit(runMember(spec))
	}
	os.Exit(m.Run())
}

// runMember runs one member of the test cluster, as `podnet datastore
// serve` would, until SIGTERM.
func runMember(js string) int {
	var sp memberSpec
	if err := json.Unmarshal([]byte(js), &sp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{
		Dir: sp.Dir, Name: sp.Name,
		ListenClientURLs: []string{"https://" + sp.IP + ":2379"},
		ListenPeerURLs:   []string{"https://" + sp.IP + ":2380"},
		InitialCluster:   sp.InitialCluster,
		CAFile:           filepath.Join(sp.PKI, certs.CAFile),
		CertFile:         filepath.Join(sp.PKI, certs.NodeFile(sp.Name)),
		KeyFile:          filepath.Join(sp.PKI, certs.NodeKeyFile(sp.Name)),
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		// The test kills processes, not machines: what a killed
		// process wrote is in the page cache, fsync or not.
		UnsafeNoFsync: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "member ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	e.Close()
	return 0
}

// member is a running child process of the test cluster.
type member struct {
	spec memberSpec
	ns   string // netns path
	log  string
	cmd  *exec.Cmd
}

func (m *member) start(t *testing.T) {
	t.Helper()
	js, _ := json.Marshal(m.spec)
	lf, err := os.OpenFile(m.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	m.cmd = exec.Command("nsenter", "--net="+m.ns, "--", os.Args[0], "-test.run=^$")
	m.cmd.Env = append(os.Environ(), memberEnv+"="+string(js))
	m.cmd.Stdout, m.cmd.Stderr = lf, lf
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start member %s: %v", m.spec.Name, err)
	}
}

// kill ends the member at once, as a crash would.
func (m *member) kill() {
	if m.cmd != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

func (m *member) logTail() string {
	b, _ := os.ReadFile(m.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// ip runs ip(8) with args and fails the test on error.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestClusterTLSFailover runs a 3-member etcd cluster, each member
// podnet's embedded etcd in its own process and network namespace, all
// traffic (peers and clients) over TLS with client certificates. Three
// IPAM clients, as three nodes' daemons, allocate addresses concurrently;
// the leader is killed, allocations go on with two members, and the
// member comes back and catches up. No address may be handed out twice,
// and every allocation a client was told of must be in the store.
func TestClusterTLSFailover(t *testing.T) {
	const subnet = "10.201.0."
	prefix := nettest.UniqueName("pnds")
	hubName := prefix + "h"
	hub := nettest.Netns(t, hubName)
	ip(t, "-n", hubName, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", hubName, "addr", "add", subnet+"254/24", "dev", "br0")
	ip(t, "-n", hubName, "link", "set", "br0", "up")

	var nodes []certs.Node
	var initial []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("m%d", i)
		nodes = append(nodes, certs.Node{Name: name, Hosts: []string{fmt.Sprint(subnet, i)}})
		initial = append(initial, fmt.Sprintf("%s=https://%s%d:2380", name, subnet, i))
	}
	pki := makeCerts(t, nodes...)
	tmp := t.TempDir()
	members := map[string]*member{}
	var endpoints []string
	for i, n := range nodes {
		nsName := fmt.Sprintf("%sm%d", prefix, i+1)
		ns := nettest.Netns(t, nsName)
		veth := fmt.Sprintf("v%d", i+1)
		ip(t, "-n", hubName, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", nsName)
		ip(t, "-n", hubName, "link", "set", veth, "master", "br0", "up")
		ip(t, "-n", nsName, "addr", "add", n.Hosts[0]+"/24", "dev", "eth0")
		ip(t, "-n", nsName, "link", "set", "eth0", "up")
		members[n.Name] = &member{
			spec: memberSpec{Name: n.Name, Dir: filepath.Join(tmp, n.Name), PKI: pki, IP: n.Hosts[0], InitialCluster: strings.Join(initial, ",")},
			ns:   ns, log: filepath.Join(tmp, n.Name+".log"),
		}
		endpoints = append(endpoints, "https://"+n.Hosts[0]+":2379")
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

	// The clients live in the hub namespace: every connection is dialled
	// there and crosses the bridge to a member.
	hubDial := func(ctx context.Context, addr string) (c net.Conn, err error) {
		err = netnsutil.Do(hub, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	clientCfg := func(eps ...string) datastore.Config {
		return datastore.Config{
			Endpoints: eps, DialTimeout: 5 * time.Second, Dialer: hubDial,
			CAFile: filepath.Join(pki, certs.CAFile), CertFile: filepath.Join(pki, certs.ClientFile), KeyFile: filepath.Join(pki, certs.ClientKeyFile),
		}
	}
	open := func(eps ...string) *datastore.Store {
		t.Helper()
		// Three members electing a leader over TLS under the race detector
		// on a busy machine: give them a minute.
		deadline := time.Now().Add(60 * time.Second)
		for {
			s, err := datastore.Open(context.Background(), clientCfg(eps...))
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

	// The same cluster refuses a client without a certificate from the CA.
	noCert := clientCfg(endpoints...)
	noCert.CertFile, noCert.KeyFile = filepath.Join(pki, certs.NodeFile("m1")), filepath.Join(pki, certs.ClientKeyFile)
	if s, err := datastore.Open(context.Background(), noCert); err == nil {
		s.Close()
		t.Fatal("a client whose key does not match its certificate was let in")
	}

	leader := func() string {
		t.Helper()
		ms, err := admin.Members(context.Background())
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

	// Three allocators, each with its own client to all three members.
	pool := ipam.Pool{Name: "p", CIDR: netip.MustParsePrefix("10.210.0.0/16"), BlockSize: 26}
	var (
		phase     atomic.Int32 // 0 all up, 1 one member down, 2 back
		okByPhase [3]atomic.Int64
		mu        sync.Mutex
		got       = map[string]netip.Addr{} // handle -> address
		uncertain = map[string]error{}      // handle -> the error its caller got
		longest   time.Duration             // longest wait for one allocation
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 1; w <= 3; w++ {
		node := fmt.Sprintf("worker%d", w)
		m := ipam.New(open(endpoints...))
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				handle := fmt.Sprintf("h.%s.%d", node, i)
				actx, acancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				a, err := m.AutoAssign(actx, ipam.AssignArgs{Node: node, HandleID: handle,
					Attrs: map[string]string{"pod": fmt.Sprint("p", i)}, Pools: []ipam.Pool{pool}})
				took := time.Since(t0)
				acancel()
				mu.Lock()
				longest = max(longest, took)
				if err != nil {
					uncertain[handle] = err // also the last calls, cut short by the end of the test
				} else {
					got[handle] = a
					okByPhase[phase.Load()].Add(1)
				}
				mu.Unlock()
			}
		})
	}
	stopWorkers := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stopWorkers)

	time.Sleep(2 * time.Second)
	victim := leader()
	members[victim].kill()
	phase.Store(1)
	killed := time.Now()
	t.Logf("killed the leader %s after %d allocations", victim, okByPhase[0].Load())
	time.Sleep(4 * time.Second)
	if newLeader := leader(); newLeader == victim {
		t.Fatalf("leader is still %s after it was killed", victim)
	}
	members[victim].start(t)
	phase.Store(2)
	t.Logf("restarted %s after %.1fs down, %d allocations meanwhile", victim, time.Since(killed).Seconds(), okByPhase[1].Load())

	// The restarted member catches up: through it alone, the cluster's
	// latest writes are readable.
	victimEP := "https://" + members[victim].spec.IP + ":2379"
	only := open(victimEP)
	time.Sleep(2 * time.Second)
	stopWorkers()

	if n := okByPhase[1].Load(); n < 10 {
		t.Errorf("only %d allocations while %s was down, want allocations to go on with 2 of 3 members", n, victim)
	}
	if n := okByPhase[2].Load(); n < 10 {
		t.Errorf("only %d allocations after %s came back", n, victim)
	}
	t.Logf("allocations: %d before, %d with 2 of 3 members, %d after; %d calls failed; longest single allocation %v",
		okByPhase[0].Load(), okByPhase[1].Load(), okByPhase[2].Load(), len(uncertain), longest.Round(time.Millisecond))

	// No address was handed out twice.
	owner := map[netip.Addr]string{}
	for h, a := range got {
		if o, dup := owner[a]; dup {
			t.Fatalf("%v handed to both %s and %s", a, o, h)
		}
		owner[a] = h
	}
	// Every allocation a caller was told of is stored under its handle.
	// An allocation whose call failed may or may not have been committed
	// (the reply was lost with the member); releasing its handle, as a
	// daemon cleaning up a failed pod add does, must leave exactly the
	// told ones.
	m := ipam.New(admin)
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	committed := 0
	for h, err := range uncertain {
		switch rerr := m.ReleaseByHandle(rctx, h); {
		case rerr == nil:
			committed++
		case !errors.Is(rerr, ipam.ErrNotAssigned):
			t.Fatalf("release %s (its allocation failed: %v): %v", h, err, rerr)
		}
	}
	t.Logf("of the %d failed calls, %d had allocated (released now)", len(uncertain), committed)
	check := func(via string, m *ipam.IPAM) {
		allocs, err := m.Allocations(rctx)
		if err != nil {
			t.Fatalf("allocations via %s: %v", via, err)
		}
		stored := map[netip.Addr]string{}
		for _, a := range allocs {
			if h, dup := stored[a.IP]; dup {
				t.Fatalf("via %s: %v stored twice, for %s and %s", via, a.IP, h, a.HandleID)
			}
			stored[a.IP] = a.HandleID
			if got[a.HandleID] != a.IP {
				t.Errorf("via %s: %v stored for %s, which was told %v", via, a.IP, a.HandleID, got[a.HandleID])
			}
		}
		if len(stored) != len(got) {
			t.Errorf("via %s: %d allocations stored, %d told to callers", via, len(stored), len(got))
		}
	}
	check("all members", m)
	check("the restarted member only", ipam.New(only))

	// Every member, the restarted one included, reports the same
	// revision once writes have stopped.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms, err := admin.Members(rctx)
		if err != nil {
			t.Fatal(err)
		}
		revs := map[int64]bool{}
		for _, m := range ms {
			if m.Error != "" {
				revs[-1] = true
			}
			revs[m.Revision] = true
		}
		if len(revs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members disagree 10s after the last write: %+v", ms)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
