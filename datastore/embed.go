package datastore

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EmbedConfig configures an embedded single-member etcd.
type EmbedConfig struct {
	// Dir holds etcd's data (and, by default, its sockets). Required.
	Dir string
	// Socket is the client unix socket; "" means <Dir>/etcd.sock.
	Socket string
	// ListenClientURLs are extra client URLs, e.g. http://10.0.0.1:2379 so
	// that other machines can use this etcd. nil: the socket only.
	ListenClientURLs []string
	// ReadyTimeout bounds start-up; 0 means 30s.
	ReadyTimeout time.Duration
	// UnsafeNoFsync skips fsync: for tests only.
	UnsafeNoFsync bool
}

// Embedded is a running embedded etcd.
type Embedded struct {
	e         *embed.Etcd
	endpoints []string
	closeOnce sync.Once
}

// StartEmbedded starts etcd in this process and waits until it serves.
func StartEmbedded(cfg EmbedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded etcd: Dir is required")
	}
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(cfg.Dir, "etcd.sock")
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd dir: %w", err)
	}
	// A socket file left by a killed etcd would make the listen fail.
	os.Remove(cfg.Socket)
	peerSock := filepath.Join(cfg.Dir, "etcd-peer.sock")
	os.Remove(peerSock)

	ec := embed.NewConfig()
	ec.Name = "podnet"
	ec.Dir = filepath.Join(cfg.Dir, "data")
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	clientURLs := []url.URL{{Scheme: "unix", Path: cfg.Socket}}
	for _, s := range cfg.ListenClientURLs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd client URL %q: %w", s, err)
		}
		clientURLs = append(clientURLs, *u)
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = clientURLs, clientURLs
	peer := []url.URL{{Scheme: "unix", Path: peerSock}}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = peer, peer
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
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
	return &Embedded{e: e, endpoints: eps}, nil
}

// Endpoints are the client URLs to give Open; the unix socket first.
func (e *Embedded) Endpoints() []string { return e.endpoints }

// Close stops etcd. Close clients and watches first, or etcd waits for
// them (seconds). Safe to call more than once: embed's own Close is not.
func (e *Embedded) Close() {
	e.closeOnce.Do(e.e.Close)
}
