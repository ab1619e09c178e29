package main

import (
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"podnet/nodeapi"
)

func TestParseConf(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantErr  string // "" = valid
		timeout  time.Duration
	}{
		{name: "minimal", in: `{"cniVersion":"1.0.0","name":"podnet","type":"podnet-cni"}`, timeout: defaultReadyTimeout},
		{name: "all fields", in: `{"cniVersion":"1.1.0","name":"podnet","type":"podnet-cni","socket":"/run/x.sock","readyTimeout":"30s","pool":"p1"}`, timeout: 30 * time.Second},
		{name: "not json", in: `{`, wantErr: "parse network configuration"},
		{name: "no name", in: `{"cniVersion":"1.0.0","type":"podnet-cni"}`, wantErr: `"name" is required`},
		{name: "bad timeout", in: `{"name":"n","readyTimeout":"soon"}`, wantErr: `"readyTimeout" "soon"`},
		{name: "zero timeout", in: `{"name":"n","readyTimeout":"0s"}`, wantErr: `"readyTimeout" "0s"`},
		{name: "relative socket", in: `{"name":"n","socket":"podnet.sock"}`, wantErr: `"socket" "podnet.sock" is not an absolute path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := parseConf([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseConf(%s) = %v, want an error containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConf(%s): %v", tc.in, err)
			}
			if conf.readyTimeout != tc.timeout {
				t.Errorf("readyTimeout = %v, want %v", conf.readyTimeout, tc.timeout)
			}
		})
	}
}

func TestSocket(t *testing.T) {
	for _, tc := range []struct {
		name, env, conf, want string
	}{
		{"env wins", "/env.sock", "/conf.sock", "/env.sock"},
		{"conflist", "", "/conf.sock", "/conf.sock"},
		{"default", "", "", nodeapi.DefaultSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == nodeapi.SocketEnv {
					return tc.env
				}
				return ""
			}
			if got := (&netConf{Socket: tc.conf}).socket(getenv); got != tc.want {
				t.Errorf("socket() = %q, want %q", got, tc.want)
			}
		})
	}
}

// dnsLabel is what the daemon accepts as a pod name.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func TestPodName(t *testing.T) {
	podmanID := "3f1c2a9be0d94c7f8a41b5e6d2c0f9a87b6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c"
	for _, tc := range []struct {
		network, id, ifName, want string
	}{
		// Fixed answers: a changed scheme would orphan the pods of
		// containers that run across an upgrade of the plugin.
		{"podnet", podmanID, "eth0", "cni-3aa062-3f1c2a9be0d9-085c4ad6"},
		{"podnet", "cnitool-0a1b2c3d4e5f60718293", "eth0", "cni-3aa062-cnitool0a1b2-"},
		{"podnet", "ABC_def.123", "eth0", "cni-3aa062-abcdef123-"},
		{"podnet", "___", "eth0", "cni-3aa062-"},
		{"other", podmanID, "eth0", "cni-"},
	} {
		got := podName(tc.network, tc.id, tc.ifName)
		if !strings.HasPrefix(got, tc.want) || !dnsLabel.MatchString(got) {
			t.Errorf("podName(%q, %q, %q) = %q, want a DNS label starting %q", tc.network, tc.id, tc.ifName, got, tc.want)
		}
		if again := podName(tc.network, tc.id, tc.ifName); again != got {
			t.Errorf("podName not deterministic: %q then %q", got, again)
		}
		if !strings.HasPrefix(got, networkPrefix(tc.network)) {
			t.Errorf("podName(%q, ...) = %q does not start with its network's prefix %q", tc.network, got, networkPrefix(tc.network))
		}
	}
	// Attachments that differ in any part get different pods.
	base := podName("podnet", podmanID, "eth0")
	for _, other := range []string{
		podName("podnet2", podmanID, "eth0"),
		podName("podnet", podmanID, "eth1"),
		podName("podnet", podmanID+"0", "eth0"),
	} {
		if other == base {
			t.Errorf("two attachments share the pod name %q", base)
		}
	}
	if networkPrefix("podnet") == networkPrefix("podnet2") {
		t.Errorf("networks podnet and podnet2 share the prefix %q", networkPrefix("podnet"))
	}
}

func TestResult(t *testing.T) {
	pod := nodeapi.PodInfo{Name: "cni-x", IP: "192.168.1.7", MAC: "02:00:00:00:00:07"}
	res, err := result("1.0.0", "/run/netns/c1", pod, 1480)
	if err != nil {
		t.Fatal(err)
	}
	for _, ver := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		r, err := res.GetAsVersion(ver)
		if err != nil {
			t.Fatalf("result as %s: %v", ver, err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got cniResult
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.CNIVersion != ver || len(got.IPs) != 1 || got.IPs[0].Address != "192.168.1.7/32" || got.IPs[0].Gateway != "169.254.1.1" ||
			got.IPs[0].Interface == nil || *got.IPs[0].Interface != 0 {
			t.Errorf("%s: ips %+v (version %s), want 192.168.1.7/32 via 169.254.1.1 on interface 0", ver, got.IPs, got.CNIVersion)
		}
		if len(got.Routes) != 1 || got.Routes[0].Dst != "0.0.0.0/0" || got.Routes[0].GW != "169.254.1.1" {
			t.Errorf("%s: routes %+v, want default via 169.254.1.1", ver, got.Routes)
		}
		if len(got.Interfaces) != 1 || got.Interfaces[0].Name != "eth0" || got.Interfaces[0].Mac != pod.MAC ||
			got.Interfaces[0].Sandbox != "/run/netns/c1" {
			t.Errorf("%s: interfaces %+v", ver, got.Interfaces)
		}
	}
	if _, err := result("1.0.0", "/n", nodeapi.PodInfo{IP: "fe80::1"}, 1500); err == nil {
		t.Error("result with an IPv6 address: no error")
	}
}

// A socket nobody listens on, and one that takes the request and never
// answers (a daemon starting, bound before it serves, or hung): connect
// gives up after the configured time with CNI's "try again later" and
// names the socket.
func TestConnectNotReady(t *testing.T) {
	for name, sock := range map[string]string{
		"nobody listens": filepath.Join(t.TempDir(), "none.sock"),
		"no answer":      hungDaemon(t),
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(nodeapi.SocketEnv, sock)
			conf := &netConf{readyTimeout: 500 * time.Millisecond}
			start := time.Now()
			_, _, err := connect(conf)
			var e *types.Error
			if !errors.As(err, &e) || e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, sock+" not ready after 500ms") {
				t.Fatalf("connect to %s = %v, want code %d naming the socket", sock, err, types.ErrTryAgainLater)
			}
			if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
				t.Errorf("connect gave up after %v, want about 500ms", d)
			}
		})
	}
}

// hungDaemon is a socket that takes connections and never answers, as a
// daemon's does while it starts (bound before it serves) or when it hangs.
func hungDaemon(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return sock
}

// STATUS against a daemon that does not answer fails within
// statusTimeout, not after readyTimeout (10s by default).
func TestStatusHungDaemon(t *testing.T) {
	sock := hungDaemon(t)
	t.Setenv(nodeapi.SocketEnv, sock)
	start := time.Now()
	err := cmdStatus(&skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet-cni"}`)})
	d := time.Since(start)
	var e *types.Error
	if !errors.As(err, &e) || e.Code != errPluginNotAvailable || !strings.Contains(e.Msg, sock+" is not available") {
		t.Fatalf("STATUS against %s = %v, want code %d naming the socket", sock, err, errPluginNotAvailable)
	}
	if d > statusTimeout+2*time.Second {
		t.Errorf("STATUS answered after %v, want within %v", d, statusTimeout)
	}
}
