package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"podnet/nodeapi"
)

// repoRoot is the module root, two levels above this package.
const repoRoot = "../.."

// The shipped conflist loads with the CNI library runtimes use, and its
// plugin entry is a valid podnet-cni configuration for the default daemon.
func TestShippedConflist(t *testing.T) {
	list, err := libcni.ConfListFromFile(filepath.Join(repoRoot, "deploy/cni/10-podnet.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "podnet" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "podnet-cni" {
		t.Fatalf("conflist: network %q with %d plugins, want podnet with one podnet-cni", list.Name, len(list.Plugins))
	}
	// The runtime adds the list's name and version to the entry it sends.
	plugin, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := parseConf(plugin.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if s := conf.socket(func(string) string { return "" }); s != nodeapi.DefaultSocket {
		t.Errorf("conflist socket %q, want the daemon's default %q", s, nodeapi.DefaultSocket)
	}
}

// make install-cni puts the plugin and the conflist where runtimes look,
// under DESTDIR; make uninstall-cni takes them away again.
func TestMakeInstallCNI(t *testing.T) {
	dest := t.TempDir()
	files := []string{"opt/cni/bin/podnet-cni", "etc/cni/net.d/10-podnet.conflist"}
	make := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "-s", target, "DESTDIR="+dest)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("install-cni")
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dest, f))
		if err != nil {
			t.Fatalf("after make install-cni: %v", err)
		}
		if f == files[0] && fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable: %v", f, fi.Mode())
		}
	}
	make("uninstall-cni")
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dest, f)); !os.IsNotExist(err) {
			t.Errorf("after make uninstall-cni: %s: %v, want it gone", f, err)
		}
	}
}
