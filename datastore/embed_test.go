package datastore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"podnet/datastore"
	"podnet/datastore/certs"
	"podnet/internal/nettest"
)

// makeCerts issues a CA, a certificate per node and a client one in a
// temporary directory.
func makeCerts(t *testing.T, nodes ...certs.Node) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := certs.Make(certs.Options{Dir: dir, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// syncBuffer is a log sink the etcd goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestListenURLsRefused(t *testing.T) {
	pki := makeCerts(t, certs.Node{Name: "n1"})
	tlsFiles := func(c *datastore.EmbedConfig) {
		c.CAFile, c.CertFile, c.KeyFile = filepath.Join(pki, certs.CAFile), filepath.Join(pki, "n1.pem"), filepath.Join(pki, "n1-key.pem")
	}
	for _, tc := range []struct {
		name, url string
		tls       bool
		insecure  bool
		want      string
	}{
		{"plain on an external address", "http://10.0.0.1:2379", false, false, "refusing a plain-text listener"},
		{"plain on every address", "http://0.0.0.0:2379", true, false, "refusing a plain-text listener"},
		{"https without certificates", "https://127.0.0.1:2379", false, false, "https needs a CA"},
		{"host name", "https://localhost:2379", true, false, "must be an IP address"},
		{"no port", "https://127.0.0.1", true, false, "want http(s)://IP:PORT"},
		{"unix here", "unix:///x.sock", true, true, "scheme must be http or https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := datastore.EmbedConfig{Dir: t.TempDir(), ListenClientURLs: []string{tc.url}, Insecure: tc.insecure}
			if tc.tls {
				tlsFiles(&cfg)
			}
			e, err := datastore.StartEmbedded(cfg)
			if err == nil {
				e.Close()
				t.Fatalf("StartEmbedded with %s succeeded", tc.url)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.url) {
				t.Fatalf("error %q: want it to name %s and say %q", err, tc.url, tc.want)
			}
		})
	}
	t.Run("half the TLS files", func(t *testing.T) {
		_, err := datastore.StartEmbedded(datastore.EmbedConfig{Dir: t.TempDir(), CAFile: filepath.Join(pki, certs.CAFile)})
		if err == nil || !strings.Contains(err.Error(), "or none") {
			t.Fatalf("got %v, want an error asking for all three files", err)
		}
	})
	t.Run("key of another certificate", func(t *testing.T) {
		cfg := datastore.EmbedConfig{Dir: t.TempDir()}
		tlsFiles(&cfg)
		cfg.KeyFile = filepath.Join(pki, certs.ClientKeyFile)
		_, err := datastore.StartEmbedded(cfg)
		if err == nil || !strings.Contains(err.Error(), cfg.KeyFile) {
			t.Fatalf("got %v, want an error naming %s", err, cfg.KeyFile)
		}
	})
}

// TestTLSClientCertificates: an https listener serves a client with a
// certificate from the CA, and turns away one without a certificate, one
// with a certificate from another CA, and plain text.
func TestTLSClientCertificates(t *testing.T) {
	pki := makeCerts(t, certs.Node{Name: "n1"})
	other := makeCerts(t, certs.Node{Name: "n1"})
	addr := nettest.FreeLoopbackAddr(t)
	logs := &syncBuffer{}
	// The directories above the socket are made before the umask goes:
	// under umask 0 they would be writable by everyone, and refused.
	dataDir, sockPath := t.TempDir(), filepath.Join(t.TempDir(), "run", "etcd.sock")
	old := syscall.Umask(0)
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Dir:    dataDir, Socket: sockPath,
		ListenClientURLs: []string{"https://" + addr},
		CAFile:           filepath.Join(pki, certs.CAFile),
		CertFile:         filepath.Join(pki, certs.NodeFile("n1")), KeyFile: filepath.Join(pki, certs.NodeKeyFile("n1")),
		UnsafeNoFsync: true,
	})
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)

	// Under umask 0 the socket and its directory are still private.
	sock := strings.TrimPrefix(e.SocketEndpoint(), "unix://")
	for p, want := range map[string]os.FileMode{sock: 0o600, filepath.Dir(sock): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}

	ctx := context.Background()
	client := func(dir string) datastore.Config {
		return datastore.Config{
			Endpoints: []string{"https://" + addr}, DialTimeout: time.Second,
			CAFile: filepath.Join(dir, certs.CAFile), CertFile: filepath.Join(dir, certs.ClientFile), KeyFile: filepath.Join(dir, certs.ClientKeyFile),
		}
	}
	// The good client gets time: a TLS handshake and etcd's first answer
	// can take seconds under the race detector on a busy machine. The
	// refused ones below keep a short budget (their refusal is proven by
	// etcd's log, not by timing).
	good := client(pki)
	good.DialTimeout = 20 * time.Second
	s, err := datastore.Open(ctx, good)
	if err != nil {
		t.Fatalf("client with the CA's certificate: %v", err)
	}
	if _, err := s.Resources("ippools").Create(ctx, "p1", []byte(`{}`)); err != nil {
		t.Fatalf("write over TLS: %v", err)
	}
	s.Close()

	// The unix socket next to it stays plain, and ignores TLS files.
	u, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{e.SocketEndpoint()}, CAFile: "/nonexistent"})
	if err != nil {
		t.Fatalf("unix socket with TLS files configured: %v", err)
	}
	if _, err := u.Resources("ippools").Get(ctx, "p1"); err != nil {
		t.Fatalf("read over the socket: %v", err)
	}
	u.Close()

	foreign := client(pki)
	foreign.CertFile, foreign.KeyFile = filepath.Join(other, certs.ClientFile), filepath.Join(other, certs.ClientKeyFile)
	for name, cfg := range map[string]datastore.Config{
		"certificate from another CA": foreign,
		"plain text":                  {Endpoints: []string{"http://" + addr}, DialTimeout: time.Second},
	} {
		if s, err := datastore.Open(ctx, cfg); err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
	// Refused by the TLS handshake, not by a timeout, and logged.
	for _, want := range []string{"certificate signed by unknown authority", "does not look like a TLS handshake"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("etcd's log lacks the rejection %q:\n%s", want, logs)
		}
	}
	// A client without a certificate is refused before it dials.
	noCert := client(pki)
	noCert.CertFile, noCert.KeyFile = "", ""
	if _, err := datastore.Open(ctx, noCert); err == nil || !strings.Contains(err.Error(), "certFile") {
		t.Errorf("client without a certificate: got %v, want an error asking for certFile", err)
	}
}

func TestClientConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  datastore.Config
		want string
	}{
		{"mixed schemes", datastore.Config{Endpoints: []string{"unix:///a.sock", "https://10.0.0.1:2379"}}, "mix unix:// and https://"},
		{"TLS files on http", datastore.Config{Endpoints: []string{"http://10.0.0.1:2379"}, CAFile: "/ca.pem"}, "plain http but TLS files"},
		{"unknown scheme", datastore.Config{Endpoints: []string{"10.0.0.1:2379"}}, "want https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := datastore.Open(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCompaction: with a short interval, old revisions are compacted
// away and the last retention revisions stay readable.
func TestCompaction(t *testing.T) {
	const retention = 20
	logs := &syncBuffer{}
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{
		Dir: t.TempDir(), UnsafeNoFsync: true,
		CompactionRetention: retention, CompactionInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := datastore.Open(context.Background(), datastore.Config{Endpoints: e.Endpoints()})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); e.Close() })
	// Generous: a loaded machine (the race detector, parallel packages)
	// can take seconds for a hundred fsync-free writes.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := s.Resources("ippools")
	first, err := c.Create(ctx, "p", []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	rev := first
	for i := range 3 * retention {
		if rev, err = c.Update(ctx, "p", []byte{byte(i)}, rev); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the first revision is gone; the recent ones must stay.
	for {
		_, err := s.GetAt(ctx, c, "p", first)
		if errors.Is(err, rpctypes.ErrCompacted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("revision %d still readable after 10s; log:\n%s", first, logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := s.GetAt(ctx, c, "p", rev-retention+1); err != nil {
		t.Fatalf("revision %d, within the retention, is gone: %v", rev-retention+1, err)
	}
	if !strings.Contains(logs.String(), "compacted") || !strings.Contains(logs.String(), "component=etcd") {
		t.Errorf("no compaction in etcd's log:\n%s", logs)
	}
}

// TestEtcdFatalLogged: a fatal etcd error ends the process (zap exits)
// but leaves its reason in podnet's log first. Run in a child process,
// since it exits.
func TestEtcdFatalLogged(t *testing.T) {
	if os.Getenv("PODNET_TEST_FATAL") == "1" {
		datastore.LogFatalForTest(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), "bad thing happened")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEtcdFatalLogged$")
	cmd.Env = append(os.Environ(), "PODNET_TEST_FATAL=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child: %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"level=ERROR", `msg="bad thing happened"`, "fatal=true", "component=etcd", "member=m1"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
}
