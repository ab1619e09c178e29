package main

// podman with its CNI network backend, on two lab nodes:
//
//	container a (busybox httpd)        container b (busybox httpd)
//	      eth0 (TAP)                         eth0 (TAP)
//	podman + podnet-cni in <lab>-worker1    podman + podnet-cni in <lab>-worker2
//	          ╲                                 ╱
//	           <lab>-fabric ── <lab>-external 10.77.0.100 (NAT outgoing)
//
// podman runs with only its network namespace entered (nsenter --net),
// not under ip netns exec: ip netns exec gives the command a mount
// namespace of its own, so the /run/netns/cni-… mount podman makes for
// the container would be invisible to the daemon, which opens that path.

import (
	"debug/elf"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
)

// busybox is the statically linked busybox (Debian's busybox-static) the
// containers run from a local root file system: no image registry.
const busybox = "/bin/busybox"

// podman is one podman instance with its own storage and configuration,
// run in a lab node's network namespace.
type podman struct {
	dir   string
	netns string // /run/netns/<lab>-workerK
}

func newPodman(t *testing.T, l *lab.Lab, node, pluginDir string) *podman {
	t.Helper()
	dir, err := os.MkdirTemp("", "podnet-podman-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{dir: dir, netns: filepath.Join(lab.NetnsDir, nodeNetns(t, l, node))}
	netDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// podman 4.3 speaks CNI up to 1.0.0; the socket comes from the
	// conflist (PODNET_SOCKET is not set for podman).
	writeConflist(t, netDir, "1.0.0", map[string]any{"socket": nodeSocket(t, l, node)})
	// cgroupfs and file events: no systemd here. The ulimits: podman's
	// defaults (nofile 1048576) exceed this machine's hard limits.
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "cni"
network_config_dir = %q
cni_plugin_dirs = [%q]
`, netDir, pluginDir)
	if err := os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.run("rm", "-f", "-a", "-t", "0")
		os.RemoveAll(dir)
	})
	return p
}

func (p *podman) run(args ...string) (string, error) {
	base := []string{"--net=" + p.netns, "--", "podman",
		"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "runroot"),
		"--tmpdir", filepath.Join(p.dir, "tmp"), "--storage-driver", "vfs", "--runtime", "runc"}
	cmd := exec.Command("nsenter", append(base, args...)...)
	env := []string{"CONTAINERS_CONF=" + filepath.Join(p.dir, "containers.conf")}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PODNET_SOCKET=") && !strings.HasPrefix(e, "CONTAINERS_") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (p *podman) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rootfs makes a root file system of static busybox serving page at /,
// in dir (the podman's: removed after its containers).
// The tests bound wget with busybox timeout: Debian's static busybox
// 1.35 wget crashes on its own -T.
func rootfs(t *testing.T, dir, page string) string {
	t.Helper()
	f, err := elf.Open(busybox)
	if err != nil {
		t.Fatalf("%s: %v (install busybox-static: scripts/deps.sh)", busybox, err)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			f.Close()
			t.Fatalf("%s is dynamically linked; the containers need busybox-static (scripts/deps.sh)", busybox)
		}
	}
	f.Close()
	for _, d := range []string{"bin", "www", "proc", "sys", "dev", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"sh", "ping", "wget", "httpd", "ip", "timeout"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", tool)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPodmanLab(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman not found: install it with scripts/deps.sh (%v)", err)
	}
	pluginDir, _ := cniBinaries(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: lab.NoPods})

	type container struct {
		name, node, page string
		pm               *podman
		ip               netip.Addr
	}
	cs := []*container{
		{name: l.Name() + "-a", node: "worker1"},
		{name: l.Name() + "-b", node: "worker2"},
	}
	for _, c := range cs {
		c.page = "container " + c.name + "\n"
		c.pm = newPodman(t, l, c.node, pluginDir)
		c.pm.must(t, "run", "-d", "--name", c.name, "--network", "podnet", "--cap-add", "NET_RAW",
			"--rootfs", rootfs(t, filepath.Join(c.pm.dir, "rootfs"), c.page), "/bin/httpd", "-f", "-p", "80", "-h", "/www")
		out := strings.TrimSpace(c.pm.must(t, "inspect", "--format", `{{(index .NetworkSettings.Networks "podnet").IPAddress}}`, c.name))
		ip, err := netip.ParseAddr(out)
		if err != nil {
			t.Fatalf("%s: podman inspect address %q: %v", c.name, out, err)
		}
		c.ip = ip
		// The daemon has the container as a pod with that address.
		found := false
		for name, p := range podsOf(t, l, c.node) {
			found = found || strings.HasPrefix(name, podPrefix) && p.IP == ip.String() && p.Attached
		}
		if !found {
			t.Fatalf("%s: no attached pod with %s on %s: %v", c.name, ip, c.node, podsOf(t, l, c.node))
		}
		// Inside: eth0 with the address and MTU the plugin reported.
		addr := c.pm.must(t, "exec", c.name, "ip", "-4", "addr", "show", "dev", "eth0")
		if !strings.Contains(addr, ip.String()+"/32") {
			t.Fatalf("%s: eth0: %s, want %s/32", c.name, addr, ip)
		}
	}

	a, b := cs[0], cs[1]
	waitRoute(t, l, a.node, b.ip)
	waitRoute(t, l, b.node, a.ip)
	for _, pair := range [][2]*container{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		t.Run(fmt.Sprintf("%s to %s", from.node, to.node), func(t *testing.T) {
			from.pm.must(t, "exec", from.name, "ping", "-c", "2", "-W", "2", to.ip.String())
			body := from.pm.must(t, "exec", from.name, "timeout", "10", "wget", "-q", "-O", "-", "http://"+to.ip.String()+":80/")
			if body != to.page {
				t.Errorf("GET http://%s/ from %s: %q, want %q", to.ip, from.name, body, to.page)
			}
		})
	}
	t.Run("external host through NAT", func(t *testing.T) {
		for _, c := range cs {
			who := strings.TrimSpace(c.pm.must(t, "exec", c.name, "timeout", "10", "wget", "-q", "-O", "-",
				fmt.Sprintf("http://%s:%d/whoami", lab.ExternalAddress.Addr(), lab.ExternalHTTPPort)))
			client, err := netip.ParseAddrPort(who)
			if err != nil || client.Addr() != l.NodeAddr(c.node) {
				t.Errorf("%s: external saw client %q, want %s (its node)", c.name, who, l.NodeAddr(c.node))
			}
		}
	})
	t.Run("rm releases the pods", func(t *testing.T) {
		for _, c := range cs {
			c.pm.must(t, "rm", "-f", "-t", "0", c.name)
			for name := range podsOf(t, l, c.node) {
				if strings.HasPrefix(name, podPrefix) {
					t.Errorf("%s: pod %s still on %s after podman rm", c.name, name, c.node)
				}
			}
			out, err := l.Output(t.Context(), c.node, "podnet", "ipam", "show", "--ip", c.ip.String())
			if err != nil || !strings.Contains(string(out), "is not assigned") {
				t.Errorf("%s: podnet ipam show --ip %s after rm: %v\n%s", c.name, c.ip, err, out)
			}
		}
	})
}
