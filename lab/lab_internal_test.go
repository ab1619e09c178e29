package lab

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"podnet", true},
		{"a", true},
		{"t1a2b3", true},
		{"abcdefghijkl", true},
		{"abcdefghijklm", false}, // 13 characters
		{"", false},
		{"1lab", false},
		{"Lab", false},
		{"my-lab", false},
		{"my_lab", false},
		{"lab ", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q): got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      Config
		want    Config // checked fields: Name, Nodes, Pods, RunDir, Binary
		wantErr string
	}{
		{name: "zero value", in: Config{HTTPServer: HTTPBuiltin},
			want: Config{Name: "podnet", Nodes: 2, Pods: 3, RunDir: "/run/podnet/lab/podnet", Binary: exe}},
		{name: "no pods", in: Config{Name: "x", Nodes: 3, Pods: NoPods, Binary: "/bin/podnet", HTTPServer: HTTPBuiltin},
			want: Config{Name: "x", Nodes: 3, Pods: 0, RunDir: "/run/podnet/lab/x", Binary: "/bin/podnet"}},
		{name: "no daemon means no pods", in: Config{NoDaemon: true, Pods: 5, RunDir: "/tmp/r", HTTPServer: HTTPBuiltin},
			want: Config{Name: "podnet", Nodes: 2, Pods: 0, RunDir: "/tmp/r", Binary: exe}},
		{name: "bad name", in: Config{Name: "Bad"}, wantErr: `lab name "Bad": must match`},
		{name: "negative nodes", in: Config{Nodes: -1}, wantErr: "Nodes -1: must be 1..244"},
		{name: "too many nodes", in: Config{Nodes: 245}, wantErr: "Nodes 245"},
		{name: "too many pods", in: Config{Nodes: 2, Pods: 507}, wantErr: "Pods 507: at most 253 per node (506 with 2 nodes)"},
		{name: "bad http server", in: Config{HTTPServer: "apache"}, wantErr: `HTTPServer "apache"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.withDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got err %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want.Name || got.Nodes != tt.want.Nodes || got.Pods != tt.want.Pods ||
				got.RunDir != tt.want.RunDir || got.Binary != tt.want.Binary {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMemberRE(t *testing.T) {
	tests := []struct {
		ns   string
		want bool
	}{
		{"podnet-fabric", true},
		{"podnet-external", true},
		{"podnet-worker1", true},
		{"podnet-worker12", true},
		{"podnet-test-1", true},
		{"podnet-test-100", true},
		// Pods added by hand on a node (HandPodNetnsPrefix).
		{"podnet-worker1-foo", true},
		{"podnet-worker12-a-b", true},
		{"podnet-worker1-", false},
		{"podnetx-worker1-foo", false},
		{"podnet-workerx-foo", false},
		{"podnet2-fabric", false},
		{"podnetx-worker1", false},
		{"podnet-test-1x", false},
		{"podnet-worker", false},
		{"podnet-test-", false},
		{"xpodnet-fabric", false},
		{"podnet-fabric2", false},
		{"podnet-workera", false},
		{"podnet", false},
	}
	re := memberRE("podnet")
	for _, tt := range tests {
		if got := re.MatchString(tt.ns); got != tt.want {
			t.Errorf("memberRE(podnet).MatchString(%q): got %v, want %v", tt.ns, got, tt.want)
		}
	}
}

func TestSortTeardown(t *testing.T) {
	nss := []string{"l-fabric", "l-worker10", "l-worker3-hand", "l-web", "l-test-2", "l-external", "l-worker2", "l-test-10", "l-test-1"}
	sortTeardown("l", nss)
	want := []string{"l-test-1", "l-test-2", "l-test-10", "l-worker3-hand", "l-web", "l-worker2", "l-worker10", "l-external", "l-fabric"}
	if !slices.Equal(nss, want) {
		t.Errorf("got %v, want %v", nss, want)
	}
}

func TestPlacePods(t *testing.T) {
	tests := []struct {
		name        string
		pods, nodes int
		want        []placement
	}{
		{"none", 0, 2, []placement{}},
		{"one node", 2, 1, []placement{{1, 1}, {2, 1}}},
		{"round robin", 5, 2, []placement{{1, 1}, {2, 2}, {3, 1}, {4, 2}, {5, 1}}},
		{"more nodes than pods", 2, 3, []placement{{1, 1}, {2, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := placePods(tt.pods, tt.nodes); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParsePodAdded(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    netip.Addr
		wantErr string
	}{
		{name: "real daemon's answer",
			out: `{"name":"test-1","ip":"192.168.0.65","netns":"/run/netns/l-test-1","tap":"tap1","mac":"02:00:00:00:00:01",` +
				`"node":"worker1","port":3,"attached":true,"created":"2025-01-01T00:00:00Z"}` + "\n",
			want: netip.MustParseAddr("192.168.0.65")},
		{name: "not json", out: "pod test-1 added: 192.168.0.65", wantErr: "decode pod add output"},
		{name: "other pod", out: `{"name":"test-2","ip":"192.168.0.65"}`, wantErr: `answered for pod "test-2"`},
		{name: "no address", out: `{"name":"test-1"}`, wantErr: "gave no address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePodAdded([]byte(tt.out), "test-1")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got err %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestIsEtcdOf(t *testing.T) {
	const dir = "/run/podnet/lab/ab/etcd"
	tests := []struct {
		name string
		argv string // space-separated
		want bool
	}{
		{"lab's etcd", "/usr/bin/podnet datastore serve --dir /run/podnet/lab/ab/etcd --socket /run/podnet/lab/ab/etcd.sock", true},
		{"dir= form", "podnet datastore serve --socket /s --dir=/run/podnet/lab/ab/etcd", true},
		{"through sh", "/bin/sh /tmp/podnet datastore serve --dir /run/podnet/lab/ab/etcd", true},
		{"lab whose name extends it", "podnet datastore serve --dir /run/podnet/lab/ab2/etcd", false},
		{"dir below", "podnet datastore serve --dir /run/podnet/lab/ab/etcd/x", false},
		{"dir= below", "podnet datastore serve --dir=/run/podnet/lab/ab/etcd2", false},
		{"not serve", "podnet datastore compact --dir /run/podnet/lab/ab/etcd", false},
		{"no dir", "podnet datastore serve", false},
		{"dir without value", "podnet datastore serve --dir", false},
		{"daemon", "podnet daemon --dir /run/podnet/lab/ab/etcd", false},
		{"empty (zombie)", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var argv [][]byte
			for _, a := range strings.Fields(tt.argv) {
				argv = append(argv, []byte(a))
			}
			if got := isEtcdOf(argv, dir); got != tt.want {
				t.Errorf("isEtcdOf(%q): got %v, want %v", tt.argv, got, tt.want)
			}
		})
	}
}

// TestFillPattern checks the fast fill against PatternByte, its obviously
// correct twin, at random offsets and lengths.
func TestFillPattern(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		off := r.Int64N(1 << 40)
		b := make([]byte, r.IntN(2000))
		FillPattern(b, off)
		for i := range b {
			if want := PatternByte(off + int64(i)); b[i] != want {
				t.Fatalf("FillPattern(off %d)[%d]: got %d, want %d", off, i, b[i], want)
			}
		}
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler(ServeConfig{Pod: "test-2", Node: "worker2", IP: netip.MustParseAddr("192.168.2.2")}))
	defer srv.Close()
	big := make([]byte, 3*patternPeriod*256+17)
	FillPattern(big, 0)
	tests := []struct {
		name, path string
		code       int
		body       []byte
	}{
		{"page", "/", 200, []byte("pod test-2 on worker2 (192.168.2.2)\n")},
		{"zero bytes", "/bytes?n=0", 200, []byte{}},
		{"few bytes", "/bytes?n=5", 200, []byte{0, 1, 2, 3, 4}},
		{"many bytes", "/bytes?n=" + strconv.Itoa(len(big)), 200, big},
		{"negative", "/bytes?n=-1", 400, nil},
		{"not a number", "/bytes?n=lots", 400, nil},
		{"missing n", "/bytes", 400, nil},
		{"other path", "/nope", 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.code {
				t.Fatalf("GET %s: got status %d, want %d", tt.path, resp.StatusCode, tt.code)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("GET %s: got %d bytes %.40q, want %d bytes %.40q", tt.path, len(body), body, len(tt.body), tt.body)
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	tests := []struct {
		env, args []string
		want      string
	}{
		{nil, []string{"ip", "-n", "l-fabric", "addr", "add", "10.77.0.1/24", "dev", "br0"}, "ip -n l-fabric addr add 10.77.0.1/24 dev br0"},
		{[]string{"PODNET_SOCKET=/run/x.sock"}, []string{"podnet", "status"}, "PODNET_SOCKET=/run/x.sock podnet status"},
		{nil, []string{"sh", "-c", "echo it's"}, `sh -c 'echo it'\''s'`},
		{nil, []string{"printf", ""}, "printf ''"},
	}
	for _, tt := range tests {
		if got := cmdline(tt.env, tt.args); got != tt.want {
			t.Errorf("cmdline(%q, %q): got %s, want %s", tt.env, tt.args, got, tt.want)
		}
	}
}

func TestProcIdentity(t *testing.T) {
	self, err := identify(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !self.running() {
		t.Errorf("identify(self) = %+v: not running", self)
	}
	if other := (procID{PID: self.PID, Start: self.Start + 1}); other.running() {
		t.Errorf("%+v with another start time: running, want not (PID reuse guard)", other)
	}
	if err := (procID{PID: self.PID, Start: self.Start + 1}).signal(0); err != errGone {
		t.Errorf("signal to a reused PID: got %v, want errGone", err)
	}
}

func TestPrependPath(t *testing.T) {
	env := prependPath([]string{"HOME=/root", "PATH=/usr/bin:/bin", "PODNET_SOCKET=/elsewhere",
		"PODNET_DATASTORE_ENDPOINTS=unix:///other/etcd.sock"}, "/opt/podnet")
	want := []string{"HOME=/root", "PATH=/opt/podnet:/usr/bin:/bin"}
	if !slices.Equal(env, want) {
		t.Errorf("got %q, want %q", env, want)
	}
	env = prependPath([]string{"PATH=/bin"}, binDirs("/run/podnet/lab/x", "/tmp/pn")...)
	if want := []string{"PATH=/run/podnet/lab/x/bin:/tmp:/bin"}; !slices.Equal(env, want) {
		t.Errorf("binary not called podnet: got %q, want %q", env, want)
	}
}

func TestWriteNginxConf(t *testing.T) {
	dir := t.TempDir()
	p := podState{Name: "test-1", Node: "worker1", IP: netip.MustParseAddr("192.168.1.2"), Dir: dir}
	conf, err := writeNginxConf(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"daemon off;", "listen 80;", "pid " + dir + "/nginx.pid;", "error_log " + dir + "/error.log;",
		"access_log " + dir + "/access.log;", "root " + dir + "/www;",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("nginx.conf: missing %q", want)
		}
	}
	page, err := os.ReadFile(dir + "/www/index.txt")
	if err != nil {
		t.Fatal(err)
	}
	if want := "pod test-1 on worker1 (192.168.1.2)\n"; string(page) != want {
		t.Errorf("index page: got %q, want %q", page, want)
	}
}

// WaitListen sees a socket of this process that listens, and not a port
// nobody listens on or one that is only connected.
func TestWaitListen(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := WaitListen(ctx, os.Getpid(), port, time.Second); err != nil {
		t.Errorf("listening port %d: %v", port, err)
	}
	connected := c.LocalAddr().(*net.TCPAddr).Port
	if err := WaitListen(ctx, os.Getpid(), connected, 100*time.Millisecond); err == nil {
		t.Errorf("port %d is only connected, yet WaitListen says it listens", connected)
	}
}
