package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"podnet/internal/netnsutil"
	"podnet/lab"
	"podnet/nodeapi"
	"podnet/router"
)

// The lab tests run real CNI clients against the plugin: cnitool (built
// from the CNI module podnet already requires, since Debian does not
// package it) and podman.

var bins struct {
	once sync.Once
	dir  string
	err  error
}

// cniBinaries builds podnet-cni and cnitool once per test process into a
// directory that is CNI_PATH for the tests.
func cniBinaries(t *testing.T) (pluginDir, cnitool string) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "podnet-cni-test-")
		if bins.err != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{
			{"podnet-cni", "podnet/cmd/podnet-cni"},
			{"cnitool", "github.com/containernetworking/cni/cnitool"},
		} {
			cmd := exec.Command(goBinary(), "build", "-o", filepath.Join(bins.dir, b.out), b.pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.dir, filepath.Join(bins.dir, "cnitool")
}

// TestMain removes the binaries built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// writeConflist writes NAME.conflist for network "podnet" into dir with
// the plugin's extra fields.
func writeConflist(t *testing.T, dir, cniVersion string, plugin map[string]any) {
	t.Helper()
	p := map[string]any{"type": "podnet-cni"}
	for k, v := range plugin {
		p[k] = v
	}
	b, err := json.MarshalIndent(map[string]any{
		"cniVersion": cniVersion, "name": "podnet", "plugins": []any{p},
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-podnet.conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// addNetns makes a fresh named namespace, deleted when the test ends.
func addNetns(t *testing.T, name string) string {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return filepath.Join(lab.NetnsDir, name)
}

// inNetns runs args in the named namespace and fails the test on error.
func inNetns(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func nodeSocket(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	for _, n := range l.Status().Nodes {
		if n.Name == node {
			return n.Socket
		}
	}
	t.Fatalf("no node %s in lab %s", node, l.Name())
	return ""
}

func nodeNetns(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	ns, err := l.Netns(node)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// podsOf lists the pods of node's daemon by name.
func podsOf(t *testing.T, l *lab.Lab, node string) map[string]nodeapi.PodInfo {
	t.Helper()
	pods, err := nodeapi.NewClient(nodeSocket(t, l, node)).Pods()
	if err != nil {
		t.Fatalf("pods of %s: %v", node, err)
	}
	m := map[string]nodeapi.PodInfo{}
	for _, p := range pods {
		m[p.Name] = p
	}
	return m
}

// waitRoute waits until node routes ip (another node's pod) through BGP:
// a lab made without pods has no blocks to announce until the first
// container's, and its sessions may come up after the containers.
func waitRoute(t *testing.T, l *lab.Lab, node string, ip netip.Addr) {
	t.Helper()
	c := nodeapi.NewClient(nodeSocket(t, l, node))
	deadline := time.Now().Add(30 * time.Second)
	for {
		routes, err := c.Routes()
		if err == nil {
			for _, r := range routes {
				if r.Kind == router.KindRemote && r.Prefix.Contains(ip) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no route to %s after 30s (%v): %v", node, ip, err, routes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpGet does GET path on addr from inside the namespace at nsPath and
// returns the body.
func httpGet(nsPath string, addr netip.AddrPort, path string) (string, error) {
	var c net.Conn
	err := netnsutil.Do(nsPath, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), 10*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr.Addr())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// cniResult is the part of a CNI result the tests check.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		Mac     string `json:"mac"`
		Mtu     int    `json:"mtu"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Interface *int   `json:"interface"`
		Address   string `json:"address"`
		Gateway   string `json:"gateway"`
	} `json:"ips"`
	Routes []struct {
		Dst string `json:"dst"`
		GW  string `json:"gw"`
	} `json:"routes"`
}

// cniError is a plugin's error answer.
type cniError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

func decodeError(out []byte) (cniError, bool) {
	var e cniError
	i := bytes.IndexByte(out, '{')
	if i < 0 || json.Unmarshal(out[i:], &e) != nil || e.Code == 0 {
		return e, false
	}
	return e, true
}
