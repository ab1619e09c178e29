package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func load(t *testing.T, dir, cert, key string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, cert), filepath.Join(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c, pair
}

func TestMake(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	old := syscall.Umask(0)
	wrote, err := Make(Options{Dir: dir, Nodes: []Node{
		{Name: "worker1", Hosts: []string{"10.0.0.1", "w1.example.org"}},
		{Name: "worker2", Hosts: []string{"fd00::2"}},
	}, Hosts: []string{"10.0.0.100"}})
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{CAFile, CAKeyFile, "worker1.pem", "worker1-key.pem", "worker2.pem", "worker2-key.pem", ClientFile, ClientKeyFile}
	for _, f := range want {
		p := filepath.Join(dir, f)
		if !slices.Contains(wrote, p) {
			t.Errorf("Make did not report %s (got %v)", p, wrote)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(f, "-key.pem") {
			mode = 0o600
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v (umask 0)", f, fi.Mode().Perm(), mode)
		}
	}
	ca, _ := load(t, dir, CAFile, CAKeyFile)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	w1, pair := load(t, dir, "worker1.pem", "worker1-key.pem")
	if _, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("worker1 key is %T, want ECDSA", pair.PrivateKey)
	}
	for _, name := range []string{"worker1", "w1.example.org", "localhost", "10.0.0.1", "10.0.0.100", "127.0.0.1"} {
		if err := w1.VerifyHostname(name); err != nil {
			t.Errorf("worker1's certificate does not cover %s: %v", name, err)
		}
	}
	if err := w1.VerifyHostname("10.0.0.2"); err == nil {
		t.Error("worker1's certificate covers worker2's address")
	}
	w2, _ := load(t, dir, "worker2.pem", "worker2-key.pem")
	if !slices.ContainsFunc(w2.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("fd00::2")) }) {
		t.Errorf("worker2's addresses %v lack fd00::2", w2.IPAddresses)
	}
	client, _ := load(t, dir, ClientFile, ClientKeyFile)
	for _, tc := range []struct {
		c     *x509.Certificate
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{w1, x509.ExtKeyUsageServerAuth, true}, {w1, x509.ExtKeyUsageClientAuth, true},
		{client, x509.ExtKeyUsageClientAuth, true}, {client, x509.ExtKeyUsageServerAuth, false},
	} {
		_, err := tc.c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("%s for usage %v: verify %v, want ok=%v", tc.c.Subject.CommonName, tc.usage, err, tc.ok)
		}
	}

	// Again without --force: refused, nothing changed. With a new node:
	// signed by the same CA, which is kept.
	if _, err := Make(Options{Dir: dir, Nodes: []Node{{Name: "worker1"}}}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second Make without Force: got %v, want an error saying the file exists", err)
	}
	if _, err := Make(Options{Dir: dir, Nodes: []Node{{Name: "worker3"}}, Force: true}); err != nil {
		t.Fatal(err)
	}
	ca2, _ := load(t, dir, CAFile, CAKeyFile)
	if !ca2.Equal(ca) {
		t.Fatal("Make replaced the existing CA")
	}
	w3, _ := load(t, dir, "worker3.pem", "worker3-key.pem")
	if _, err := w3.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Fatalf("worker3 is not signed by the first CA: %v", err)
	}
}

func TestMakeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no dir", Options{Nodes: []Node{{Name: "a"}}}, "directory"},
		{"no nodes", Options{Dir: "x"}, "at least one node"},
		{"path in a name", Options{Dir: "x", Nodes: []Node{{Name: "../a"}}}, `node name "../a"`},
		{"reserved name", Options{Dir: "x", Nodes: []Node{{Name: "ca"}}}, `node name "ca"`},
		{"bad host", Options{Dir: "x", Nodes: []Node{{Name: "a", Hosts: []string{"a b"}}}}, `host "a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Dir = filepath.Join(t.TempDir(), tc.o.Dir)
			if tc.name == "no dir" {
				tc.o.Dir = ""
			}
			_, err := Make(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
