package lab_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/lab"
)

// The lab's own tests must not wait for the real daemon, so the test
// binary doubles as a fake podnet: fakePodnet is a script named `podnet`
// that re-runs this binary with fakeEnv set, and TestMain then acts out
// the CLI contract the lab relies on:
//
//	podnet datastore serve --dir D --socket S
//	    creates D, listens on S until SIGTERM; exits at once when the
//	    lab's name (D's parent dir) starts with failEtcdPrefix
//	podnet daemon --node N --underlay IF --state-dir D --socket S
//	        --datastore unix://E [ARGS]
//	    checks that E accepts (so the datastore must be up first), then
//	    listens on S until SIGTERM; --fake-fail makes it exit at once
//	podnet status                  exit 0 iff $PODNET_SOCKET accepts
//	podnet pod add NAME --netns P [--ip A] [-o json]
//	    without --ip allocates 192.168.K.(n+2) for the n-th pod of node
//	    workerK (a counter file beside $PODNET_SOCKET), so tests can
//	    predict addresses; appends "NAME A P ipam|fixed" to pods.log beside
//	    $PODNET_SOCKET and prints the pod (as JSON with -o json)
//	podnet pod list -o json        the pods of pods.log beside
//	    $PODNET_SOCKET, as JSON (lab.Down asks for pods it did not add)
//	podnet lab serve-http ...      the real lab.ServeHTTP
//
// plus test tools the machine may lack: `podnet ping ADDR` (one ICMP
// echo) and `podnet get URL` (print the body).
const fakeEnv = "PODNET_LAB_FAKE"

// failEtcdPrefix starts the name of labs whose fake etcd fails: Config
// has no etcd flags, and the environment is shared by parallel tests.
const failEtcdPrefix = "etcdfail"

// fakePodnet is the path of the fake podnet script, set by TestMain.
var fakePodnet string

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(fakeMain(os.Args[1:]))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "find test binary:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "lab-fake-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "make fake podnet dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Others must be able to traverse it: pods run as root, but nginx
	// workers would not.
	os.Chmod(dir, 0o755)
	fakePodnet = filepath.Join(dir, "podnet")
	// Under -race a program sleeps 1s at exit (atexit_sleep_ms), which
	// would make every fake call take a second.
	script := fmt.Sprintf("#!/bin/sh\nGORACE=\"$GORACE atexit_sleep_ms=0\" %s=1 exec '%s' \"$@\"\n", fakeEnv, exe)
	if err := os.WriteFile(fakePodnet, []byte(script), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "write fake podnet:", err)
		return 1
	}
	return m.Run()
}

func fakeMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "fake podnet: no command")
		return 2
	}
	var err error
	switch cmd := strings.Join(args[:min(2, len(args))], " "); {
	case cmd == "datastore serve":
		err = fakeDatastore(args[2:])
	case args[0] == "daemon":
		err = fakeDaemon(args[1:])
	case args[0] == "status":
		err = fakeStatus()
	case cmd == "pod add":
		err = fakePodAdd(args[2:])
	case cmd == "pod list":
		err = fakePodList()
	case cmd == "route list":
		// Everything routed: the lab only waits for convergence.
		fmt.Println(`[{"prefix":"0.0.0.0/1","kind":"remote"},{"prefix":"128.0.0.0/1","kind":"remote"}]`)
	case cmd == "lab serve-http":
		err = fakeServeHTTP(args[2:])
	case args[0] == "ping":
		err = fakePing(args[1:])
	case args[0] == "get":
		err = fakeGet(args[1:])
	default:
		err = fmt.Errorf("unknown command %q", args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake podnet:", err)
		return 1
	}
	return 0
}

// fakeDatastore stands in for the embedded etcd: a unix socket that
// accepts until SIGTERM.
func fakeDatastore(args []string) error {
	fs := flag.NewFlagSet("datastore serve", flag.ContinueOnError)
	dir := fs.String("dir", "", "")
	sock := fs.String("socket", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Printf("fake etcd: dir=%s socket=%s\n", *dir, *sock)
	if *dir == "" || *sock == "" || fs.NArg() > 0 {
		return fmt.Errorf("datastore serve: want --dir and --socket, got %q", args)
	}
	if strings.HasPrefix(filepath.Base(filepath.Dir(*dir)), failEtcdPrefix) {
		return fmt.Errorf("etcd failing on purpose")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	return serveUnix(*sock)
}

func fakeDaemon(args []string) error {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	node := fs.String("node", "", "")
	underlay := fs.String("underlay", "", "")
	stateDir := fs.String("state-dir", "", "")
	sock := fs.String("socket", "", "")
	ds := fs.String("datastore", "", "")
	netnsPrefix := fs.String("pod-netns-prefix", "", "")
	fail := fs.Bool("fake-fail", false, "")
	fs.Bool("fake-flag", false, "")
	ipip := fs.String("default-ipv4-pool-ipip", "", "")
	fs.String("default-ipv4-pool-vxlan", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Printf("fake daemon: node=%s underlay=%s state-dir=%s datastore=%s args=%q\n", *node, *underlay, *stateDir, *ds, args)
	if *fail {
		return fmt.Errorf("daemon failing on purpose")
	}
	// The lab names hand-made pods' namespaces after itself and the node.
	if !strings.HasSuffix(*netnsPrefix, "-"+*node+"-") || len(*netnsPrefix) <= len(*node)+2 {
		return fmt.Errorf("--pod-netns-prefix %q, want <lab>-%s-", *netnsPrefix, *node)
	}
	switch *ipip {
	case "Always", "CrossSubnet", "Never":
	default:
		return fmt.Errorf("--default-ipv4-pool-ipip %q: the lab must set Always, CrossSubnet or Never", *ipip)
	}
	if _, err := net.InterfaceByName(*underlay); err != nil {
		return fmt.Errorf("underlay %s: %w", *underlay, err)
	}
	// Without --datastore the real daemon would start an etcd of its own:
	// in a lab that is a bug, so the fake refuses.
	path, ok := strings.CutPrefix(*ds, "unix://")
	if !ok || !filepath.IsAbs(path) {
		return fmt.Errorf("--datastore %q: want unix:///absolute/path", *ds)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("datastore %s: %w", *ds, err)
	}
	c.Close()
	return serveUnix(*sock)
}

// serveUnix accepts (and closes) connections on the unix socket path until
// SIGTERM or SIGINT.
func serveUnix(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	<-ctx.Done()
	return ln.Close()
}

func fakeStatus() error {
	c, err := net.Dial("unix", os.Getenv("PODNET_SOCKET"))
	if err != nil {
		return err
	}
	return c.Close()
}

func fakePodAdd(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("pod add: no name")
	}
	fs := flag.NewFlagSet("pod add", flag.ContinueOnError)
	netns := fs.String("netns", "", "")
	ip := fs.String("ip", "", "")
	output := fs.String("o", "text", "")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if _, err := os.Stat(*netns); err != nil {
		return fmt.Errorf("pod add --netns: %w", err)
	}
	if err := fakeStatus(); err != nil {
		return fmt.Errorf("pod add: daemon: %w", err)
	}
	nodeDir := filepath.Dir(os.Getenv("PODNET_SOCKET"))
	node := filepath.Base(nodeDir)
	from := "fixed"
	if *ip == "" {
		a, err := fakeAllocate(nodeDir)
		if err != nil {
			return fmt.Errorf("pod add: ipam: %w", err)
		}
		*ip, from = a.String(), "ipam"
	}
	if _, err := netip.ParseAddr(*ip); err != nil {
		return fmt.Errorf("pod add --ip: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(nodeDir, "pods.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "%s %s %s %s\n", args[0], *ip, *netns, from)
	if err := f.Close(); err != nil {
		return err
	}
	if *output == "json" {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"name": args[0], "ip": *ip, "netns": *netns, "tap": "tap0", "mac": "02:00:00:00:00:01",
			"node": node, "port": 2, "attached": true, "created": time.Now().Format(time.RFC3339),
		})
	}
	fmt.Printf("pod %s added: %s on %s\n", args[0], *ip, node)
	return nil
}

// fakeAllocate hands out 192.168.K.(n+2) to the n-th pod (from 0) of node
// workerK, whose dir is nodeDir, counting in nodeDir/ipam.count.
func fakeAllocate(nodeDir string) (netip.Addr, error) {
	k, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(nodeDir), "worker"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("node of %s: %w", nodeDir, err)
	}
	counter := filepath.Join(nodeDir, "ipam.count")
	n := 0
	if b, err := os.ReadFile(counter); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if err := os.WriteFile(counter, []byte(strconv.Itoa(n+1)), 0o644); err != nil {
		return netip.Addr{}, err
	}
	return netip.AddrFrom4([4]byte{192, 168, byte(k), byte(n + 2)}), nil
}

// fakeServeHTTP parses the flags `podnet lab serve-http` takes.
func fakeServeHTTP(args []string) error {
	fs := flag.NewFlagSet("serve-http", flag.ContinueOnError)
	var cfg lab.ServeConfig
	fs.StringVar(&cfg.Pod, "pod", "", "")
	fs.StringVar(&cfg.Node, "node", "", "")
	fs.StringVar(&cfg.Addr, "addr", "", "")
	ip := fs.String("ip", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ip != "" {
		cfg.IP = netip.MustParseAddr(*ip)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return lab.ServeHTTP(ctx, cfg)
}

// fakePing sends one ICMP echo request to args[0] and waits up to 2s for
// the reply. Read on a raw ip4 conn returns the IPv4 header too.
func fakePing(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("ping: want one address")
	}
	c, err := net.Dial("ip4:icmp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	req := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'l', 'a', 'b'}
	binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
	if _, err := c.Write(req); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("ping %s: %w", args[0], err)
		}
		if n < 20 || buf[0]>>4 != 4 {
			continue
		}
		m := buf[int(buf[0]&0x0f)*4 : n]
		if len(m) >= 8 && m[0] == 0 && binary.BigEndian.Uint16(m[4:]) == id {
			fmt.Printf("reply from %s\n", args[0])
			return nil
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func fakeGet(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("get: want one URL")
	}
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", args[0], resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

// fakePodList prints the pods fakePodAdd recorded for this node.
func fakePodList() error {
	if err := fakeStatus(); err != nil {
		return fmt.Errorf("pod list: daemon: %w", err)
	}
	nodeDir := filepath.Dir(os.Getenv("PODNET_SOCKET"))
	b, err := os.ReadFile(filepath.Join(nodeDir, "pods.log"))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	pods := []map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			pods = append(pods, map[string]string{"name": f[0], "ip": f[1], "netns": f[2], "node": filepath.Base(nodeDir)})
		}
	}
	return json.NewEncoder(os.Stdout).Encode(pods)
}
