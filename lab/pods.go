package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"golang.org/x/sys/unix"
)

// DeploymentName is the deployment every lab pod belongs to: pods are
// named test-1..test-M.
const DeploymentName = "test"

// httpReadyTimeout bounds the wait for a pod's HTTP server to listen.
const httpReadyTimeout = 10 * time.Second

// placement says which node pod test-<Pod> goes to.
type placement struct {
	Pod, Node int
}

// placePods spreads pods test-1..test-pods round-robin over nodes
// worker1..worker<nodes>. Addresses are not the lab's business: each
// node's daemon takes them from IPAM.
func placePods(pods, nodes int) []placement {
	out := make([]placement, 0, pods)
	for j := 1; j <= pods; j++ {
		out = append(out, placement{Pod: j, Node: (j-1)%nodes + 1})
	}
	return out
}

// addPods creates the pods, attaches each to its node's daemon and starts
// its HTTP server.
func (l *Lab) addPods(ctx context.Context, pods int) error {
	l.mu.Lock()
	nodes := len(l.st.Nodes)
	l.mu.Unlock()
	for _, p := range placePods(pods, nodes) {
		if err := l.addPod(ctx, podName(p.Pod), nodeName(p.Node), ""); err != nil {
			return err
		}
	}
	return nil
}

// podAdded is the part of `podnet pod add -o json`'s answer the lab uses.
type podAdded struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
}

// addPod creates namespace NAME-pod, attaches it to node's daemon (with
// an address from pool, "" = the daemon's choice) and starts its HTTP
// server, recording each step in the state.
func (l *Lab) addPod(ctx context.Context, pod, node, pool string) error {
	ns := netnsOf(l.st.Name, pod)
	dir := filepath.Join(l.st.RunDir, "pods", pod)
	l.r.progressf("creating pod %s on %s (%s)", pod, node, ns)
	if err := l.addNetns(ctx, ns); err != nil {
		return err
	}
	err := l.update(func(st *state) {
		st.Pods = append(st.Pods, podState{Name: pod, Node: node, Netns: ns, Dir: dir})
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create pod %s: %w", pod, err)
	}
	l.mu.Lock()
	n := *l.st.node(node)
	bin := l.st.Binary
	l.mu.Unlock()
	args := []string{"ip", "netns", "exec", n.Netns, bin, "pod", "add", pod, "--netns", NetnsPath(ns), "-o", "json"}
	if pool != "" {
		args = append(args, "--pool", pool)
	}
	out, err := l.r.runEnv(ctx, []string{"PODNET_SOCKET=" + n.Socket}, args...)
	if err != nil {
		return fmt.Errorf("create pod %s: attach to %s: %w", pod, node, err)
	}
	ip, err := parsePodAdded(out, pod)
	if err != nil {
		return fmt.Errorf("create pod %s: attach to %s: %w", pod, node, err)
	}
	if err := l.update(func(st *state) { st.pod(pod).IP = ip }); err != nil {
		return err
	}
	l.r.progressf("creating pod %s ... attached to %s as %s", pod, node, ip)
	return l.startHTTP(ctx, pod)
}

// parsePodAdded takes the pod's address out of `podnet pod add -o json`.
func parsePodAdded(out []byte, pod string) (netip.Addr, error) {
	var info podAdded
	if err := json.Unmarshal(out, &info); err != nil {
		return netip.Addr{}, fmt.Errorf("decode pod add output %q: %w", oneLine(string(out)), err)
	}
	if info.Name != pod {
		return netip.Addr{}, fmt.Errorf("pod add answered for pod %q", info.Name)
	}
	ip, err := netip.ParseAddr(info.IP)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pod add gave no address: %w", err)
	}
	return ip, nil
}

// startHTTP starts the pod's HTTP server on port 80 (nginx or the built-in
// `podnet lab serve-http`) and waits until it listens.
func (l *Lab) startHTTP(ctx context.Context, pod string) error {
	l.mu.Lock()
	p := *l.st.pod(pod)
	bin, kind := l.st.Binary, l.st.HTTPServer
	l.mu.Unlock()
	logPath := filepath.Join(p.Dir, "http.log")
	var args []string
	switch kind {
	case HTTPNginx:
		conf, err := writeNginxConf(p)
		if err != nil {
			return fmt.Errorf("start http on %s: %w", pod, err)
		}
		args = []string{"ip", "netns", "exec", p.Netns, nginxPath(), "-p", p.Dir, "-e", filepath.Join(p.Dir, "error.log"), "-c", conf}
	default:
		args = []string{"ip", "netns", "exec", p.Netns, bin, "lab", "serve-http",
			"--pod", p.Name, "--node", p.Node, "--ip", p.IP.String(), "--addr", ":80"}
	}
	id, proc, err := l.spawn(ctx, args, logPath)
	if err != nil {
		return fmt.Errorf("start http on %s: %w", pod, err)
	}
	if err := l.update(func(st *state) {
		st.pod(pod).HTTP = id
		l.children[id.PID] = proc
	}); err != nil {
		return err
	}
	if err := waitListen(ctx, id, 80, httpReadyTimeout); err != nil {
		return fmt.Errorf("start http on %s: %w%s", pod, err, logTail(logPath))
	}
	l.r.progressf("creating pod %s ... serving http on %s:80 (pid %d)", pod, p.IP, id.PID)
	return nil
}

// WaitListen waits until process pid has a TCP socket listening on port
// (in the namespace pid lives in), and stops early if the process exits.
// It does not connect: a server such as `iperf3 -s -1` would take that
// connection for its one test.
func WaitListen(ctx context.Context, pid, port int, timeout time.Duration) error {
	id, err := identify(pid)
	if err != nil {
		return fmt.Errorf("server exited at once: %w", err)
	}
	return waitListen(ctx, id, port, timeout)
}

// waitListen waits until a TCP socket listens on port in the network
// namespace of process p. /proc/PID/net/tcp shows the sockets of the
// namespace p lives in, so no setns is needed. There is no event for
// "socket is listening", so this polls, and stops early if p exits.
func waitListen(ctx context.Context, p procID, port int, timeout time.Duration) error {
	fd, err := p.pidfd()
	if err != nil {
		return fmt.Errorf("server exited at once")
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		if ok, err := listening(p.PID, port); err == nil && ok {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on port %d after %v", port, timeout)
		}
		if waitFd(fd, p.PID, 20*time.Millisecond) == nil {
			return fmt.Errorf("server exited")
		}
	}
}

// listening reports whether /proc/PID/net/tcp{,6} has a LISTEN socket
// (state 0A) on port.
func listening(pid, port int) (bool, error) {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"tcp", "tcp6"} {
		file, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return false, err
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ...
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
				file.Close()
				return true, nil
			}
		}
		file.Close()
	}
	return false, nil
}

// nginxPath returns the path of nginx on PATH, or "".
func nginxPath() string {
	p, err := exec.LookPath("nginx")
	if err != nil {
		return ""
	}
	return p
}

var nginxConf = template.Must(template.New("nginx.conf").Parse(`# nginx for lab pod {{.Name}} on {{.Node}}, written by podnet lab.
daemon off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log;
events {
    worker_connections 256;
}
http {
    access_log {{.Dir}}/access.log;
    client_body_temp_path {{.Dir}}/tmp/body;
    proxy_temp_path {{.Dir}}/tmp/proxy;
    fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
    uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
    scgi_temp_path {{.Dir}}/tmp/scgi;
    default_type text/plain;
    server {
        listen 80;
        root {{.Dir}}/www;
        location = / {
            try_files /index.txt =404;
        }
    }
}
`))

// writeNginxConf writes the pod's nginx config, docroot and index page
// under its pod dir and returns the config path.
func writeNginxConf(p podState) (string, error) {
	for _, d := range []string{"www", "tmp"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, d), 0o755); err != nil {
			return "", fmt.Errorf("write nginx config: %w", err)
		}
	}
	index := filepath.Join(p.Dir, "www", "index.txt")
	if err := os.WriteFile(index, []byte(PageText(p.Name, p.Node, p.IP)), 0o644); err != nil {
		return "", fmt.Errorf("write nginx index: %w", err)
	}
	conf := filepath.Join(p.Dir, "nginx.conf")
	f, err := os.Create(conf)
	if err != nil {
		return "", fmt.Errorf("write nginx config: %w", err)
	}
	if err := nginxConf.Execute(f, p); err != nil {
		f.Close()
		return "", fmt.Errorf("write nginx config %s: %w", conf, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write nginx config %s: %w", conf, err)
	}
	return conf, nil
}
