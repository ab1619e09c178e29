// Package datastore is podnet's only door to etcd v3: typed collections of
// JSON objects with compare-and-swap on etcd revisions, watches, and an
// embedded etcd server for one machine and for labs. It is the only
// package that knows the key layout (keys.go).
package datastore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Root is the prefix of every podnet key.
const Root = "/podnet"

// Errors a caller can test with errors.Is.
var (
	// ErrNotFound: no object by that name.
	ErrNotFound = errors.New("resource does not exist")
	// ErrExists: Create found the object already there.
	ErrExists = errors.New("resource already exists")
	// ErrConflict: the object changed since the revision the caller read;
	// read it again and retry, or give up.
	ErrConflict = errors.New("update conflict")
	// ErrStale: a write's Unchanged condition failed; read again and
	// retry, or give up.
	ErrStale = errors.New("changed since read")
)

// Config says how to reach etcd.
type Config struct {
	// Endpoints of the etcd cluster, e.g. http://10.0.0.1:2379 or
	// unix:///run/podnet/etcd.sock. Required.
	Endpoints []string
	// CAFile, CertFile, KeyFile: the CA that signed the servers'
	// certificates, and this client's certificate and key. https://
	// endpoints need all three (podnet's etcd asks clients for a
	// certificate). unix:// endpoints ignore them: the socket's file mode
	// is their access control, and they speak plain text.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds connecting; 0 means 5s.
	DialTimeout time.Duration
	// Dialer, if set, makes the TCP connections (tests use it to reach
	// etcd in another network namespace).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// tlsConfig checks that the endpoints agree on one transport (etcd's
// client uses the first endpoint's for all) and loads the TLS files when
// they are used.
func (cfg Config) tlsConfig() (*tls.Config, error) {
	scheme := func(ep string) string {
		s, _, _ := strings.Cut(ep, "://")
		return s
	}
	first := scheme(cfg.Endpoints[0])
	for _, ep := range cfg.Endpoints {
		switch s := scheme(ep); {
		case s != "unix" && s != "http" && s != "https":
			return nil, fmt.Errorf("datastore endpoint %q: want https://, http:// or unix://", ep)
		case s != first:
			return nil, fmt.Errorf("datastore endpoints %s mix %s:// and %s://: use one kind", strings.Join(cfg.Endpoints, ","), first, s)
		}
	}
	files := cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != ""
	switch first {
	case "unix":
		return nil, nil
	case "http":
		if files {
			return nil, fmt.Errorf("datastore endpoint %s is plain http but TLS files are configured: use https://", cfg.Endpoints[0])
		}
		return nil, nil
	}
	if cfg.CAFile == "" || cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, fmt.Errorf("datastore endpoint %s is https: caFile, certFile and keyFile are all required (etcd asks for a client certificate)", cfg.Endpoints[0])
	}
	info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
	t, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("datastore TLS: %w", err)
	}
	return t, nil
}

// Store is a connection to etcd.
type Store struct {
	cli       *clientv3.Client
	endpoints []string
}

// Open connects to etcd and checks that it answers, so that an unreachable
// datastore is reported here, naming the endpoints, and not as a timeout
// later.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s, err := Dial(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := s.Ping(pctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// keepAliveTime is how long a connection to etcd may be silent before
// the client pings it; keepAliveTimeout how long it waits for the
// answer before it gives the connection up.
const (
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 5 * time.Second
)

// Dial makes a client for etcd without waiting for etcd to answer: the
// node daemon must start, and forward, while etcd is down. Calls then
// wait for etcd until their context ends; Ping says whether it answers.
// Only a configuration error (TLS files, endpoints) fails here.
func Dial(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("datastore: no etcd endpoints configured")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	ccfg := clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, TLS: tlsCfg,
		Logger: zap.NewNop(),
		// Ping a connection that carries calls (the daemon's watches
		// keep one): one that a partition cut without a word fails
		// its calls, which then go over a new one, within seconds
		// rather than after TCP's retransmissions (about 15 min).
		// etcd refuses pings more often than every 5 s.
		DialKeepAliveTime: keepAliveTime, DialKeepAliveTimeout: keepAliveTimeout,
	}
	// Reconnect within seconds of etcd's return: gRPC's default backoff
	// grows to two minutes, during which a daemon would wait for an
	// etcd that is back.
	ccfg.DialOptions = []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	})}
	if cfg.Dialer != nil {
		ccfg.DialOptions = append(ccfg.DialOptions, grpc.WithContextDialer(cfg.Dialer))
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return &Store{cli: cli, endpoints: cfg.Endpoints}, nil
}

// Ping reads one key to see whether etcd answers before ctx ends.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.cli.Get(ctx, Root+"/ping"); err != nil {
		return fmt.Errorf("etcd at %s is unreachable: %w", strings.Join(s.endpoints, ","), err)
	}
	return nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.cli.Close() }

// Endpoints returns the etcd endpoints in use.
func (s *Store) Endpoints() []string { return s.endpoints }

// KV is one stored object.
type KV struct {
	// Name is the object's name within its collection.
	Name  string
	Value []byte
	// Revision is etcd's ModRevision of the key: pass it to Update or
	// Delete to make them conditional. It is also the resourceVersion.
	Revision int64
}

// Collection is a set of objects of one kind under one key prefix.
type Collection struct {
	s      *Store
	prefix string // ends in "/"
	// encode/decode map names to key segments (a CIDR's "/" is stored as
	// "-", as Calico does).
	encode, decode func(string) string
}

func identity(s string) string { return s }

func (c Collection) key(name string) string { return c.prefix + c.encode(name) }

// Get reads one object.
func (c Collection) Get(ctx context.Context, name string) (KV, error) {
	r, err := c.s.cli.Get(ctx, c.key(name))
	if err != nil {
		return KV{}, fmt.Errorf("get %s: %w", c.key(name), err)
	}
	if len(r.Kvs) == 0 {
		return KV{}, fmt.Errorf("%w: %s", ErrNotFound, c.key(name))
	}
	return KV{Name: name, Value: r.Kvs[0].Value, Revision: r.Kvs[0].ModRevision}, nil
}

// List reads every object of the collection whose name starts with
// namePrefix ("" for all), sorted by key, and the store revision they were
// read at.
func (c Collection) List(ctx context.Context, namePrefix string) ([]KV, int64, error) {
	p := c.prefix + c.encode(namePrefix)
	r, err := c.s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", p, err)
	}
	out := make([]KV, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		out = append(out, KV{Name: c.decode(strings.TrimPrefix(string(kv.Key), c.prefix)), Value: kv.Value, Revision: kv.ModRevision})
	}
	return out, r.Header.Revision, nil
}

// Create stores a new object; ErrExists if the name is taken.
func (c Collection) Create(ctx context.Context, name string, value []byte) (int64, error) {
	k := c.key(name)
	r, err := c.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(value))).Commit()
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", k, err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("%w: %s", ErrExists, k)
	}
	return r.Header.Revision, nil
}

// Unchanged is a condition on a write: no object of collection C whose
// name starts with NamePrefix was created or changed after store revision
// Since (the revision a read of them returned). A write that depends on
// what it read there (pools must not overlap; a pool is deleted only
// while none of its blocks holds an address) carries it, and fails with
// ErrStale when the read is out of date. Objects deleted since do not
// count.
type Unchanged struct {
	C          Collection
	NamePrefix string
	Since      int64
}

func (u Unchanged) cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(u.C.prefix+u.C.encode(u.NamePrefix)), "<", u.Since+1).WithPrefix()
}

// Revision returns the store's current revision: a read taken after it
// sees at least what was written up to it.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	r, err := s.cli.Get(ctx, Root+"/", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return r.Header.Revision, nil
}

// CreateIf is Create on condition u: ErrStale when it does not hold.
func (c Collection) CreateIf(ctx context.Context, name string, value []byte, u Unchanged) (int64, error) {
	k := c.key(name)
	r, err := c.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", 0), u.cmp()).
		Then(clientv3.OpPut(k, string(value))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", k, err)
	}
	if !r.Succeeded {
		if len(r.Responses) > 0 && len(r.Responses[0].GetResponseRange().Kvs) > 0 {
			return 0, fmt.Errorf("%w: %s", ErrExists, k)
		}
		return 0, fmt.Errorf("%w: %s: %s%s changed after revision %d", ErrStale, k, u.C.prefix, u.C.encode(u.NamePrefix), u.Since)
	}
	return r.Header.Revision, nil
}

// Update replaces an object if its revision is still rev; ErrConflict if
// it changed, ErrNotFound if it is gone.
func (c Collection) Update(ctx context.Context, name string, value []byte, rev int64) (int64, error) {
	k := c.key(name)
	if rev <= 0 {
		return 0, fmt.Errorf("update %s: a revision is required", k)
	}
	r, err := c.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpPut(k, string(value))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", k, err)
	}
	if !r.Succeeded {
		if len(r.Responses) > 0 && len(r.Responses[0].GetResponseRange().Kvs) == 0 {
			return 0, fmt.Errorf("%w: %s", ErrNotFound, k)
		}
		return 0, fmt.Errorf("%w: %s", ErrConflict, k)
	}
	return r.Header.Revision, nil
}

// Delete removes an object if its revision is still rev (rev 0: whatever
// it is). ErrNotFound if it is not there, ErrConflict if it changed.
func (c Collection) Delete(ctx context.Context, name string, rev int64) error {
	return c.delete(ctx, name, rev, nil)
}

// DeleteIf is Delete on condition u as well: ErrStale when the object is
// as given but u does not hold.
func (c Collection) DeleteIf(ctx context.Context, name string, rev int64, u Unchanged) error {
	return c.delete(ctx, name, rev, &u)
}

func (c Collection) delete(ctx context.Context, name string, rev int64, u *Unchanged) error {
	k := c.key(name)
	cmp := clientv3.Compare(clientv3.ModRevision(k), ">", 0)
	if rev > 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(k), "=", rev)
	}
	cmps := []clientv3.Cmp{cmp}
	if u != nil {
		cmps = append(cmps, u.cmp())
	}
	r, err := c.s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpDelete(k)).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	if !r.Succeeded {
		kvs := r.Responses[0].GetResponseRange().Kvs
		switch {
		case len(kvs) == 0:
			return fmt.Errorf("%w: %s", ErrNotFound, k)
		case u != nil && (rev <= 0 || kvs[0].ModRevision == rev):
			return fmt.Errorf("%w: %s: %s%s changed after revision %d", ErrStale, k, u.C.prefix, u.C.encode(u.NamePrefix), u.Since)
		}
		return fmt.Errorf("%w: %s", ErrConflict, k)
	}
	return nil
}

// Event is one change seen by Watch.
type Event struct {
	Name     string
	Value    []byte // nil when deleted
	Deleted  bool
	Revision int64
}

// Watch streams changes to the collection after revision rev (0: from
// now) until ctx is done; the channel is closed then. Watch restarts after
// a compaction by sending nothing it cannot vouch for: the caller should
// re-List when the channel closes before ctx is done.
func (c Collection) Watch(ctx context.Context, rev int64) <-chan []Event {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wc := c.s.cli.Watch(clientv3.WithRequireLeader(ctx), c.prefix, opts...)
	out := make(chan []Event, 16)
	go func() {
		defer close(out)
		for resp := range wc {
			if resp.Err() != nil {
				return
			}
			evs := make([]Event, 0, len(resp.Events))
			for _, e := range resp.Events {
				ev := Event{Name: c.decode(strings.TrimPrefix(string(e.Kv.Key), c.prefix)), Revision: e.Kv.ModRevision}
				if e.Type == clientv3.EventTypeDelete {
					ev.Deleted = true
				} else {
					ev.Value = e.Kv.Value
				}
				evs = append(evs, ev)
			}
			select {
			case out <- evs:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// Unreachable says whether err means the datastore did not answer in
// time (the call's deadline passed, or etcd was unavailable), as opposed
// to an answer that refused the request: the same call may succeed
// later, so an API answers 503 and a CNI runtime tries again.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch status.Code(e) {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}
