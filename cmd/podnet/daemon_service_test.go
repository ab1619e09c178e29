package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
)

// buildStamped builds podnet with a version and commit stamped in, as
// the Makefile does, into dir.
func buildStamped(t *testing.T, dir, version, commit string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "podnet")
	cmd := exec.Command(gobin, "build", "-o", bin, "-ldflags",
		"-X podnet/internal/buildinfo.version="+version+" -X podnet/internal/buildinfo.commit="+commit, "podnet/cmd/podnet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestDaemonService runs a real daemon the way systemd does (Type=notify)
// in a lab node's namespace: settings from a config file with one flag
// overriding it, readiness on a NOTIFY_SOCKET the test listens on, the
// version through the API and on /metrics, STOPPING=1 and a clean exit
// on SIGTERM.
func TestDaemonService(t *testing.T) {
	labtest.RequireRoot(t)
	const version, commit = "v0.0.0-sdtest", "feedface"
	// Short: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "pnsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := buildStamped(t, dir, version, commit)
	l := labtest.Up(t, lab.Config{Nodes: 1, NoDaemon: true})
	node := l.Status().Nodes[0]

	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	messages := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(messages)
				return
			}
			messages <- string(buf[:n])
		}
	}()

	apiSock := filepath.Join(dir, "api.sock")
	conf := filepath.Join(dir, "daemon.yaml")
	err = os.WriteFile(conf, []byte(strings.Join([]string{
		"node: " + node.Name,
		"underlay: " + node.Iface,
		"state-dir: " + filepath.Join(dir, "state"),
		"socket: " + apiSock,
		"etcd-socket: " + filepath.Join(dir, "etcd.sock"),
		"metrics-listen: 127.0.0.1:9092",
		"pod-mtu: 1400", // the command line says 1300, and wins
		"log-level: debug",
	}, "\n")+"\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// The machine's CLI configuration must not aim the daemon elsewhere.
	clientCfg := filepath.Join(dir, "podnet.cfg")
	if err := os.WriteFile(clientCfg, []byte("datastore: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+node.Netns, "--",
		bin, "daemon", "--config", conf, "--pod-mtu", "1300")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NOTIFY_SOCKET=" + notifyPath, "PODNET_CONFIG=" + clientCfg}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("daemon log:\n%s", b)
		}
	})

	select {
	case m := <-messages:
		if m != "READY=1" {
			t.Fatalf("first notification %q, want READY=1", m)
		}
	case err := <-exited:
		stopped = true
		t.Fatalf("daemon exited before READY=1: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("no READY=1 within 90s")
	}

	// Ready means the API answers now, without retries.
	st, err := nodeapi.NewClient(apiSock).Status()
	if err != nil {
		t.Fatalf("status right after READY=1: %v", err)
	}
	if st.Node != node.Name || st.PodMTU != 1300 {
		t.Errorf("status: node %q pod MTU %d, want %q and 1300 (the flag over the file's 1400)", st.Node, st.PodMTU, node.Name)
	}
	if st.Version != version || st.Commit != commit {
		t.Errorf("daemon reports version %q commit %q, want %q %q", st.Version, st.Commit, version, commit)
	}

	out, err := exec.Command(bin, "version", "-o", "json", "--socket", apiSock).Output()
	if err != nil {
		t.Fatalf("podnet version: %v\n%s", err, out)
	}
	var rep versionReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("podnet version -o json: %v\n%s", err, out)
	}
	if rep.Client.Version != version || rep.Client.Commit != commit || rep.Daemon == nil ||
		rep.Daemon.Version != version || rep.Daemon.Commit != commit {
		t.Errorf("podnet version -o json = %s", out)
	}
	if out, err := exec.Command(bin, "--version").Output(); err != nil || !strings.HasPrefix(string(out), "podnet "+version+" (commit "+commit) {
		t.Errorf("podnet --version = %q, %v", out, err)
	}
	out, err = exec.Command(bin, "version", "--socket", filepath.Join(dir, "nothing.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "client:  "+version) {
		t.Errorf("podnet version without a daemon: %v\n%s; want the client's line and a failure", err, out)
	}

	// A second daemon started by mistake on the same node must refuse to
	// start and leave the first alone: with the same state dir (another
	// API socket), and with its own state dir but the first one's
	// embedded etcd socket.
	for _, tt := range []struct {
		name, want string
		args       []string
	}{
		{"same state dir", "is in use by another podnet daemon (pid", []string{
			"--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "api2.sock"), "--etcd-socket", filepath.Join(dir, "etcd2.sock")}},
		{"same etcd socket", "is in use by a running etcd", []string{
			"--state-dir", filepath.Join(dir, "state3"), "--socket", filepath.Join(dir, "api3.sock"), "--etcd-socket", filepath.Join(dir, "etcd.sock")}},
	} {
		second := exec.Command("nsenter", append([]string{"--net=/run/netns/" + node.Netns, "--",
			bin, "daemon", "--node", node.Name, "--underlay", node.Iface}, tt.args...)...)
		second.Env = []string{"PATH=" + os.Getenv("PATH"), "PODNET_CONFIG=" + clientCfg}
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = second.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			second.Process.Kill()
			<-done
			t.Fatalf("%s: the second daemon did not exit within 30s", tt.name)
		}
		if err == nil || !strings.Contains(string(out), tt.want) {
			t.Errorf("%s: second daemon: %v\n%s\nwant a failure saying %q", tt.name, err, out, tt.want)
		}
		if _, err := nodeapi.NewClient(apiSock).Status(); err != nil {
			t.Errorf("%s: the first daemon stopped answering: %v", tt.name, err)
		}
		if out, err := exec.Command(bin, "get", "ippools", "--datastore", "unix://"+filepath.Join(dir, "etcd.sock")).CombinedOutput(); err != nil {
			t.Errorf("%s: the first daemon's etcd no longer answers: %v\n%s", tt.name, err, out)
		}
	}

	// metrics-listen came from the file.
	body := getInNetns(t, "/run/netns/"+node.Netns, "http://127.0.0.1:9092/metrics")
	want := `podnet_build_info{commit="` + commit + `",goversion="` + runtime.Version() + `",version="` + version + `"} 1`
	if !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}

	stopped = true
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-messages:
		if m != "STOPPING=1" {
			t.Errorf("notification after SIGTERM %q, want STOPPING=1", m)
		}
	case <-time.After(30 * time.Second):
		t.Error("no STOPPING=1 within 30s of SIGTERM")
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Error("daemon still running 30s after SIGTERM")
	}
}

// getInNetns GETs url from inside the namespace at nsPath.
func getInNetns(t *testing.T, nsPath, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = netnsutil.Do(nsPath, func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}
