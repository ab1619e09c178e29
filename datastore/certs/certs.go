// Package certs makes a small certificate authority and the certificates
// a podnet datastore needs across machines: one per node (its etcd
// member serves and dials peers with it, its daemon is a client with
// it) and one for administrators' CLIs. It is meant for tests and small
// clusters; a site with its own PKI issues the same kinds of
// certificates from it.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// File names in the output directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ClientFile    = "client.pem"
	ClientKeyFile = "client-key.pem"
)

// NodeFile and NodeKeyFile name a node's certificate and key.
func NodeFile(node string) string    { return node + ".pem" }
func NodeKeyFile(node string) string { return node + "-key.pem" }

// Validity of what Make issues.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 2 * 365 * 24 * time.Hour
	// clockSkew backdates certificates so that a machine whose clock is
	// a little behind accepts them at once.
	clockSkew = time.Hour
)

// Node is one machine of the datastore cluster.
type Node struct {
	// Name is the node's name: the certificate's common name, a DNS
	// name in it, and the file names.
	Name string
	// Hosts are the node's addresses and DNS names, put in its
	// certificate so clients and peers can check they reached it.
	Hosts []string
}

// Options say what Make issues.
type Options struct {
	// Dir receives the files; it is created 0700 if missing.
	Dir   string
	Nodes []Node
	// Hosts are more addresses or names put in every node certificate
	// (a load balancer's, say). localhost, 127.0.0.1 and ::1 always are.
	Hosts []string
	// Force replaces node and client files that exist. The CA is never
	// replaced: an existing one signs the new certificates, so nodes
	// can be added later.
	Force bool
}

var nodeName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// Make writes the CA (unless Dir has one), a certificate for each node
// and a client certificate, and returns the paths it wrote. Keys are
// ECDSA P-256 in PKCS #8, mode 0600.
func Make(o Options) ([]string, error) {
	if o.Dir == "" {
		return nil, errors.New("certs: an output directory is required")
	}
	if len(o.Nodes) == 0 {
		return nil, errors.New("certs: at least one node is required")
	}
	for _, n := range o.Nodes {
		if !nodeName.MatchString(n.Name) || n.Name == "ca" || n.Name == "client" {
			return nil, fmt.Errorf("certs: node name %q: want lower-case letters, digits, '.' and '-' (not ca or client)", n.Name)
		}
	}
	type leaf struct {
		cert, key string
		tmpl      *x509.Certificate
	}
	var leaves []leaf
	for _, n := range o.Nodes {
		t, err := nodeTemplate(n, o.Hosts)
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, leaf{NodeFile(n.Name), NodeKeyFile(n.Name), t})
	}
	leaves = append(leaves, leaf{ClientFile, ClientKeyFile, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "podnet-client", Organization: []string{"podnet"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}})
	if !o.Force {
		for _, l := range leaves {
			for _, f := range []string{l.cert, l.key} {
				if _, err := os.Stat(filepath.Join(o.Dir, f)); err == nil {
					return nil, fmt.Errorf("certs: %s exists (--force replaces it)", filepath.Join(o.Dir, f))
				}
			}
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var wrote []string
	ca, caKey, created, err := loadOrMakeCA(o.Dir)
	if err != nil {
		return nil, err
	}
	if created {
		wrote = append(wrote, filepath.Join(o.Dir, CAFile), filepath.Join(o.Dir, CAKeyFile))
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return wrote, fmt.Errorf("certs: key for %s: %w", l.cert, err)
		}
		if err := fillLeaf(l.tmpl); err != nil {
			return wrote, err
		}
		der, err := x509.CreateCertificate(rand.Reader, l.tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return wrote, fmt.Errorf("certs: sign %s: %w", l.cert, err)
		}
		if err := writePair(o.Dir, l.cert, l.key, der, key); err != nil {
			return wrote, err
		}
		wrote = append(wrote, filepath.Join(o.Dir, l.cert), filepath.Join(o.Dir, l.key))
	}
	return wrote, nil
}

// nodeTemplate is a node's certificate: for serving (clients and peers
// check its names) and for dialing (peers and the datastore check it as a
// client).
func nodeTemplate(n Node, extra []string) (*x509.Certificate, error) {
	t := &x509.Certificate{
		Subject:     pkix.Name{CommonName: n.Name, Organization: []string{"podnet"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{n.Name, "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(n.Name); ip != nil {
		t.DNSNames, t.IPAddresses = t.DNSNames[1:], append(t.IPAddresses, ip)
	}
	for _, h := range append(append([]string(nil), n.Hosts...), extra...) {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			t.IPAddresses = append(t.IPAddresses, ip)
		case nodeName.MatchString(h):
			t.DNSNames = append(t.DNSNames, h)
		default:
			return nil, fmt.Errorf("certs: host %q of node %s: not an IP address or a DNS name", h, n.Name)
		}
	}
	return t, nil
}

func serial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	return s, nil
}

func fillLeaf(t *x509.Certificate) error {
	s, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	t.SerialNumber, t.NotBefore, t.NotAfter = s, now.Add(-clockSkew), now.Add(leafValidity)
	t.KeyUsage = x509.KeyUsageDigitalSignature
	return nil
}

// loadOrMakeCA loads Dir's CA or makes one; created says which.
func loadOrMakeCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, bool, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	_, errCert := os.Stat(certPath)
	_, errKey := os.Stat(keyPath)
	switch {
	case errCert == nil && errKey == nil:
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, nil, false, fmt.Errorf("certs: existing CA: %w", err)
		}
		ca, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, nil, false, fmt.Errorf("certs: existing CA %s: %w", certPath, err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok || !ca.IsCA {
			return nil, nil, false, fmt.Errorf("certs: existing %s is not an ECDSA CA", certPath)
		}
		return ca, key, false, nil
	case !errors.Is(errCert, fs.ErrNotExist) || !errors.Is(errKey, fs.ErrNotExist):
		return nil, nil, false, fmt.Errorf("certs: %s and %s must both exist or neither", certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, false, fmt.Errorf("certs: CA key: %w", err)
	}
	s, err := serial()
	if err != nil {
		return nil, nil, false, err
	}
	now := time.Now()
	t := &x509.Certificate{
		SerialNumber:          s,
		Subject:               pkix.Name{CommonName: "podnet datastore CA", Organization: []string{"podnet"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, t, t, &key.PublicKey, key)
	if err != nil {
		return nil, nil, false, fmt.Errorf("certs: sign CA: %w", err)
	}
	if err := writePair(dir, CAFile, CAKeyFile, der, key); err != nil {
		return nil, nil, false, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, false, fmt.Errorf("certs: CA: %w", err)
	}
	return ca, key, true, nil
}

// writePair writes a certificate (0644: it is public) and its key (0600,
// whatever the umask).
func writePair(dir, certName, keyName string, der []byte, key *ecdsa.PrivateKey) error {
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: encode key %s: %w", keyName, err)
	}
	files := []struct {
		name string
		mode os.FileMode
		data []byte
	}{
		{keyName, 0o600, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})},
		{certName, 0o644, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		// Remove first: WriteFile keeps the mode of a file that exists.
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("certs: %w", err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	return nil
}
