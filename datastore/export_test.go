package datastore

import (
	"context"
	"log/slog"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// GetAt reads name as it was at revision rev.
func (s *Store) GetAt(ctx context.Context, c Collection, name string, rev int64) (KV, error) {
	r, err := s.cli.Get(ctx, c.key(name), clientv3.WithRev(rev))
	if err != nil {
		return KV{}, err
	}
	if len(r.Kvs) == 0 {
		return KV{}, ErrNotFound
	}
	return KV{Name: name, Value: r.Kvs[0].Value, Revision: r.Kvs[0].ModRevision}, nil
}

// LogFatalForTest logs msg at zap's fatal level through the etcd bridge,
// as etcd does before it gives up; zap then exits the process.
func LogFatalForTest(l *slog.Logger, msg string) {
	newEtcdLogger(l.With("component", "etcd"), new(atomic.Bool)).With(zap.String("member", "m1")).Fatal(msg)
}
