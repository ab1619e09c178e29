package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/mvcc"

	"podnet/internal/privsock"
)

// Defaults of the embedded etcd's housekeeping.
const (
	// DefaultCompactionRetention is how many revisions compaction keeps:
	// a watcher that was away for fewer writes than this resumes where it
	// stopped instead of listing everything again. podnet writes a few
	// revisions per pod add or delete, so this is hours of history.
	DefaultCompactionRetention = 10000
	// DefaultCompactionInterval is how often compaction runs (etcd's own
	// revision compactor runs every 5 minutes too).
	DefaultCompactionInterval = 5 * time.Minute
	// DefaultQuotaBytes caps the database file. podnet's data is small
	// (kilobytes per pod and block); the cap turns a runaway writer into
	// a NOSPACE alarm instead of a full disk.
	DefaultQuotaBytes = 1 << 30
)

// EmbedConfig configures an embedded etcd: one member alone (the default:
// a unix socket only) or one member of a cluster (ListenPeerURLs and
// InitialCluster).
type EmbedConfig struct {
	// Dir holds etcd's data (and, by default, its sockets). Required.
	Dir string
	// Socket is the client unix socket; "" means <Dir>/etcd.sock. It is
	// always served, without TLS, mode 0600.
	Socket string
	// Name is this member's name in the cluster; "" means "podnet".
	Name string
	// ListenClientURLs are extra client URLs, e.g. https://10.0.0.1:2379
	// so that other machines can use this etcd. nil: the socket only.
	// They are advertised as given, so they name a real address.
	ListenClientURLs []string
	// ListenPeerURLs are the URLs other members reach this one at, e.g.
	// https://10.0.0.1:2380. nil: a unix socket in Dir (one member).
	ListenPeerURLs []string
	// InitialCluster names every member at first start,
	// "n1=https://10.0.0.1:2380,n2=...". "": this member alone. Ignored
	// once Dir holds data.
	InitialCluster string
	// JoinExisting joins a cluster that already runs (the member was
	// added with etcd's member add) instead of forming a new one.
	JoinExisting bool
	// CAFile, CertFile and KeyFile are this member's TLS identity. They
	// are required by https:// listeners, which then accept only clients
	// (and peers) with a certificate signed by CAFile. The certificate
	// must allow server and client use: members dial each other with it.
	CAFile, CertFile, KeyFile string
	// Insecure allows plain http:// listeners on addresses other than
	// loopback. Anyone who reaches such a listener can rewrite pools,
	// nodes and BGP peers, so it must be asked for.
	Insecure bool
	// Logger receives etcd's log; nil means slog.Default().
	Logger *slog.Logger
	// CompactionRetention is how many revisions to keep; 0 means
	// DefaultCompactionRetention.
	CompactionRetention int64
	// CompactionInterval is how often to compact; 0 means
	// DefaultCompactionInterval.
	CompactionInterval time.Duration
	// QuotaBytes caps the database; 0 means DefaultQuotaBytes.
	QuotaBytes int64
	// ReadyTimeout bounds start-up; 0 means 30s. A member of a new
	// cluster is ready only once a majority of members has started.
	ReadyTimeout time.Duration
	// UnsafeNoFsync skips fsync: for tests only.
	UnsafeNoFsync bool
}

// Embedded is a running embedded etcd.
type Embedded struct {
	e         *embed.Etcd
	log       *slog.Logger
	endpoints []string
	stop      context.CancelFunc
	closing   *atomic.Bool
	done      sync.WaitGroup
	closeOnce sync.Once
}

// parseListenURLs checks listener URLs: http or https with an IP address
// and a port (etcd binds exactly that address); https only with the TLS
// files; http only on loopback unless insecure.
func parseListenURLs(what string, urls []string, hasTLS, insecure bool) ([]url.URL, error) {
	var out []url.URL
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s URL %q: %w", what, s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("%s URL %q: scheme must be http or https (the unix socket is configured apart)", what, s)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || port == "" || u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("%s URL %q: want http(s)://IP:PORT", what, s)
		}
		ip := net.ParseIP(host)
		if ip == nil {
			return nil, fmt.Errorf("%s URL %q: the host must be an IP address", what, s)
		}
		switch u.Scheme {
		case "https":
			if !hasTLS {
				return nil, fmt.Errorf("%s URL %q: https needs a CA, a certificate and a key (make test ones with `podnet datastore certs`)", what, s)
			}
		default:
			if !ip.IsLoopback() && !insecure {
				return nil, fmt.Errorf("%s URL %q: refusing a plain-text listener on a non-loopback address: "+
					"anyone who reaches it can rewrite pools, nodes and BGP peers; use https:// with certificates "+
					"(`podnet datastore certs`), or ask for it with the insecure flag", what, s)
			}
		}
		out = append(out, *u)
	}
	return out, nil
}

// checkTLSFiles loads the TLS files once so that a wrong path or a key
// that does not match its certificate is reported naming the file, not
// as a handshake failure on the first connection.
func (cfg EmbedConfig) checkTLSFiles() (bool, error) {
	n := 0
	for _, f := range []string{cfg.CAFile, cfg.CertFile, cfg.KeyFile} {
		if f != "" {
			n++
		}
	}
	switch n {
	case 0:
		return false, nil
	case 3:
	default:
		return false, errors.New("embedded etcd TLS: give all of the CA file, certificate file and key file, or none")
	}
	if _, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile); err != nil {
		return false, fmt.Errorf("embedded etcd TLS: certificate %s / key %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return false, fmt.Errorf("embedded etcd TLS: CA: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return false, fmt.Errorf("embedded etcd TLS: CA file %s holds no PEM certificate", cfg.CAFile)
	}
	return true, nil
}

// Check reports what StartEmbedded would refuse in cfg's listeners, TLS
// files and limits, so that a daemon can refuse them before it sets
// anything up.
func (cfg EmbedConfig) Check() error {
	_, _, _, err := cfg.check()
	return err
}

func (cfg EmbedConfig) check() (hasTLS bool, client, peer []url.URL, err error) {
	if cfg.CompactionRetention < 0 || cfg.CompactionInterval < 0 || cfg.QuotaBytes < 0 {
		return false, nil, nil, errors.New("embedded etcd: compaction retention, interval and quota must not be negative")
	}
	if hasTLS, err = cfg.checkTLSFiles(); err != nil {
		return false, nil, nil, err
	}
	if client, err = parseListenURLs("embedded etcd client", cfg.ListenClientURLs, hasTLS, cfg.Insecure); err != nil {
		return false, nil, nil, err
	}
	if peer, err = parseListenURLs("embedded etcd peer", cfg.ListenPeerURLs, hasTLS, cfg.Insecure); err != nil {
		return false, nil, nil, err
	}
	if len(peer) == 0 && (cfg.InitialCluster != "" || cfg.JoinExisting) {
		return false, nil, nil, errors.New("embedded etcd: a cluster (initial cluster, join) needs peer URLs")
	}
	return hasTLS, client, peer, nil
}

// StartEmbedded starts etcd in this process and waits until it serves.
func StartEmbedded(cfg EmbedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded etcd: Dir is required")
	}
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(cfg.Dir, "etcd.sock")
	}
	if cfg.Name == "" {
		cfg.Name = "podnet"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.CompactionRetention == 0 {
		cfg.CompactionRetention = DefaultCompactionRetention
	}
	if cfg.CompactionInterval == 0 {
		cfg.CompactionInterval = DefaultCompactionInterval
	}
	if cfg.QuotaBytes == 0 {
		cfg.QuotaBytes = DefaultQuotaBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	hasTLS, clientTCP, peerTCP, err := cfg.check()
	if err != nil {
		return nil, err
	}

	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd dir: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd dir: %w", err)
	}
	if err := privsock.PrepareDir(cfg.Socket); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	// A socket file left by a killed etcd would make the listen fail;
	// one that still answers belongs to a running etcd, which we must
	// not cut off (another daemon's embedded etcd, say).
	if c, err := net.DialTimeout("unix", cfg.Socket, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("embedded etcd: %s is in use by a running etcd (another podnet daemon's?); give this one --etcd-socket or --datastore", cfg.Socket)
	}
	os.Remove(cfg.Socket)
	peerSock := filepath.Join(cfg.Dir, "etcd-peer.sock")
	os.Remove(peerSock)

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = filepath.Join(cfg.Dir, "data")
	log := cfg.Logger.With("component", "etcd")
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newEtcdLogger(log, closing))
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.QuotaBackendBytes = cfg.QuotaBytes
	// etcd's own auto-compaction stays off (its default): its revision
	// mode runs on a fixed 5-minute period; compactLoop does the same
	// with a period that can be set.
	if hasTLS {
		info := transport.TLSInfo{
			CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile,
			ClientCertAuth: true,
		}
		ec.ClientTLSInfo, ec.PeerTLSInfo = info, info
		ec.TlsMinVersion = "TLS1.3"
	}
	clientURLs := append([]url.URL{{Scheme: "unix", Path: cfg.Socket}}, clientTCP...)
	ec.ListenClientUrls, ec.AdvertiseClientUrls = clientURLs, clientURLs
	peer := peerTCP
	if len(peer) == 0 {
		peer = []url.URL{{Scheme: "unix", Path: peerSock}}
	}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = peer, peer
	ec.InitialCluster = cfg.InitialCluster
	if ec.InitialCluster == "" {
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	}
	ec.InitialClusterToken = "podnet"
	if cfg.JoinExisting {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
	}
	// The listeners exist now; the directory kept others out until here.
	for _, s := range []string{cfg.Socket, peerSock} {
		if err := privsock.Restrict(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			e.Close()
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(cfg.ReadyTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after %s", cfg.Dir, cfg.ReadyTimeout)
	}
	eps := make([]string, len(clientURLs))
	for i, u := range clientURLs {
		eps[i] = u.String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	em := &Embedded{e: e, log: log, endpoints: eps, stop: cancel, closing: closing}
	em.done.Add(2)
	go em.watchErrors(ctx)
	go em.compactLoop(ctx, cfg.CompactionRetention, cfg.CompactionInterval)
	return em, nil
}

// watchErrors logs what etcd reports after start (a listener that
// failed, the server stopping by itself): without it they go unseen.
func (e *Embedded) watchErrors(ctx context.Context) {
	defer e.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-e.e.Err():
			if err != nil {
				e.log.Error("embedded etcd failed", "err", err)
			}
		case <-e.e.Server.StopNotify():
			if ctx.Err() == nil {
				e.log.Error("embedded etcd stopped by itself")
			}
			return
		}
	}
}

// compactLoop discards history older than retention revisions every
// interval. Only the leader compacts: the request goes through raft to
// every member, so one is enough.
func (e *Embedded) compactLoop(ctx context.Context, retention int64, interval time.Duration) {
	defer e.done.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var done int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := e.e.Server
		if s.Leader() != s.MemberID() {
			continue
		}
		rev := s.KV().Rev() - retention
		if rev <= done {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, interval)
		_, err := s.Compact(cctx, &pb.CompactionRequest{Revision: rev})
		cancel()
		switch {
		case err == nil || errors.Is(err, mvcc.ErrCompacted):
			done = rev
			e.log.Debug("compacted", "revision", rev)
		case ctx.Err() == nil:
			e.log.Warn("compaction failed", "revision", rev, "err", err)
		}
	}
}

// Endpoints are the client URLs to give Open; the unix socket first.
func (e *Embedded) Endpoints() []string { return e.endpoints }

// SocketEndpoint is the unix socket's client URL.
func (e *Embedded) SocketEndpoint() string { return e.endpoints[0] }

// Close stops etcd. Close clients and watches first, or etcd waits for
// them (seconds). Safe to call more than once: embed's own Close is not.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.stop()
		e.done.Wait()
		e.e.Close()
	})
}
