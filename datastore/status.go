package datastore

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// MemberStatus is what one etcd member says of itself.
type MemberStatus struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	ClientURLs []string `json:"clientURLs"`
	// Endpoint is the client URL the status was asked at.
	Endpoint string `json:"endpoint,omitempty"`
	Leader   bool   `json:"leader"`
	Version  string `json:"version,omitempty"`
	// Revision is the member's store revision; it lags the leader's on
	// a member that is catching up.
	Revision int64 `json:"revision,omitempty"`
	// DBSize is the database file's size; DBSizeInUse what of it holds
	// data (the rest is free pages left by compaction).
	DBSize      int64 `json:"dbSizeBytes,omitempty"`
	DBSizeInUse int64 `json:"dbSizeInUseBytes,omitempty"`
	// Error says why the member did not answer ("" when it did).
	Error string `json:"error,omitempty"`
}

// memberStatusTimeout bounds the question to one member, so that a dead
// member costs a line in the answer and not the whole answer.
const memberStatusTimeout = 2 * time.Second

// Members lists the cluster's members and asks each for its status at
// one of its client URLs of the kind this Store uses (unix, http or
// https).
func (s *Store) Members(ctx context.Context) ([]MemberStatus, error) {
	ml, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	scheme, _, _ := strings.Cut(s.endpoints[0], "://")
	var out []MemberStatus
	for _, m := range ml.Members {
		ms := MemberStatus{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), ClientURLs: m.ClientURLs}
		for _, u := range m.ClientURLs {
			if strings.HasPrefix(u, scheme+"://") {
				ms.Endpoint = u
				break
			}
		}
		switch {
		case len(m.ClientURLs) == 0:
			ms.Error = "not started yet"
		case ms.Endpoint == "":
			ms.Error = "no " + scheme + ":// client URL"
		default:
			sctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
			r, err := s.cli.Status(sctx, ms.Endpoint)
			cancel()
			if err != nil {
				ms.Error = err.Error()
				break
			}
			ms.Leader = r.Leader == m.ID
			ms.Version, ms.Revision = r.Version, r.Header.Revision
			ms.DBSize, ms.DBSizeInUse = r.DbSize, r.DbSizeInUse
		}
		out = append(out, ms)
	}
	return out, nil
}
