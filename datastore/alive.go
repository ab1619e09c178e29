package datastore

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// aliveTTL is how long (seconds) a node counts as alive after its daemon
// stops renewing: long enough to ride out a short datastore hiccup, short
// enough for `ipam check` to notice a dead daemon soon.
const aliveTTL = 15

func aliveKey(node string) string { return Root + "/nodes-alive/" + node }

// KeepAlive marks node's daemon as running for as long as ctx lives: a key
// under an etcd lease that the client renews. When the daemon dies the
// lease expires and the key goes. The returned channel is closed when
// the lease is lost (etcd did not answer for its whole TTL, or it
// expired) or ctx ends: the caller then grants a new one.
func (s *Store) KeepAlive(ctx context.Context, node string) (lost <-chan struct{}, err error) {
	lease, err := s.cli.Grant(ctx, aliveTTL)
	if err != nil {
		return nil, fmt.Errorf("alive lease for %s: %w", node, err)
	}
	if _, err := s.cli.Put(ctx, aliveKey(node), "1", clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("alive key for %s: %w", node, err)
	}
	ch, err := s.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("keep %s alive: %w", node, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range ch { // drained until ctx ends or the lease is lost
		}
	}()
	return done, nil
}

// AliveNodes lists the nodes whose daemons are running.
func (s *Store) AliveNodes(ctx context.Context) (map[string]bool, error) {
	p := Root + "/nodes-alive/"
	r, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list alive nodes: %w", err)
	}
	out := map[string]bool{}
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), p)] = true
	}
	return out, nil
}
