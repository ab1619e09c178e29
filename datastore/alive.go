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
// lease expires and the key goes.
func (s *Store) KeepAlive(ctx context.Context, node string) error {
	lease, err := s.cli.Grant(ctx, aliveTTL)
	if err != nil {
		return fmt.Errorf("alive lease for %s: %w", node, err)
	}
	if _, err := s.cli.Put(ctx, aliveKey(node), "1", clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("alive key for %s: %w", node, err)
	}
	ch, err := s.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep %s alive: %w", node, err)
	}
	go func() {
		for range ch { // drained until ctx ends or the lease is lost
		}
	}()
	return nil
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
