package main

// cnitool against a lab node's daemon:
//
//	<lab>-cni (fresh netns)   <lab>-test-1        <lab>-test-2
//	      eth0 (TAP)             eth0                 eth0
//	         ╲                   ╱                     │
//	   podnet daemon in <lab>-worker1        podnet daemon in <lab>-worker2
//	   (cnitool and podnet-cni run here,
//	    PODNET_SOCKET from the lab)

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
)

// cnitool runs cnitool CMD podnet NETNS inside node (so PODNET_SOCKET is
// that node's daemon) and returns its stdout and stderr.
func cnitool(l *lab.Lab, node, tool, pluginDir, confDir, cmd, netns string, env ...string) (string, string, error) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"env", "CNI_PATH=" + pluginDir, "NETCONFPATH=" + confDir}, env...)
	args = append(args, tool, cmd, "podnet", netns)
	err := l.Exec(context.Background(), node, nil, &stdout, &stderr, args...)
	return stdout.String(), stderr.String(), err
}

// stopEtcd stops the lab's etcd (SIGSTOP), so that the daemons' datastore
// calls wait, and returns resume, which continues it once however often
// it is called.
func stopEtcd(t *testing.T, l *lab.Lab) (resume func()) {
	t.Helper()
	etcd := l.Status().EtcdPID
	if etcd == 0 || syscall.Kill(etcd, syscall.SIGSTOP) != nil {
		t.Fatalf("cannot stop the lab's etcd (pid %d)", etcd)
	}
	var resumed sync.Once
	return func() { resumed.Do(func() { syscall.Kill(etcd, syscall.SIGCONT) }) }
}

// waitDatastore waits until the daemon at sock says its datastore is
// want (a nodeapi.Datastore value): it notices etcd stop after a few
// unanswered probes.
func waitDatastore(t *testing.T, sock, want string) {
	t.Helper()
	c := nodeapi.NewClient(sock)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Status()
		if err == nil && st.Datastore == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon at %s: datastore %q (%v) after 30s, want %q", sock, st.Datastore, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cnitoolContainerID is the container ID cnitool makes up for a netns.
func cnitoolContainerID(netns string) string {
	s := sha512.Sum512([]byte(netns))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

func TestCNIToolLab(t *testing.T) {
	labtest.RequireRoot(t)
	pluginDir, tool := cniBinaries(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2})
	confDir := t.TempDir()
	// 1.1.0: STATUS and GC exist; the socket comes from PODNET_SOCKET,
	// which the lab sets in the node.
	writeConflist(t, confDir, "1.1.0", map[string]any{"readyTimeout": "2s"})
	nsName := l.Name() + "-cni"
	netns := addNetns(t, nsName)
	pod := podName("podnet", cnitoolContainerID(netns), "eth0")
	run := func(t *testing.T, cmd string, env ...string) string {
		t.Helper()
		out, errOut, err := cnitool(l, "worker1", tool, pluginDir, confDir, cmd, netns, env...)
		if err != nil {
			t.Fatalf("cnitool %s: %v\nstdout: %s\nstderr: %s", cmd, err, out, errOut)
		}
		return out
	}
	st, err := nodeapi.NewClient(nodeSocket(t, l, "worker1")).Status()
	if err != nil {
		t.Fatal(err)
	}

	var ip netip.Addr
	t.Run("status", func(t *testing.T) { run(t, "status") })
	t.Run("add", func(t *testing.T) {
		var res cniResult
		out := run(t, "add")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("cnitool add: result %q: %v", out, err)
		}
		if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" || res.Interfaces[0].Sandbox != netns ||
			res.Interfaces[0].Mtu != st.PodMTU || res.Interfaces[0].Mac == "" {
			t.Errorf("interfaces = %+v, want one eth0 in %s with MTU %d and a MAC", res.Interfaces, netns, st.PodMTU)
		}
		if len(res.IPs) != 1 || res.IPs[0].Gateway != "169.254.1.1" || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 0 {
			t.Fatalf("ips = %+v, want one address on interface 0 via 169.254.1.1", res.IPs)
		}
		pfx, err := netip.ParsePrefix(res.IPs[0].Address)
		if err != nil || pfx.Bits() != 32 {
			t.Fatalf("address %q: want A.B.C.D/32 (%v)", res.IPs[0].Address, err)
		}
		ip = pfx.Addr()
		if len(res.Routes) != 1 || res.Routes[0].Dst != "0.0.0.0/0" || res.Routes[0].GW != "169.254.1.1" {
			t.Errorf("routes = %+v, want 0.0.0.0/0 via 169.254.1.1", res.Routes)
		}
		p, ok := podsOf(t, l, "worker1")[pod]
		if !ok || p.IP != ip.String() || p.Netns != netns || !p.Attached {
			t.Fatalf("worker1's pod %s = %+v (found %v), want attached, %s in %s", pod, p, ok, ip, netns)
		}
		if addr := inNetns(t, nsName, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addr, ip.String()+"/32") {
			t.Errorf("eth0 in %s: %s, want %s/32", nsName, addr, ip)
		}
	})
	if ip == (netip.Addr{}) {
		t.FailNow()
	}
	t.Run("ping and HTTP across nodes", func(t *testing.T) {
		peer := l.PodIP("test-2") // on worker2
		inNetns(t, nsName, "ping", "-c", "2", "-i", "0.2", "-W", "2", peer.String())
		body, err := httpGet(netns, netip.AddrPortFrom(peer, 80), "/")
		if want := lab.PageText("test-2", "worker2", peer); err != nil || body != want {
			t.Errorf("GET http://%s/ from the CNI pod: %q, %v; want %q", peer, body, err, want)
		}
		// And back: test-2 reaches the CNI pod.
		if out, err := l.Output(context.Background(), "test-2", "ping", "-c", "2", "-i", "0.2", "-W", "2", ip.String()); err != nil {
			t.Errorf("ping %s from test-2: %v\n%s", ip, err, out)
		}
	})
	t.Run("check", func(t *testing.T) { run(t, "check") })
	t.Run("check finds a broken pod", func(t *testing.T) {
		// A changed MTU, not eth0 down: down would also take the routes,
		// which up does not bring back.
		inNetns(t, nsName, "ip", "link", "set", "eth0", "mtu", "1300")
		defer inNetns(t, nsName, "ip", "link", "set", "eth0", "mtu", fmt.Sprint(st.PodMTU))
		_, errOut, err := cnitool(l, "worker1", tool, pluginDir, confDir, "check", netns)
		want := fmt.Sprintf("eth0 has MTU 1300, want %d", st.PodMTU)
		if err == nil || !strings.Contains(errOut, want) {
			t.Fatalf("cnitool check with MTU 1300: err %v, stderr %q; want an error saying %q", err, errOut, want)
		}
	})
	t.Run("check and del after a daemon restart", func(t *testing.T) {
		if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
			t.Fatal(err)
		}
		run(t, "check")
		run(t, "del")
		if p, ok := podsOf(t, l, "worker1")[pod]; ok {
			t.Fatalf("pod %s still on worker1 after del: %+v", pod, p)
		}
		if out := inNetns(t, nsName, "ip", "-o", "link", "show"); strings.Contains(out, "eth0") {
			t.Errorf("eth0 still in %s after del: %s", nsName, out)
		}
		// The address went back to IPAM.
		out, err := l.Output(context.Background(), "worker1", "podnet", "ipam", "show", "--ip", ip.String())
		if err != nil || !strings.Contains(string(out), "is not assigned") {
			t.Errorf("podnet ipam show --ip %s after del: %v\n%s", ip, err, out)
		}
	})
	t.Run("del twice", func(t *testing.T) { run(t, "del") })
	t.Run("add again gets an address", func(t *testing.T) {
		run(t, "add")
		if _, ok := podsOf(t, l, "worker1")[pod]; !ok {
			t.Fatalf("no pod %s on worker1 after a second add", pod)
		}
	})
	t.Run("del after the namespace is gone", func(t *testing.T) {
		p, ok := podsOf(t, l, "worker1")[pod]
		if !ok {
			t.Fatalf("no pod %s on worker1", pod)
		}
		if out, err := exec.Command("ip", "netns", "del", nsName).CombinedOutput(); err != nil {
			t.Fatalf("ip netns del %s: %v: %s", nsName, err, out)
		}
		run(t, "del")
		if _, ok := podsOf(t, l, "worker1")[pod]; ok {
			t.Errorf("pod %s still on worker1 after del", pod)
		}
		out, err := l.Output(context.Background(), "worker1", "podnet", "ipam", "show", "--ip", p.IP)
		if err != nil || !strings.Contains(string(out), "is not assigned") {
			t.Errorf("podnet ipam show --ip %s after del: %v\n%s", p.IP, err, out)
		}
		if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", nsName, err, out)
		}
	})
	t.Run("gc removes attachments the runtime no longer lists", func(t *testing.T) {
		// cnitool's gc lists no valid attachment: every pod of network
		// podnet goes; the lab's own pods stay.
		run(t, "add")
		run(t, "gc")
		pods := podsOf(t, l, "worker1")
		if _, ok := pods[pod]; ok {
			t.Errorf("pod %s still on worker1 after gc", pod)
		}
		if _, ok := pods["test-1"]; !ok {
			t.Errorf("gc removed the lab's pod test-1: %v", pods)
		}
	})
	t.Run("eth1 is refused", func(t *testing.T) {
		_, errOut, err := cnitool(l, "worker1", tool, pluginDir, confDir, "add", netns, "CNI_IFNAME=eth1")
		if err == nil || !strings.Contains(errOut, `CNI_IFNAME "eth1"`) {
			t.Fatalf("cnitool add with CNI_IFNAME=eth1: err %v, stderr %q; want an error naming CNI_IFNAME", err, errOut)
		}
	})
	// The plugin itself, as a runtime calls it: errors are CNI's JSON on
	// stdout with the code the runtime acts on.
	sock := nodeSocket(t, l, "worker1")
	pluginConf := func(cmd, containerID string, extra map[string]any) *exec.Cmd {
		conf := map[string]any{"cniVersion": "1.1.0", "name": "podnet", "type": "podnet-cni"}
		for k, v := range extra {
			conf[k] = v
		}
		stdin, _ := json.Marshal(conf)
		c := exec.Command(pluginDir + "/podnet-cni")
		c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
			"CNI_IFNAME=eth0", "CNI_PATH="+pluginDir, "PODNET_SOCKET="+sock)
		c.Stdin = bytes.NewReader(stdin)
		return c
	}
	plugin := func(cmd, containerID, readyTimeout string) *exec.Cmd {
		return pluginConf(cmd, containerID, map[string]any{"readyTimeout": readyTimeout})
	}
	// restartDaemon restarts worker1's daemon with env (name, value, ...)
	// set, such as the daemon's test pause.
	restartDaemon := func(t *testing.T, env ...string) {
		t.Helper()
		if err := l.StopDaemon("worker1", syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(env); i += 2 {
			os.Setenv(env[i], env[i+1]) // the daemon inherits the test's environment
			defer os.Unsetenv(env[i])
		}
		if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("daemon down: try again later", func(t *testing.T) {
		if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := l.StartDaemon(context.Background(), "worker1"); err != nil {
				t.Fatal(err)
			}
		}()
		for _, tc := range []struct {
			cmd  string
			code uint
			msg  string
		}{
			{"ADD", 11, "podnet daemon at " + sock + " not ready after 2s"},
			{"DEL", 11, "podnet daemon at " + sock + " not ready after 2s"},
			{"STATUS", 50, "podnet daemon at " + sock + " is not available"},
		} {
			out, err := plugin(tc.cmd, "down-test", "2s").Output()
			e, ok := decodeError(out)
			if err == nil || !ok || e.Code != tc.code || e.Msg != tc.msg {
				t.Errorf("%s with the daemon down: err %v, answer %s; want code %d %q", tc.cmd, err, out, tc.code, tc.msg)
			}
		}
	})
	t.Run("add waits for a daemon that is starting", func(t *testing.T) {
		if err := l.StopDaemon("worker1", syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		add := plugin("ADD", "wait-test", "60s")
		var stdout, stderr bytes.Buffer
		add.Stdout, add.Stderr = &stdout, &stderr
		if err := add.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the plugin is now polling a dead socket
		startErr := l.StartDaemon(context.Background(), "worker1")
		if err := add.Wait(); err != nil {
			t.Fatalf("ADD while the daemon started: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
		if startErr != nil {
			t.Fatal(startErr)
		}
		var res cniResult
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res.IPs) != 1 {
			t.Fatalf("ADD result %q: %v", stdout.String(), err)
		}
		if out, err := plugin("DEL", "wait-test", "10s").CombinedOutput(); err != nil {
			t.Fatalf("DEL: %v: %s", err, out)
		}
		if _, ok := podsOf(t, l, "worker1")[podName("podnet", "wait-test", "eth0")]; ok {
			t.Errorf("pod of wait-test still on worker1 after DEL")
		}
	})
	t.Run("del twice while etcd is down", func(t *testing.T) {
		// The first DEL takes the pod off the node and leaves its address
		// for the daemon to release when etcd is back; the runtime's next
		// DEL must succeed meanwhile.
		if out, err := plugin("ADD", "etcd-down-test", "10s").CombinedOutput(); err != nil {
			t.Fatalf("ADD: %v: %s", err, out)
		}
		resume := stopEtcd(t, l)
		defer resume()
		for i := range 2 {
			if out, err := plugin("DEL", "etcd-down-test", "10s").CombinedOutput(); err != nil {
				t.Fatalf("DEL %d with etcd stopped: %v: %s", i+1, err, out)
			}
		}
		resume()
		if out, err := plugin("DEL", "etcd-down-test", "10s").CombinedOutput(); err != nil {
			t.Fatalf("DEL after etcd is back: %v: %s", err, out)
		}
	})
	t.Run("status fails while etcd is down", func(t *testing.T) {
		// The daemon answers, but refuses every pod add: CNI 1.1 wants
		// STATUS to say the plugin cannot serve ADD.
		resume := stopEtcd(t, l)
		defer resume()
		waitDatastore(t, sock, nodeapi.DatastoreUnreachable)
		out, err := plugin("STATUS", "status-test", "10s").Output()
		want := "podnet daemon at " + sock + " cannot add pods: its datastore is unreachable"
		if e, ok := decodeError(out); err == nil || !ok || e.Code != 50 || !strings.Contains(e.Msg, want) {
			t.Fatalf("STATUS with etcd stopped: err %v, answer %s; want code 50 %q", err, out, want)
		}
		resume()
		waitDatastore(t, sock, nodeapi.DatastoreReachable)
		if out, err := plugin("STATUS", "status-test", "10s").CombinedOutput(); err != nil {
			t.Fatalf("STATUS after etcd is back: %v: %s", err, out)
		}
	})
	t.Run("add while etcd is down: try again later", func(t *testing.T) {
		resume := stopEtcd(t, l)
		defer resume()
		waitDatastore(t, sock, nodeapi.DatastoreUnreachable)
		out, err := plugin("ADD", "etcd-add-test", "10s").Output()
		if e, ok := decodeError(out); err == nil || !ok || e.Code != 11 || !strings.Contains(e.Msg, "datastore unreachable") {
			t.Fatalf("ADD with etcd stopped: err %v, answer %s; want code 11 saying the datastore is unreachable", err, out)
		}
	})
	t.Run("add from an unknown pool: invalid configuration", func(t *testing.T) {
		out, err := pluginConf("ADD", "pool-test", map[string]any{"pool": "no-such-pool"}).Output()
		if e, ok := decodeError(out); err == nil || !ok || e.Code != 7 || !strings.Contains(e.Msg, "pool no-such-pool does not exist") {
			t.Fatalf("ADD from pool no-such-pool: err %v, answer %s; want code 7 naming the pool", err, out)
		}
	})
	t.Run("del while the add waits: try again later", func(t *testing.T) {
		// A runtime whose ADD timed out sends DEL while the daemon still
		// adds the pod: here the daemon waits 8 s after allocating the
		// address (its test pause), so the DEL comes in the middle.
		restartDaemon(t, "PODNET_TEST_PAUSE_AT", "add-alloc", "PODNET_TEST_PAUSE_FOR", "8s")
		defer restartDaemon(t)
		add := plugin("ADD", "stall-test", "10s")
		if err := add.Start(); err != nil {
			t.Fatal(err)
		}
		name := podName("podnet", "stall-test", "eth0")
		c := nodeapi.NewClient(sock)
		deadline := time.Now().Add(8 * time.Second)
		for {
			err := c.DeletePod(name)
			if errors.Is(err, nodeapi.ErrBusy) {
				break
			}
			if !errors.Is(err, nodeapi.ErrNotFound) || time.Now().After(deadline) {
				t.Fatalf("delete of the pod being added: %v, want it busy", err)
			}
			time.Sleep(20 * time.Millisecond) // the ADD has not reached the daemon yet
		}
		out, err := plugin("DEL", "stall-test", "2s").Output()
		if e, ok := decodeError(out); err == nil || !ok || e.Code != 11 || !strings.Contains(e.Msg, "is being added") {
			t.Fatalf("DEL while the ADD waits: err %v, answer %s; want code 11 saying the pod is being added", err, out)
		}
		if err := add.Wait(); err != nil {
			t.Fatalf("the ADD after its pause: %v", err)
		}
		if out, err := plugin("DEL", "stall-test", "10s").CombinedOutput(); err != nil {
			t.Fatalf("DEL after the ADD: %v: %s", err, out)
		}
		if _, ok := podsOf(t, l, "worker1")[name]; ok {
			t.Errorf("pod %s still on worker1 after DEL", name)
		}
	})
	t.Run("gc skips a pod a del is removing", func(t *testing.T) {
		// GC lists two pods of the network, then deletes them in turn.
		// The daemon holds each delete 5 s (its test pause): while it
		// holds GC's first, the runtime's DEL takes the second, which GC
		// then finds being deleted. That is what GC wanted: no error.
		c := nodeapi.NewClient(sock)
		// The network's only pods are to be the two (GC's order theirs).
		for name := range podsOf(t, l, "worker1") {
			if strings.HasPrefix(name, networkPrefix("podnet")) {
				if err := c.DeletePod(name); err != nil {
					t.Fatal(err)
				}
			}
		}
		restartDaemon(t, "PODNET_TEST_PAUSE_AT", "del-start", "PODNET_TEST_PAUSE_FOR", "5s")
		defer restartDaemon(t)
		first, second := networkPrefix("podnet")+"gc1", networkPrefix("podnet")+"gc2"
		for _, name := range []string{first, second} {
			if _, err := c.AddPod(nodeapi.AddPodRequest{Name: name, New: true}); err != nil {
				t.Fatal(err)
			}
		}
		gc := plugin("GC", "gc-test", "10s")
		var stdout, stderr bytes.Buffer
		gc.Stdout, gc.Stderr = &stdout, &stderr
		if err := gc.Start(); err != nil {
			t.Fatal(err)
		}
		gcDone := make(chan error, 1)
		go func() { gcDone <- gc.Wait() }()
		waitUnlisted := func(name string) {
			t.Helper()
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, ok := podsOf(t, l, "worker1")[name]; !ok {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("pod %s still listed after 5s", name)
				}
			}
		}
		waitUnlisted(first) // GC has listed the pods and deletes the first
		delDone := make(chan error, 1)
		go func() { delDone <- c.DeletePod(second) }()
		waitUnlisted(second)
		select {
		case err := <-gcDone:
			t.Fatalf("GC ended (%v) before the DEL of %s began: nothing tested", err, second)
		default:
		}
		if err := <-gcDone; err != nil {
			t.Errorf("GC while a DEL removes %s: %v\nstdout: %s\nstderr: %s", second, err, stdout.String(), stderr.String())
		}
		if err := <-delDone; err != nil {
			t.Errorf("DEL of %s: %v", second, err)
		}
	})
}
