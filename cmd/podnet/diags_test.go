package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"podnet/lab"
	"podnet/lab/labtest"
	"podnet/nodeapi"
	"podnet/router"
)

// readBundle returns the members of a diags tar.gz by their path below
// the bundle's top directory, and that directory.
func readBundle(t *testing.T, data []byte) (map[string]string, string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("bundle: gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	top := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("bundle: tar: %v", err)
		}
		dir, rest, found := strings.Cut(h.Name, "/")
		if !found || (top != "" && dir != top) {
			t.Fatalf("bundle member %q is not under one top directory (%q)", h.Name, top)
		}
		top = dir
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[rest] = string(b)
	}
	return files, top
}

// TestDiagsLab runs `podnet node diags` on a lab node and opens the
// bundle: the daemon's state, the resources, the log (the daemon's
// stderr file), ip and sysctls, checksystem, each as the commands
// print it, and README.txt with no part failed.
func TestDiagsLab(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, Pods: 2})
	bin := labtest.Binary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "podnet.cfg")
	os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600)
	env := []string{"PODNET_CONFIG=" + cfg, "PODNET_LAB=" + l.Name()}
	file := filepath.Join(dir, "bundle.tar.gz")
	out, stderr, code := checkRun(t, env, bin, "lab", "exec", "worker1", "--", bin, "node", "diags", "-o", file)
	if code != 0 {
		t.Fatalf("diags: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(out, "wrote "+file+": ") || !strings.Contains(out, ", 0 could not be collected") {
		t.Errorf("diags said %q", out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	files, top := readBundle(t, data)
	if !strings.HasPrefix(top, "podnet-diags-worker1-") {
		t.Errorf("top directory %q, want podnet-diags-worker1-TIME", top)
	}
	readme := files["README.txt"]
	if strings.Contains(readme, "FAILED") || !strings.Contains(readme, "0 could not be collected") {
		t.Errorf("README.txt reports failures:\n%s", readme)
	}
	for _, name := range []string{
		"daemon/version.txt", "daemon/status.txt", "daemon/pod-list.txt", "daemon/route-list.txt", "daemon/port-stats.txt",
		"daemon/nat-list.txt", "daemon/nat-stats.json", "daemon/node-status.txt", "datastore/ippool.yaml",
		"datastore/ipamconfiguration.yaml", "datastore/bgpconfiguration.yaml", "datastore/bgppeer.yaml",
		"datastore/ipam-show.txt", "datastore/ipam-check.txt", "datastore/status.txt",
		"system/link.txt", "system/rule.txt", "system/neigh.txt",
	} {
		if _, found := files[name]; !found {
			t.Errorf("bundle has no %s", name)
		}
		if !strings.Contains(readme, name) {
			t.Errorf("README.txt does not list %s", name)
		}
	}
	ip1, ip2 := l.PodIP("test-1"), l.PodIP("test-2")
	var st nodeapi.Status
	if err := json.Unmarshal([]byte(files["daemon/status.json"]), &st); err != nil || st.Node != "worker1" {
		t.Errorf("status.json: %v %+v", err, st)
	}
	var pods []nodeapi.PodInfo
	if err := json.Unmarshal([]byte(files["daemon/pod-list.json"]), &pods); err != nil || len(pods) != 1 || pods[0].Name != "test-1" {
		t.Errorf("pod-list.json: %v %+v, want test-1 alone", err, pods)
	}
	var routes []router.Route
	json.Unmarshal([]byte(files["daemon/route-list.json"]), &routes)
	remote := false
	for _, r := range routes {
		remote = remote || r.Prefix.Contains(ip2) && r.Kind == router.KindRemote
	}
	if !remote {
		t.Errorf("route-list.json has no remote route to test-2's %v: %s", ip2, files["daemon/route-list.json"])
	}
	var peers []peerWithRoutes
	if err := json.Unmarshal([]byte(files["daemon/node-status.json"]), &peers); err != nil || len(peers) != 1 ||
		peers[0].State != "Established" || peers[0].Address != l.NodeAddr("worker2") || len(peers[0].Received) == 0 {
		t.Errorf("node-status.json: %v %+v, want worker2 established with its prefixes", err, peers)
	}
	var ver versionReport
	if err := json.Unmarshal([]byte(files["daemon/version.json"]), &ver); err != nil || ver.Daemon == nil {
		t.Errorf("version.json: %v %s", err, files["daemon/version.json"])
	}
	for name, wants := range map[string][]string{
		"datastore/workloadendpoint.yaml": {"kind: WorkloadEndpoint", "test-1", "test-2", ip1.String()},
		"datastore/node.yaml":             {"kind: Node", "name: worker1", "name: worker2"},
		"datastore/ipam-check.txt":        {"Check complete; found 0 problems."},
		"checksystem.txt":                 {"ok       bgp-port", "held by the podnet daemon"},
		"system/addr.txt":                 {"podnet0", l.NodeAddr("worker1").String()},
		"system/route-show-table-all.txt": {ip1.String() + " dev podnet0"},
		"system/sysctls.txt":              {"net.ipv4.ip_forward = 1", "net.ipv6.conf.podnet0.disable_ipv6 = 1"},
		"daemon.log":                      {"pod added", "test-1"},
		"daemon/pod-list.txt":             {"test-1", ip1.String()},
	} {
		for _, w := range wants {
			if !strings.Contains(files[name], w) {
				t.Errorf("%s has no %q:\n%s", name, w, files[name])
			}
		}
	}
	if !strings.Contains(readme, "the daemon's standard error, "+l.Status().Nodes[0].Log) {
		t.Errorf("README.txt does not name the log file %s:\n%s", l.Status().Nodes[0].Log, readme)
	}
}

// TestDiagsNothingAnswers: with no daemon and no datastore the bundle is
// still written (here to stdout), with the machine's parts, and
// README.txt names each part that failed and why, the log included.
func TestDiagsNothingAnswers(t *testing.T) {
	bin := labtest.Binary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "podnet.cfg")
	os.WriteFile(cfg, []byte("datastore: {}\n"), 0o600)
	sock := filepath.Join(dir, "none.sock")
	env := []string{"PODNET_CONFIG=" + cfg, "PODNET_SOCKET=" + sock, "PODNET_DATASTORE_ENDPOINTS=unix://" + filepath.Join(dir, "etcd.sock")}
	out, stderr, code := checkRun(t, env, bin, "node", "diags", "-o", "-")
	if code != 0 {
		t.Fatalf("diags: exit %d\n%s", code, stderr)
	}
	files, _ := readBundle(t, []byte(out))
	readme := files["README.txt"]
	for _, w := range []string{
		"daemon/status.json                 FAILED (no file)",
		"podnet daemon is not running (no answer on " + sock + ")",
		"datastore/ippool.yaml              FAILED (no file)",
		"etcd at unix://" + filepath.Join(dir, "etcd.sock") + " is unreachable",
		"daemon.log                         FAILED (no file)",
		"no log found: no daemon answers on " + sock,
		"system/addr.txt                    ok",
	} {
		if !strings.Contains(readme, w) {
			t.Errorf("README.txt has no %q:\n%s", w, readme)
		}
	}
	for _, name := range []string{"system/addr.txt", "system/link.txt", "system/sysctls.txt", "checksystem.txt"} {
		if files[name] == "" {
			t.Errorf("bundle has no %s", name)
		}
	}
	if _, found := files["daemon/status.json"]; found {
		t.Error("bundle has a status.json though the daemon did not answer")
	}
}

func TestTailFile(t *testing.T) {
	for _, tc := range []struct {
		text string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 10, "a\nb\nc\n"},
		{"", 5, ""},
		{"one\n", 1, "one\n"},
	} {
		p := filepath.Join(t.TempDir(), "log")
		os.WriteFile(p, []byte(tc.text), 0o600)
		got, err := tailFile(p, tc.n)
		if err != nil || string(got) != tc.want {
			t.Errorf("tailFile(%q, %d) = %q, %v; want %q", tc.text, tc.n, got, err, tc.want)
		}
	}
	if _, err := tailFile(filepath.Join(t.TempDir(), "none"), 1); err == nil {
		t.Error("tailFile of a missing file: no error")
	}
}
