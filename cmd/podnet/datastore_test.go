package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"podnet/datastore"
	"podnet/internal/nettest"
)

// mainEnv makes the test binary run podnet's main with the arguments
// after "--" instead of the tests: a real process to signal.
const mainEnv = "PODNET_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"podnet"}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDatastoreServeMember runs `podnet datastore serve` as README's
// cluster member does (name, https client and peer listeners, initial
// cluster, TLS files), here a cluster of one, reaches it over TLS with
// `datastore status`, and stops it with SIGTERM.
func TestDatastoreServeMember(t *testing.T) {
	pki := filepath.Join(t.TempDir(), "pki")
	if _, err := runPodnet(t, "datastore", "certs", "--out", pki, "--nodes", "m1=127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	client, peer := nettest.FreeLoopbackAddr(t), nettest.FreeLoopbackAddr(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "etcd.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "datastore", "serve", "--name", "m1",
		"--dir", filepath.Join(dir, "etcd"), "--socket", sock,
		"--listen-client", "https://"+client, "--listen-peer", "https://"+peer,
		"--initial-cluster", "m1=https://"+peer,
		"--ca-file", filepath.Join(pki, "ca.pem"), "--cert-file", filepath.Join(pki, "m1.pem"), "--key-file", filepath.Join(pki, "m1-key.pem"))
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	logFile := filepath.Join(dir, "serve.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	logs := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	writeConfig(t, fmt.Sprintf("datastore:\n  endpoints: [https://%s]\n  caFile: %s\n  certFile: %s\n  keyFile: %s\n",
		client, filepath.Join(pki, "ca.pem"), filepath.Join(pki, "client.pem"), filepath.Join(pki, "client-key.pem")))
	var out string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out, err = runPodnet(t, "datastore", "status"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("datastore status: %v\nserve's log:\n%s", err, logs())
		}
	}
	if !strings.Contains(out, "m1") || !strings.Contains(out, "https://"+client) || !strings.Contains(out, "true") {
		t.Errorf("status: want m1 leading at https://%s, got\n%s", client, out)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, mode %v, want 0600", sock, err, fi.Mode().Perm())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve still running 15s after SIGTERM")
	}
}

// runPodnet runs "podnet ARGS..." in-process and returns its stdout and
// the error main would print.
func runPodnet(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// writeConfig writes a client configuration file and points
// $PODNET_CONFIG at it, keeping the machine's own out.
func writeConfig(t *testing.T, text string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "podnet.cfg")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODNET_CONFIG", p)
	t.Setenv("PODNET_DATASTORE_ENDPOINTS", "")
}

// TestDatastoreCertsAndTLSClients: certificates from `podnet datastore
// certs` secure an etcd member, and the CLI and the daemon reach it
// with the TLS files of the configuration file (or the daemon's flags).
func TestDatastoreCertsAndTLSClients(t *testing.T) {
	pki := filepath.Join(t.TempDir(), "pki")
	out, err := runPodnet(t, "datastore", "certs", "--out", pki, "--nodes", "n1=127.0.0.1,n2=10.0.0.2,n2=fd00::2")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem", "client.pem", "client-key.pem"} {
		p := filepath.Join(pki, f)
		if !strings.Contains(out, p+"\n") {
			t.Errorf("certs output does not list %s:\n%s", p, out)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, "-key.pem") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if _, err := runPodnet(t, "datastore", "certs", "--out", pki, "--nodes", "n1=127.0.0.1"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("certs over existing files: got %v, want a refusal pointing to --force", err)
	}
	if _, err := runPodnet(t, "datastore", "certs", "--out", pki, "--nodes", "n3="); err == nil || !strings.Contains(err.Error(), `"n3="`) {
		t.Errorf("certs with an empty address: got %v, want an error naming it", err)
	}

	addr := nettest.FreeLoopbackAddr(t)
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{
		Dir: t.TempDir(), ListenClientURLs: []string{"https://" + addr}, UnsafeNoFsync: true,
		CAFile: filepath.Join(pki, "ca.pem"), CertFile: filepath.Join(pki, "n1.pem"), KeyFile: filepath.Join(pki, "n1-key.pem"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)

	config := func(cert string) string {
		s := fmt.Sprintf("datastore:\n  endpoints: [https://%s]\n  caFile: %s\n", addr, filepath.Join(pki, "ca.pem"))
		if cert != "" {
			s += fmt.Sprintf("  certFile: %s\n  keyFile: %s\n", filepath.Join(pki, cert+".pem"), filepath.Join(pki, cert+"-key.pem"))
		}
		return s
	}
	writeConfig(t, config("client"))
	out, err = runPodnet(t, "datastore", "status", "-o", "json")
	if err != nil {
		t.Fatalf("datastore status over TLS: %v", err)
	}
	var ms []datastore.MemberStatus
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("status JSON %q: %v", out, err)
	}
	if len(ms) != 1 || !ms[0].Leader || ms[0].Endpoint != "https://"+addr || ms[0].Error != "" {
		t.Fatalf("status: got %+v, want one leader answering at https://%s", ms, addr)
	}
	if _, err := runPodnet(t, "get", "ippools"); err != nil {
		t.Fatalf("get ippools with the config file's TLS files: %v", err)
	}

	// The config file without a client certificate: a clear refusal.
	writeConfig(t, config(""))
	if _, err := runPodnet(t, "get", "ippools"); err == nil || !strings.Contains(err.Error(), "certFile") {
		t.Errorf("get without a client certificate: got %v, want an error asking for certFile", err)
	}

	// The daemon takes the same file, and its flags override it.
	writeConfig(t, config("n2"))
	ds, err := daemonDatastore("", datastore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Endpoints[0] != "https://"+addr || ds.CertFile != filepath.Join(pki, "n2.pem") {
		t.Fatalf("daemon datastore from the file: %+v", ds)
	}
	ds, err = daemonDatastore("", datastore.Config{CertFile: filepath.Join(pki, "n1.pem"), KeyFile: filepath.Join(pki, "n1-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	if ds.CertFile != filepath.Join(pki, "n1.pem") || ds.CAFile != filepath.Join(pki, "ca.pem") {
		t.Fatalf("daemon datastore with flags: %+v", ds)
	}
	s, err := datastore.Open(context.Background(), ds)
	if err != nil {
		t.Fatalf("the daemon's datastore config does not connect: %v", err)
	}
	s.Close()
}

// TestDaemonRefusesPlainListener: the daemon refuses a plain-text etcd
// listener off loopback, and https without certificates, before it sets
// anything up.
func TestDaemonRefusesPlainListener(t *testing.T) {
	writeConfig(t, "datastore: {}\n")
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-listen", "http://192.0.2.1:2379"}, "refusing a plain-text listener"},
		{[]string{"--etcd-listen", "https://192.0.2.1:2379"}, "https needs a CA"},
		{[]string{"--etcd-listen", "https://192.0.2.1:2379", "--etcd-ca-file", "/nonexistent/ca.pem"}, "all of the CA file"},
	} {
		args := append([]string{"daemon", "--state-dir", dir, "--socket", filepath.Join(dir, "api.sock"), "--etcd-socket", filepath.Join(dir, "etcd.sock")}, tc.args...)
		_, err := runPodnet(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("podnet %s: got %v, want %q", strings.Join(args, " "), err, tc.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a refused daemon left %d files in its state dir", len(ents))
	}
}
